"""What the quality filters share: datatrove's word split, punctuation sets, stop words, line splits.

Word split. datatrove splits English words with spaCy's blank English tokenizer (``spacy.blank("en")``,
no model) and drops whitespace tokens. spaCy cuts the text at whitespace first and tokenizes every
whitespace-free chunk on its own (its special-case matcher only rewrites tokens of two chunks when the rule's
own text holds that whitespace, and the English rules that hold whitespace are single whitespace characters,
whose tokens datatrove drops). So we split at whitespace with ``str.split`` (the same ``isspace`` characters
spaCy uses) and remember each chunk's tokens in a per-process cache. Chunks of the commonest shapes (a word,
maybe with a bracket, quote or punctuation mark attached) are tokenized by a few rules that give spaCy's
answer; the other new chunks of a document go to spaCy in one call, one chunk per line. The result is the
same list of words as datatrove's (the tests check it word for word on every real page), at a fraction of
the cost: on web text most chunks repeat.

The cache is per process and bounded (:data:`CHUNK_CACHE_SIZE` chunks, cleared when full), so a stage holds
no state and pickles small.
"""

from __future__ import annotations

import re
import sys
import threading
import unicodedata
from collections.abc import Sequence
from itertools import chain
from typing import Any

PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c\u300a\u201e';"
    "\u2019{|\u2236\u00b4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\u00ab\u3009,><\u300b)?\uff09\u3002\u2026@_."
    '"}\u25ba\u00bb' + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))
)
"""datatrove's ``PUNCTUATION``: ASCII and CJK punctuation plus the C0/C1 control characters (not tab, newline)."""

TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa"
    "\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c"
    "\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f"
    "\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57"
    "\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0"
    "\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239"
    "\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc"
    "\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c"
    "\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38"
    "\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
"""datatrove's ``TERMINAL_PUNCTUATION``: characters that end a sentence in any script (FineWeb's line rule)."""

PUNCTUATION_SET = frozenset(PUNCTUATION) | TERMINAL_PUNCTUATION
"""A word made only of these characters is a "symbol" to the Gopher quality rules."""

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
"""Gopher's English stop words: a document needs at least two of them."""

PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
LINE_SPLIT = re.compile("\n+")
"""Gopher repetition's paragraph and line separators (datatrove's regexes)."""

_LEADS = frozenset('("')
_TRAILS = frozenset(",;:!?)\"'")
_BEFORE_PERIOD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

CHUNK_CACHE_SIZE = 300_000
"""Whitespace chunks whose tokens a process remembers (about 250 bytes each: 75 MB at most)."""

SUPPORTED_LANGUAGES = ("en",)


def duplicates(items: Sequence[str]) -> tuple[int, int]:
    """datatrove's ``find_duplicates``: (repeated items, their characters), each repeat after the first counted.

    Computed with sets in C instead of a Python loop: every occurrence minus one per distinct item.
    """
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


