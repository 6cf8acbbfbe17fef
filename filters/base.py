"""What a quality filter is: a stage that judges each document's text and names the rule that drops it.

A filter only says *why* a document goes: :class:`TextFilter` turns its per-text answers (a rule name, or
None to keep) into the ``drop_reason`` column the stage contract asks for, and ``run_chain`` counts them as
``"<filter>:<rule>"``. Filters that judge a whole batch at once override :meth:`TextFilter.reasons`; filters
that rewrite the text (C4's line cleaning) override ``__call__``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import pyarrow as pa

from pipeline.core.stage import with_drop_reasons


@dataclass(frozen=True)
class Threshold:
    """One rule as a line on a histogram: the rule drops a document when ``signal op value``."""

    rule: str
    signal: str
    op: Literal["<", ">"]
    value: float


@dataclass(frozen=True)
class Signal:
    """A per-document number a filter measures (a float32 column candidate) and what it means."""

    name: str
    meaning: str


def texts_of(table: pa.Table, stage_name: str) -> list[str]:
    """The ``text`` column as Python strings; a null text is the empty string (it fails every length rule)."""
    if "text" not in table.column_names:
        raise ValueError(f"stage {stage_name!r} needs a 'text' column; got columns {table.column_names}")
    return [t or "" for t in table.column("text").to_pylist()]


@dataclass
class TextFilter:
    """Base of a quality filter stage: subclass, set ``name`` and ``config``, implement :meth:`reason`.

    Picklable and stateless (any cache lives in the process, not in the stage), so every engine can run it.
    """

    config: Any
    name: ClassVar[str] = "text_filter"

    def __call__(self, table: pa.Table) -> pa.Table:
        return with_drop_reasons(table, self.reasons(texts_of(table, self.name)))

    def reasons(self, texts: list[str]) -> list[str | None]:
        """The rule that drops each text, or None to keep it."""
        return [self.reason(text) for text in texts]

    def reason(self, text: str) -> str | None:
        raise NotImplementedError

    def thresholds(self) -> list[Threshold]:
        """The enabled rules as (signal, comparison, value), for drawing on the signals' histograms."""
        return []

    def signal_specs(self) -> tuple[Signal, ...]:
        """The per-document measurements :meth:`signals` returns, with their meaning."""
        return ()

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Per-document measurements behind the rules (float32, NaN where undefined), named as in signal_specs."""
        return {}


class Measure(NamedTuple):
    """One rule applied to one document: drop when ``value op threshold`` (a rule that is off: threshold None)."""

    rule: str
    signal: str
    op: Literal["<", ">"]
    value: float
    threshold: float | None

    def fails(self) -> bool:
        if self.threshold is None:
            return False
        return self.value < self.threshold if self.op == "<" else self.value > self.threshold


def rule_on(threshold: float | None) -> float | None:
    """datatrove's ``if self.x and ...``: a threshold of None or 0 turns its rule off."""
    return threshold if threshold else None


@dataclass
class MeasuredFilter(TextFilter):
    """A filter written as a sequence of measurements in rule order (:meth:`measures`).

    A decision stops at the first failing rule, as datatrove's filters do; :meth:`signals` takes every
    measurement, so the report's numbers and the decisions come from the same code.
    """

    def measures(self, text: str) -> Iterator[Measure]:
        raise NotImplementedError

    def reason(self, text: str) -> str | None:
        for measure in self.measures(text):
            if measure.fails():
                return measure.rule
        return None

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        names = [s.name for s in self.signal_specs()]
        values = np.full((len(texts), len(names)), np.nan, dtype=np.float32)
        column = {name: i for i, name in enumerate(names)}
        for row, text in enumerate(texts):
            for measure in self.measures(text):
                i = column.get(measure.signal)
                if i is not None and not math.isnan(measure.value):
                    values[row, i] = measure.value
        return {name: values[:, i] for i, name in enumerate(names)}
