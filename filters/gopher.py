"""Gopher's repetition and quality rules (Rae et al. 2021), with datatrove's rule names, order and arithmetic.

Both stages decide exactly as datatrove's ``GopherRepetitionFilter`` and ``GopherQualityFilter``: the same
measurements, compared the same way, in the same order, and the first rule that fails names the drop. They
are faster because they split words once per document with a cached tokenizer (:mod:`filters.text`), count
repeated lines and paragraphs with sets, and measure word n-grams on hashes (:mod:`filters.ngrams`).

Each measurement is yielded lazily in rule order: a decision stops at the first failing rule (as datatrove
does), :meth:`signals` runs them all for the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from filters.base import Measure, MeasuredFilter, Signal, Threshold, rule_on
from filters.config import GopherQualityConfig, GopherRepetitionConfig
from filters.ngrams import WordNgrams
from filters.text import GOPHER_STOP_WORDS, LINE_SPLIT, PARAGRAPH_SPLIT, PUNCTUATION_SET, duplicates, word_splitter


@dataclass
class GopherRepetitionStage(MeasuredFilter):
    """Drops documents made of repeated lines, paragraphs or word n-grams.

    Rules, in order: ``empty``, ``dup_para_frac``, ``dup_para_char_frac``, ``dup_line_frac``,
    ``dup_line_char_frac``, ``top_{n}_gram``, ``duplicated_{n}_n_grams``.
    """

    config: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    name: ClassVar[str] = "gopher_repetition"

    def signal_specs(self) -> tuple[Signal, ...]:
        cfg = self.config
        return (
            Signal("dup_para_frac", "paragraphs (split at blank lines) repeating an earlier one / paragraphs"),
            Signal("dup_para_char_frac", "characters in repeated paragraphs / characters"),
            Signal("dup_line_frac", "lines repeating an earlier line / lines"),
            Signal("dup_line_char_frac", "characters in repeated lines / characters"),
            *(
                Signal(f"top_{n}_gram_frac", f"characters of the most frequent word {n}-gram x its count / characters")
                for n, _ in cfg.top_n_grams
            ),
            *(
                Signal(f"dup_{n}_gram_frac", f"characters in word {n}-grams repeating an earlier one / characters")
                for n, _ in cfg.dup_n_grams
            ),
        )

    def thresholds(self) -> list[Threshold]:
        cfg = self.config
        rules = [
            ("dup_para_frac", "dup_para_frac", rule_on(cfg.dup_para_frac)),
            ("dup_para_char_frac", "dup_para_char_frac", rule_on(cfg.dup_para_char_frac)),
            ("dup_line_frac", "dup_line_frac", rule_on(cfg.dup_line_frac)),
            ("dup_line_char_frac", "dup_line_char_frac", rule_on(cfg.dup_line_char_frac)),
            *((f"top_{n}_gram", f"top_{n}_gram_frac", frac) for n, frac in cfg.top_n_grams),
            *((f"duplicated_{n}_n_grams", f"dup_{n}_gram_frac", frac) for n, frac in cfg.dup_n_grams),
        ]
        return [Threshold(rule, signal, ">", value) for rule, signal, value in rules if value is not None]

    def measures(self, text: str) -> Iterator[Measure]:
        """datatrove's measurements in datatrove's order; ``empty`` comes first for an empty text."""
        cfg = self.config
        if not text:
            yield Measure("empty", "chars", "<", 0.0, 1.0)
            return
        n_chars = len(text)
        paragraphs = PARAGRAPH_SPLIT.split(text.strip())
        repeated, repeated_chars = duplicates(paragraphs)
        yield Measure("dup_para_frac", "dup_para_frac", ">", repeated / len(paragraphs), rule_on(cfg.dup_para_frac))
        yield Measure(
            "dup_para_char_frac", "dup_para_char_frac", ">", repeated_chars / n_chars, rule_on(cfg.dup_para_char_frac)
        )
        lines = LINE_SPLIT.split(text)
        repeated, repeated_chars = duplicates(lines)
        yield Measure("dup_line_frac", "dup_line_frac", ">", repeated / len(lines), rule_on(cfg.dup_line_frac))
        yield Measure(
            "dup_line_char_frac", "dup_line_char_frac", ">", repeated_chars / n_chars, rule_on(cfg.dup_line_char_frac)
        )
        words = word_splitter(cfg.language).split(text)
        ngrams = WordNgrams(words, [n for n, _ in cfg.top_n_grams], [n for n, _ in cfg.dup_n_grams])
        for n, frac in cfg.top_n_grams:
            top = ngrams.top_ngram_chars(n)
            if top is not None:
                yield Measure(f"top_{n}_gram", f"top_{n}_gram_frac", ">", top / n_chars, frac)
        for n, frac in cfg.dup_n_grams:
            yield Measure(
                f"duplicated_{n}_n_grams", f"dup_{n}_gram_frac", ">", ngrams.duplicate_ngram_chars(n) / n_chars, frac
            )


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


@dataclass
class GopherQualityStage(MeasuredFilter):
    """Drops documents too short or long, with odd word lengths, symbols, bullets, ellipses or no stop words.

    Rules, in order: ``gopher_short_doc``, ``gopher_long_doc``, ``gopher_below_avg_threshold``,
    ``gopher_above_avg_threshold``, ``gopher_too_many_hashes``, ``gopher_too_many_ellipsis``,
    ``gopher_too_many_bullets``, ``gopher_too_many_end_ellipsis``, ``gopher_below_alpha_threshold``,
    ``gopher_enough_stop_words``. A text without any word is ``gopher_short_doc`` even with the length rule off
    (datatrove divides by zero there).
    """

    config: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    name: ClassVar[str] = "gopher_quality"
    SIGNALS: ClassVar[tuple[Signal, ...]] = (
        Signal("gopher_words", "words with a character that is not punctuation"),
        Signal("mean_word_length", "mean characters of those words"),
        Signal("hash_word_ratio", "'#' characters / words"),
        Signal("ellipsis_word_ratio", "'...' and '…' / words"),
        Signal("bullet_lines_frac", "lines starting with '•' or '-' / lines"),
        Signal("ellipsis_lines_frac", "lines ending with '...' or '…' / lines"),
        Signal("alpha_words_frac", "words with a letter / words"),
        Signal("stop_words", "distinct Gopher stop words present"),
    )

    def signal_specs(self) -> tuple[Signal, ...]:
        return self.SIGNALS

    def thresholds(self) -> list[Threshold]:
        cfg = self.config
        rules = [
            ("gopher_short_doc", "gopher_words", "<", rule_on(cfg.min_doc_words)),
            ("gopher_long_doc", "gopher_words", ">", rule_on(cfg.max_doc_words)),
            ("gopher_below_avg_threshold", "mean_word_length", "<", rule_on(cfg.min_avg_word_length)),
            ("gopher_above_avg_threshold", "mean_word_length", ">", rule_on(cfg.max_avg_word_length)),
            ("gopher_too_many_hashes", "hash_word_ratio", ">", rule_on(cfg.max_symbol_word_ratio)),
            ("gopher_too_many_ellipsis", "ellipsis_word_ratio", ">", rule_on(cfg.max_symbol_word_ratio)),
            ("gopher_too_many_bullets", "bullet_lines_frac", ">", rule_on(cfg.max_bullet_lines_ratio)),
            ("gopher_too_many_end_ellipsis", "ellipsis_lines_frac", ">", rule_on(cfg.max_ellipsis_lines_ratio)),
            ("gopher_below_alpha_threshold", "alpha_words_frac", "<", rule_on(cfg.max_non_alpha_words_ratio)),
            ("gopher_enough_stop_words", "stop_words", "<", rule_on(cfg.min_stop_words)),
        ]
        return [Threshold(rule, signal, op, value) for rule, signal, op, value in rules if value is not None]

    def measures(self, text: str) -> Iterator[Measure]:
        """datatrove's measurements in datatrove's order."""
        cfg = self.config
        words = word_splitter(cfg.language).split(text)
        n_words = len(words)
        if n_words == 0:
            yield Measure("gopher_short_doc", "gopher_words", "<", 0.0, math.inf)
            return
        flags = np.fromiter(map(_WORD_FLAGS.__getitem__, words), dtype=np.uint8, count=n_words)
        non_symbol = (flags & _NON_SYMBOL).astype(bool)
        n_non_symbol = int(non_symbol.sum())
        yield Measure("gopher_short_doc", "gopher_words", "<", n_non_symbol, rule_on(cfg.min_doc_words))
        yield Measure("gopher_long_doc", "gopher_words", ">", n_non_symbol, rule_on(cfg.max_doc_words))

        if n_non_symbol:
            lengths = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
            mean_length = int(lengths[non_symbol].sum()) / n_non_symbol
        else:
            mean_length = math.nan  # numpy's mean of nothing: every comparison is False
        low, high = rule_on(cfg.min_avg_word_length), rule_on(cfg.max_avg_word_length)
        yield Measure("gopher_below_avg_threshold", "mean_word_length", "<", mean_length, low)
        yield Measure("gopher_above_avg_threshold", "mean_word_length", ">", mean_length, high)

        ratio = rule_on(cfg.max_symbol_word_ratio)
        yield Measure("gopher_too_many_hashes", "hash_word_ratio", ">", text.count("#") / n_words, ratio)
        ellipses = (text.count("...") + text.count("\u2026")) / n_words
        yield Measure("gopher_too_many_ellipsis", "ellipsis_word_ratio", ">", ellipses, ratio)

        lines = text.splitlines()
        bullets = sum(1 for s in lines if s.lstrip().startswith(("\u2022", "-"))) / len(lines)
        yield Measure("gopher_too_many_bullets", "bullet_lines_frac", ">", bullets, rule_on(cfg.max_bullet_lines_ratio))
        end_ellipses = sum(1 for s in lines if s.rstrip().endswith(("...", "\u2026"))) / len(lines)
        yield Measure(
            "gopher_too_many_end_ellipsis",
            "ellipsis_lines_frac",
            ">",
            end_ellipses,
            rule_on(cfg.max_ellipsis_lines_ratio),
        )

        alpha = int(np.count_nonzero(flags & _HAS_ALPHA)) / n_words
        yield Measure(
            "gopher_below_alpha_threshold", "alpha_words_frac", "<", alpha, rule_on(cfg.max_non_alpha_words_ratio)
        )
        stop_words = cfg.stop_words if cfg.stop_words is not None else GOPHER_STOP_WORDS
        present = len(set(stop_words).intersection(words))
        yield Measure("gopher_enough_stop_words", "stop_words", "<", present, rule_on(cfg.min_stop_words))