class WordSplitter:
    """spaCy's tokenizer behind a chunk cache; one per language per process (see :func:`word_splitter`)."""

    def __init__(self, language: str = "en", cache_size: int = CHUNK_CACHE_SIZE) -> None:
        if language not in SUPPORTED_LANGUAGES:
            raise ValueError(f"word splitting supports {SUPPORTED_LANGUAGES}, not {language!r}")
        spacy = import_spacy_without_torch()
        self.language = language
        self.cache_size = cache_size
        self._tokenizer = spacy.blank(language).tokenizer
        self._specials = frozenset(self._tokenizer.rules)
        self._cache: dict[str, tuple[str, ...]] = {}

    def split(self, text: str) -> list[str]:
        """The words of ``text`` exactly as datatrove's ``split_into_words`` returns them."""
        chunks = text.split()
        try:
            return list(chain.from_iterable(map(self._lookup(chunks).__getitem__, chunks)))
        except KeyError:  # another thread emptied the cache meanwhile
            return list(chain.from_iterable(map(self.tokens, chunks)))

    def tokens(self, chunk: str) -> tuple[str, ...]:
        """The tokens of one whitespace-free chunk."""
        tokens = self._cache.get(chunk)
        if tokens is None:
            tokens = self._simple_tokens(chunk) or self._tokenize_one(chunk)
            self._cache[chunk] = tokens
        return tokens

    def count(self, text: str) -> int:
        """``len(split(text))`` without building the list."""
        chunks = text.split()
        try:
            return sum(map(len, map(self._lookup(chunks).__getitem__, chunks)))
        except KeyError:
            return sum(map(len, map(self.tokens, chunks)))

    def _lookup(self, chunks: list[str]) -> dict[str, tuple[str, ...]]:
        """The cache, holding every chunk of ``chunks``."""
        cache = self._cache
        missing = set(chunks).difference(cache)
        if missing:
            if len(cache) + len(missing) > self.cache_size:
                cache.clear()
            self._fill(missing)
        return cache

    def _fill(self, missing: set[str]) -> None:
        cache = self._cache
        hard: list[str] = []
        for chunk in missing:
            tokens = self._simple_tokens(chunk)
            if tokens is None:
                hard.append(chunk)
            else:
                cache[chunk] = tokens
        if hard:
            self._tokenize(hard)

    def _simple_tokens(self, chunk: str) -> tuple[str, ...] | None:
        """spaCy's tokens of the commonest chunk shapes, without spaCy; None for any other chunk.

        A word of letters (or ASCII digits), optionally after "(" or a double quote, optionally before one
        of ``,;:!?)"'`` or before a "." that follows a lowercase ASCII letter or a digit: spaCy cuts these
        characters off as their own tokens whatever the script (they are unconditional prefixes and suffixes;
        "." only splits after a lowercase letter or digit). Special cases ("cannot", "Mr.", "(:") are left to
        spaCy: neither the chunk nor what remains after each cut may be one.
        """
        specials = self._specials
        if chunk.isalpha():
            return None if chunk in specials else (chunk,)
        core = chunk
        lead = trail = ""
        if core[0] in _LEADS:
            lead, core = core[0], core[1:]
        if core and core[-1] in _TRAILS:
            trail, core = core[-1], core[:-1]
        elif len(core) >= 2 and core[-1] == "." and core[-2] in _BEFORE_PERIOD:
            trail, core = ".", core[:-1]
        if not core or not (core.isalpha() or (core.isdigit() and core.isascii())):
            return None
        if core in specials or chunk in specials or chunk[len(lead) :] in specials or core + trail in specials:
            return None
        if lead and (lead + core) in specials:
            return None
        if lead:
            return (lead, core, trail) if trail else (lead, core)
        return (core, trail) if trail else (core,)

    def _tokenize(self, chunks: list[str]) -> None:
        """Tokenize ``chunks`` in one spaCy call, one chunk per line, and cut the tokens back at the newlines.

        The newline between two chunks is a whitespace token of its own, so spaCy's special-case matcher cannot
        join tokens of neighbouring chunks: each chunk gets exactly the tokens it gets alone, whatever the order.
        """
        cache = self._cache
        try:
            doc = self._tokenizer("\n".join(chunks))
            texts = [token.text for token in doc]
        except Exception:  # spaCy failing on one odd chunk must not lose the others
            for chunk in chunks:
                cache[chunk] = self._tokenize_one(chunk)
            return
        parts: list[tuple[str, ...]] = []
        current: list[str] = []
        for text in texts:
            if text == "\n":
                parts.append(tuple(current))
                current = []
            else:
                current.append(text)
        parts.append(tuple(current))
        if len(parts) == len(chunks) and all(parts):
            cache.update(zip(chunks, parts, strict=True))
        else:  # never seen; keep the exact per-chunk path as a fallback
            for chunk in chunks:
                cache[chunk] = self._tokenize_one(chunk)

    def _tokenize_one(self, chunk: str) -> tuple[str, ...]:
        try:
            return tuple(t.text for t in self._tokenizer(chunk))
        except Exception:
            return (chunk,)


_SPLITTERS: dict[str, WordSplitter] = {}
_SPLITTERS_LOCK = threading.Lock()
_SPACY_IMPORT_LOCK = threading.Lock()


