"""Gopher's repetition and quality rules (Rae et al. 2021), with datatrove's rule names, order and arithmetic.

Both stages decide exactly as datatrove's ``GopherRepetitionFilter`` and ``GopherQualityFilter``: the same
measurements, compared the same way, in the same order, and the first rule that fails names the drop. They
are faster because they split words once per document with a cached tokenizer (:mod:`filters.text`), count
repeated lines and paragraphs with sets, and measure word n-grams on hashes (:mod:`filters.ngrams`).

Each filter declares its rules once (:class:`filters.base.Rule`) and yields its measurements lazily in rule
order: a decision stops at the first failing rule (as datatrove does); in a pipeline, where the report wants
every signal, each text is measured once to the end and decided from that (``filter_with_signals``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from filters.base import Drop, MeasuredFilter, Measurements, Rule, register_filter
from filters.config import GopherQualityConfig, GopherRepetitionConfig
from filters.ngrams import WordNgrams
from filters.text import GOPHER_STOP_WORDS, LINE_SPLIT, PARAGRAPH_SPLIT, PUNCTUATION_SET, duplicates, word_splitter


@register_filter("gopher_repetition")
@dataclass
class GopherRepetitionStage(MeasuredFilter):
    """Drops documents made of repeated lines, paragraphs or word n-grams.

    Rules, in order: ``empty``, then the declared ones (``top_{n}_gram`` and ``duplicated_{n}_n_grams`` once per
    configured n). Signals: paragraphs are split at blank lines; a ``*_char_frac`` is characters in repeated
    paragraphs/lines over characters; ``top_{n}_gram_frac`` is the most frequent word n-gram's characters times
    its count over characters; ``dup_{n}_gram_frac`` is characters in word n-grams repeating an earlier one.
    """

    config: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    rules: ClassVar[tuple[Rule, ...]] = (
        Rule("dup_para_frac", "dup_para_frac", ">", "dup_para_frac"),
        Rule("dup_para_char_frac", "dup_para_char_frac", ">", "dup_para_char_frac"),
        Rule("dup_line_frac", "dup_line_frac", ">", "dup_line_frac"),
        Rule("dup_line_char_frac", "dup_line_char_frac", ">", "dup_line_char_frac"),
        Rule("top_{n}_gram", "top_{n}_gram_frac", ">", "top_n_grams", off=()),
        Rule("duplicated_{n}_n_grams", "dup_{n}_gram_frac", ">", "dup_n_grams", off=()),
    )

    def measure(self, text: str) -> Measurements:
        """datatrove's measurements in datatrove's order; an empty text is ``empty``."""
        cfg = self.config
        if not text:
            yield Drop("empty")
            return
        n_chars = len(text)
        paragraphs = PARAGRAPH_SPLIT.split(text.strip())
        repeated, repeated_chars = duplicates(paragraphs)
        yield "dup_para_frac", repeated / len(paragraphs)
        yield "dup_para_char_frac", repeated_chars / n_chars
        lines = LINE_SPLIT.split(text)
        repeated, repeated_chars = duplicates(lines)
        yield "dup_line_frac", repeated / len(lines)
        yield "dup_line_char_frac", repeated_chars / n_chars
        words = word_splitter(cfg.language).split(text)
        ngrams = WordNgrams(words, [n for n, _ in cfg.top_n_grams], [n for n, _ in cfg.dup_n_grams])
        for n, _ in cfg.top_n_grams:
            top = ngrams.top_ngram_chars(n)
            if top is not None:
                yield f"top_{n}_gram_frac", top / n_chars
        for n, _ in cfg.dup_n_grams:
            yield f"dup_{n}_gram_frac", ngrams.duplicate_ngram_chars(n) / n_chars


_NON_SYMBOL = 1
_HAS_ALPHA = 2
WORD_FLAGS_CACHE_SIZE = 500_000


class _WordFlags(dict[str, int]):
    """Per word, whether it has a non-punctuation character and a letter; filled on first sight, bounded."""

    def __missing__(self, word: str) -> int:
        if len(self) >= WORD_FLAGS_CACHE_SIZE:
            self.clear()
        if word.isalpha():
            flags = _NON_SYMBOL | _HAS_ALPHA
        else:
            flags = (_NON_SYMBOL if not PUNCTUATION_SET.issuperset(word) else 0) | (
                _HAS_ALPHA if any(c.isalpha() for c in word) else 0
            )
        self[word] = flags
        return flags


_WORD_FLAGS = _WordFlags()


@register_filter("gopher_quality")
@dataclass
class GopherQualityStage(MeasuredFilter):
    """Drops documents too short or long, with odd word lengths, symbols, bullets, ellipses or no stop words.

    Rules in the declared order. ``gopher_words`` counts words with a character that is not punctuation, and
    the ratios are per word (``hash_word_ratio``: '#'; ``ellipsis_word_ratio``: '...' and '…'), per line
    (``bullet_lines_frac``: starting '•' or '-'; ``ellipsis_lines_frac``: ending '...' or '…'), or the share of
    words with a letter (``alpha_words_frac``). A text without any word is ``gopher_short_doc`` even with the
    length rule off (datatrove divides by zero there).
    """

    config: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    rules: ClassVar[tuple[Rule, ...]] = (
        Rule("gopher_short_doc", "gopher_words", "<", "min_doc_words"),
        Rule("gopher_long_doc", "gopher_words", ">", "max_doc_words"),
        Rule("gopher_below_avg_threshold", "mean_word_length", "<", "min_avg_word_length"),
        Rule("gopher_above_avg_threshold", "mean_word_length", ">", "max_avg_word_length"),
        Rule("gopher_too_many_hashes", "hash_word_ratio", ">", "max_symbol_word_ratio"),
        Rule("gopher_too_many_ellipsis", "ellipsis_word_ratio", ">", "max_symbol_word_ratio"),
        Rule("gopher_too_many_bullets", "bullet_lines_frac", ">", "max_bullet_lines_ratio"),
        Rule("gopher_too_many_end_ellipsis", "ellipsis_lines_frac", ">", "max_ellipsis_lines_ratio"),
        Rule("gopher_below_alpha_threshold", "alpha_words_frac", "<", "max_non_alpha_words_ratio"),
        Rule("gopher_enough_stop_words", "stop_words", "<", "min_stop_words"),
    )

    def measure(self, text: str) -> Measurements:
        """datatrove's measurements in datatrove's order."""
        cfg = self.config
        words = word_splitter(cfg.language).split(text)
        n_words = len(words)
        if n_words == 0:
            yield "gopher_words", 0.0
            yield Drop("gopher_short_doc")
            return
        flags = np.fromiter(map(_WORD_FLAGS.__getitem__, words), dtype=np.uint8, count=n_words)
        non_symbol = (flags & _NON_SYMBOL).astype(bool)
        n_non_symbol = int(non_symbol.sum())
        yield "gopher_words", n_non_symbol

        if n_non_symbol:
            lengths = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
            yield "mean_word_length", int(lengths[non_symbol].sum()) / n_non_symbol
        else:
            yield "mean_word_length", math.nan  # numpy's mean of nothing: every comparison is False

        yield "hash_word_ratio", text.count("#") / n_words
        yield "ellipsis_word_ratio", (text.count("...") + text.count("\u2026")) / n_words

        lines = text.splitlines()
        yield "bullet_lines_frac", sum(1 for s in lines if s.lstrip().startswith(("\u2022", "-"))) / len(lines)
        yield "ellipsis_lines_frac", sum(1 for s in lines if s.rstrip().endswith(("...", "\u2026"))) / len(lines)

        yield "alpha_words_frac", int(np.count_nonzero(flags & _HAS_ALPHA)) / n_words
        stop_words = cfg.stop_words if cfg.stop_words is not None else GOPHER_STOP_WORDS
        yield "stop_words", len(set(stop_words).intersection(words))
