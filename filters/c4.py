"""C4's rules (Raffel et al. 2020) as datatrove's ``C4QualityFilter`` applies them: clean lines, then judge.

Line by line (after ``strip``): a line with a word longer than ``max_word_length`` goes; Wikipedia citations
are cut out; without terminal punctuation the line goes (off in FineWeb); a line of fewer than
``min_words_per_line`` words goes; "lorem ipsum" drops the document (``lorem_ipsum``); a line mentioning
"javascript" goes; a "{" drops the document (``curly_bracket``); a line about cookies or terms of use goes.
A document left with fewer than ``min_num_sentences`` sentences is dropped (``too_few_sentences``). A kept
document's text becomes its kept lines, joined by newlines: this stage rewrites ``text``.

Sentences are counted as datatrove counts them (spaCy's sentencizer on each kept line, see
:func:`filters.text.count_sentences`); every kept line holds at least one, so once enough lines are kept the
exact count no longer matters to the decision and is not computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from filters.base import Rule, TextFilter, register_filter, texts_of
from filters.config import C4Config
from filters.text import count_sentences, split_sentences
from pipeline.core.stage import with_drop_reasons

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class Cleaned(NamedTuple):
    """A document after C4: its new text (None when dropped), the rule that dropped it, and sentences kept."""

    text: str | None
    reason: str | None
    sentences: int


def clean(text: str, cfg: C4Config, exact_sentences: bool = False) -> Cleaned:
    """datatrove's ``C4QualityFilter.filter`` on one text; ``sentences`` is exact only with ``exact_sentences``."""
    lines = text.splitlines() if cfg.split_paragraph else split_sentences(text, cfg.language)
    count_each = cfg.min_num_sentences != -1
    num_sentences = 0
    kept: list[str] = []
    for line in lines:
        line = line.strip()
        words = line.split()
        too_long = cfg.max_word_length != -1 and len(line) > cfg.max_word_length  # else no word can be
        if too_long and any(len(word) > cfg.max_word_length for word in words):
            continue
        if cfg.remove_citations and "[" in line:
            line = CITATION.sub("", line)
        if cfg.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        if len(words) < cfg.min_words_per_line:
            continue
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return Cleaned(None, "lorem_ipsum", num_sentences)
        if cfg.filter_javascript and "javascript" in lower:
            continue
        if cfg.filter_curly_bracket and "{" in line:
            return Cleaned(None, "curly_bracket", num_sentences)
        if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
            continue
        if count_each:
            if not cfg.split_paragraph:
                num_sentences += 1
            elif exact_sentences or num_sentences < cfg.min_num_sentences:
                num_sentences += count_sentences(line, cfg.language)
            else:
                num_sentences += 1  # at least one; the decision is already made
        kept.append(line)
    if num_sentences < cfg.min_num_sentences:
        return Cleaned(None, "too_few_sentences", num_sentences)
    return Cleaned(("\n" if cfg.split_paragraph else " ").join(kept).strip(), None, num_sentences)


@register_filter("c4")
@dataclass
class C4Stage(TextFilter):
    """C4's line cleaning and document rules; rewrites ``text`` of kept rows, leaves dropped rows' text as it was.

    Rules: ``lorem_ipsum``, ``curly_bracket`` (switches, not thresholds: no histogram), ``too_few_sentences``.
    Signals: ``c4_sentences``, sentences left after line cleaning, and ``c4_removed_char_frac``, the share of
    characters line cleaning removed (both NaN when a document rule dropped the text first).
    """

    config: C4Config = field(default_factory=C4Config)
    rules: ClassVar[tuple[Rule, ...]] = (
        Rule("too_few_sentences", "c4_sentences", "<", "min_num_sentences", off=(-1,)),
    )
    extra_signals: ClassVar[tuple[str, ...]] = ("c4_removed_char_frac",)

    def __call__(self, table: pa.Table) -> pa.Table:
        texts = texts_of(table, self.name)
        results = [clean(text, self.config) for text in texts]
        column = table.column("text")
        originals = column.to_pylist()
        new_texts = [r.text if r.reason is None else original for r, original in zip(results, originals, strict=True)]
        table = table.set_column(table.column_names.index("text"), "text", pa.array(new_texts, column.type))
        return with_drop_reasons(table, [r.reason for r in results])

    def reason(self, text: str) -> str | None:
        return clean(text, self.config).reason

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        sentences = np.full(len(texts), np.nan, dtype=np.float32)
        removed = np.full(len(texts), np.nan, dtype=np.float32)
        for i, text in enumerate(texts):
            result = clean(text, self.config, exact_sentences=True)
            if result.reason in (None, "too_few_sentences"):
                sentences[i] = result.sentences
            if result.text is not None and text:
                removed[i] = 1 - len(result.text) / len(text)
        return {"c4_sentences": sentences, "c4_removed_char_frac": removed}
