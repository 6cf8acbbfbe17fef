"""FineWeb's own quality rules (Penedo et al. 2024) as datatrove's ``FineWebQualityFilter`` applies them.

Over the non-blank lines (split at ``\\n``, not stripped): too few lines end in terminal punctuation
(``line_punct_ratio``), too many lines are short (``short_line_ratio``), too many characters sit in repeated
lines (``char_dup_ratio``), too many newlines per word (``list_ratio``). No line at all is ``empty``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from filters.base import Drop, MeasuredFilter, Measurements, Rule, register_filter
from filters.config import FineWebQualityConfig
from filters.text import TERMINAL_PUNCTUATION, duplicates, word_splitter

_DEFAULT_STOP_CHARS = tuple(sorted(TERMINAL_PUNCTUATION))


@register_filter("fineweb_quality")
@dataclass
class FineWebQualityStage(MeasuredFilter):
    """Drops list-like, boilerplate-like pages: rules ``empty`` (no non-blank line), then the declared ones.

    Signals, over non-blank lines: ending in terminal punctuation / lines, of at most ``short_line_length``
    characters / lines, characters in repeated lines / characters other than newlines, newlines / words.
    datatrove applies these thresholds even at 0 (``off=()``). With ``line_punct_exclude_zero``, a document
    where no line ends in punctuation is exempt from ``line_punct_ratio`` and has no value for it.
    """

    config: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)
    rules: ClassVar[tuple[Rule, ...]] = (
        Rule("line_punct_ratio", "line_punct_ratio", "<", "line_punct_thr", off=()),
        Rule("short_line_ratio", "short_line_ratio", ">", "short_line_thr", off=()),
        Rule("char_dup_ratio", "char_dup_ratio", ">", "char_duplicates_ratio", off=()),
        Rule("list_ratio", "list_ratio", ">", "new_line_ratio", off=()),
    )

    def measure(self, text: str) -> Measurements:
        cfg = self.config
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            yield Drop("empty")
            return
        stop_chars = cfg.stop_chars if cfg.stop_chars is not None else _DEFAULT_STOP_CHARS
        ratio = sum(1 for line in lines if line.endswith(stop_chars)) / len(lines)
        if not (ratio == 0 and cfg.line_punct_exclude_zero):
            yield "line_punct_ratio", ratio
        yield "short_line_ratio", sum(1 for line in lines if len(line) <= cfg.short_line_length) / len(lines)
        yield "char_dup_ratio", duplicates(lines)[1] / len(text.replace("\n", ""))
        words = word_splitter(cfg.language).count(text)
        yield "list_ratio", text.count("\n") / words if words else math.inf