def import_spacy_without_torch() -> Any:
    """spaCy, imported without torch: its thinc imports torch when it is installed (about 180 MB more in every
    worker), though the blank tokenizer never uses it. While spaCy loads, ``import torch`` fails, which thinc
    handles; torch stays importable afterwards for whatever else needs it."""
    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    with _SPACY_IMPORT_LOCK:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
        try:
            import spacy
        except ImportError as e:  # pragma: no cover - spaCy is a dependency
            raise ImportError("the quality filters split words with spaCy; install spacy (no model needed)") from e
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    return spacy


def word_splitter(language: str = "en") -> WordSplitter:
    """The process's splitter for ``language``, created on first use."""
    splitter = _SPLITTERS.get(language)
    if splitter is None:
        with _SPLITTERS_LOCK:
            splitter = _SPLITTERS.get(language)
            if splitter is None:
                splitter = _SPLITTERS[language] = WordSplitter(language)
    return splitter


def clear_caches() -> None:
    """Forget every remembered chunk (benchmarks measure a cold process with it)."""
    for splitter in _SPLITTERS.values():
        splitter._cache.clear()


def split_words(text: str, language: str = "en") -> list[str]:
    """datatrove's ``split_into_words(text)`` for English, fast."""
    return word_splitter(language).split(text)


SENTENCE_END_CHARS = frozenset(
    "!.?\u0589\u061f\u06d4\u0700\u0701\u0702\u07f9\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735"
    "\u1736\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1c3b\u1c3c\u1c7e\u1c7f"
    "\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf"
    "\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61"
    "\U00010a56\U00010a57\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142"
    "\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c"
    "\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd"
    "\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7"
    "\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41"
    "\U00011c42\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U0001bc9f\U0001da88"
)
"""spaCy's ``Sentencizer.default_punct_chars``: a token made of one of these ends a sentence."""

_PIECES = re.compile(r"\S+|\s+")


def _is_punct(token: str) -> bool:
    """spaCy's ``is_punct`` lexeme attribute: every character is in a Unicode punctuation category."""
    return all(unicodedata.category(c).startswith("P") for c in token)


def count_sentences(text: str, language: str = "en") -> int:
    """How many parts datatrove's ``split_into_sentences`` cuts ``text`` into (spaCy's sentencizer), at least 1.

    spaCy's sentencizer starts a sentence at the first token after a sentence-end token (``.``, ``!``, ...)
    that is neither punctuation nor another sentence end. We replay that on our cached tokens, plus the
    whitespace tokens spaCy makes of every whitespace run except a single space after a token (they are not
    punctuation, so they can start a sentence). Texts without a sentence-end character are one sentence.
    """
    if SENTENCE_END_CHARS.isdisjoint(text):
        return 1
    splitter = word_splitter(language)
    sentences = 1
    seen_end = False
    for match in _PIECES.finditer(text):
        piece = match.group()
        if piece[0].isspace():
            if (piece != " " or match.start() == 0) and seen_end:
                sentences += 1
                seen_end = False
            continue
        for token in splitter.tokens(piece):
            if token in SENTENCE_END_CHARS:
                seen_end = True
            elif seen_end and not _is_punct(token):
                sentences += 1
                seen_end = False
    return sentences


_SENTENCIZERS: dict[str, Any] = {}


def split_sentences(text: str, language: str = "en") -> list[str]:
    """datatrove's ``split_into_sentences``: spaCy's sentencizer, cut at sentence ends (slow; whole texts only).

    Used only when C4 judges sentences instead of lines (``split_paragraph: false``, not FineWeb's setting).
    """
    nlp = _SENTENCIZERS.get(language)
    if nlp is None:
        nlp = import_spacy_without_torch().blank(language)
        nlp.add_pipe("sentencizer")
        _SENTENCIZERS[language] = nlp
    nlp.max_length = max(nlp.max_length, len(text) + 10)
    ends = [sentence.end_char for sentence in nlp(text).sents]
    return [text[a:b] for a, b in zip([0, *ends[:-1]], [*ends[:-1], len(text)], strict=True)]
