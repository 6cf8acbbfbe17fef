"""FineWeb's own quality rules (Penedo et al. 2024) as datatrove's ``FineWebQualityFilter`` applies them.

Over the non-blank lines (split at ``\\n``, not stripped): too few lines end in terminal punctuation
(``line_punct_ratio``), too many lines are short (``short_line_ratio``), too many characters sit in repeated
lines (``char_dup_ratio``), too many newlines per word (``list_ratio``). No line at all is ``empty``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from filters.base import Measure, MeasuredFilter, Signal, Threshold
from filters.config import FineWebQualityConfig
from filters.text import TERMINAL_PUNCTUATION, duplicates, word_splitter

_DEFAULT_STOP_CHARS = tuple(sorted(TERMINAL_PUNCTUATION))


@dataclass
class FineWebQualityStage(MeasuredFilter):
    """Drops list-like, boilerplate-like pages: rules ``empty``, ``line_punct_ratio``, ``short_line_ratio``,
    ``char_dup_ratio``, ``list_ratio``, in that order."""

    config: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)
    name: ClassVar[str] = "fineweb_quality"
    SIGNALS: ClassVar[tuple[Signal, ...]] = (
        Signal("line_punct_ratio", "non-blank lines ending in terminal punctuation / non-blank lines"),
        Signal("short_line_ratio", "non-blank lines of at most short_line_length characters / non-blank lines"),
        Signal("char_dup_ratio", "characters in repeated non-blank lines / characters other than newlines"),
        Signal("list_ratio", "newlines / words"),
    )

    def signal_specs(self) -> tuple[Signal, ...]:
        return self.SIGNALS

    def thresholds(self) -> list[Threshold]:
        cfg = self.config
        return [
            Threshold("line_punct_ratio", "line_punct_ratio", "<", cfg.line_punct_thr),
            Threshold("short_line_ratio", "short_line_ratio", ">", cfg.short_line_thr),
            Threshold("char_dup_ratio", "char_dup_ratio", ">", cfg.char_duplicates_ratio),
            Threshold("list_ratio", "list_ratio", ">", cfg.new_line_ratio),
        ]

    def measures(self, text: str) -> Iterator[Measure]:
        cfg = self.config
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            yield Measure("empty", "lines", "<", 0.0, 1.0)
            return
        stop_chars = cfg.stop_chars if cfg.stop_chars is not None else _DEFAULT_STOP_CHARS
        ratio = sum(1 for line in lines if line.endswith(stop_chars)) / len(lines)
        exempt = ratio == 0 and cfg.line_punct_exclude_zero
        yield Measure("line_punct_ratio", "line_punct_ratio", "<", ratio, None if exempt else cfg.line_punct_thr)
        ratio = sum(1 for line in lines if len(line) <= cfg.short_line_length) / len(lines)
        yield Measure("short_line_ratio", "short_line_ratio", ">", ratio, cfg.short_line_thr)
        ratio = duplicates(lines)[1] / len(text.replace("\n", ""))
        yield Measure("char_dup_ratio", "char_dup_ratio", ">", ratio, cfg.char_duplicates_ratio)
        words = word_splitter(cfg.language).count(text)
        ratio = text.count("\n") / words if words else math.inf
        yield Measure("list_ratio", "list_ratio", ">", ratio, cfg.new_line_ratio)
