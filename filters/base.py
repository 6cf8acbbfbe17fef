"""What a quality filter is: a stage that judges each document's text and names the rule that drops it.

A filter declares its rules once, as :class:`Rule` data (name, signal, comparison, config field), and measures
its signals in :meth:`MeasuredFilter.measure`. Everything else comes from that declaration: the thresholds in
force (read from the config), the decision (first rule that fails, as datatrove decides), the drop reason
``"<filter>:<rule>"`` that ``run_chain`` counts, and the report's histogram of each signal with its threshold
lines. :func:`register_filter` names the filter and makes it available to ``quality.filters`` and
``quality.extra``.

Filters that are not thresholds on measurements subclass :class:`TextFilter` and implement :meth:`reason`;
filters that rewrite the text (C4's line cleaning) override ``__call__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from pipeline.core.stage import Stage, with_drop_reasons

Op = Literal["<", ">"]


class Drop(str):
    """Yielded by :meth:`MeasuredFilter.measure` for a text no threshold can save (e.g. an empty one): the rule
    that drops it. datatrove names these cases without measuring them, so they have no signal."""


Measurements = Iterator[tuple[str, float] | Drop]
"""What :meth:`MeasuredFilter.measure` yields: ``(signal, value)`` pairs in rule order, or a :class:`Drop`."""


@dataclass(frozen=True)
class Threshold:
    """A rule in force: it drops a document when ``signal op value`` (the line drawn on the signal's histogram)."""

    rule: str
    signal: str
    op: Op
    value: float


@dataclass(frozen=True)
class Rule:
    """One rule of a filter, declared once: drop a document when its ``signal`` is ``op`` ``config.<field>``.

    A threshold in ``off`` turns the rule off (None or 0 by default: datatrove's ``if self.x and ...``); rules
    that datatrove applies even at 0 say ``off=()``. A field holding ``(n, threshold)`` pairs (Gopher's n-gram
    rules) declares one rule per pair, with ``{n}`` in ``name`` and ``signal`` filled in.
    """

    name: str
    signal: str
    op: Op
    field: str
    off: tuple[float | None, ...] = (None, 0)

    def expand(self, config: Any) -> list[tuple[str, str, float | None]]:
        """(rule, signal, threshold or None when off) for each rule this declaration makes under ``config``."""
        value = getattr(config, self.field)
        if isinstance(value, tuple | list):
            pairs = [(self.name.format(n=n), self.signal.format(n=n), v) for n, v in value]
        else:
            pairs = [(self.name, self.signal, value)]
        return [(rule, signal, None if v in self.off else v) for rule, signal, v in pairs]


def texts_of(table: pa.Table, stage_name: str) -> list[str]:
    """The ``text`` column as Python strings; a null text is the empty string (it fails every length rule)."""
    if "text" not in table.column_names:
        raise ValueError(f"stage {stage_name!r} needs a 'text' column; got columns {table.column_names}")
    return [t or "" for t in table.column("text").to_pylist()]


@dataclass
class TextFilter:
    """Base of a quality filter stage: subclass, declare ``config`` and ``rules``, implement :meth:`reason`.

    Picklable and stateless (any cache lives in the process, not in the stage), so every engine can run it.
    ``name`` is set by :func:`register_filter`.
    """

    config: Any
    name: ClassVar[str] = "text_filter"
    rules: ClassVar[tuple[Rule, ...]] = ()
    extra_signals: ClassVar[tuple[str, ...]] = ()
    """Signals measured for the report that no rule thresholds (histograms without a line)."""

    def __call__(self, table: pa.Table) -> pa.Table:
        return with_drop_reasons(table, self.reasons(texts_of(table, self.name)))

    def reasons(self, texts: list[str]) -> list[str | None]:
        """The rule that drops each text, or None to keep it."""
        return [self.reason(text) for text in texts]

    def reason(self, text: str) -> str | None:
        raise NotImplementedError

    def thresholds(self) -> list[Threshold]:
        """The rules in force, from :attr:`rules` and the config (the report draws them on the histograms)."""
        return [
            Threshold(rule, signal, r.op, value)
            for r in self.rules
            for rule, signal, value in r.expand(self.config)
            if value is not None
        ]

    def signal_names(self) -> list[str]:
        """The signals :meth:`signals` returns: those of every declared rule (also rules off), then extra ones."""
        names = [signal for r in self.rules for _, signal, _ in r.expand(self.config)]
        return list(dict.fromkeys([*names, *self.extra_signals]))

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Per-document measurements behind the rules (float32, NaN where undefined), named as in signal_names."""
        return {}


@dataclass
class MeasuredFilter(TextFilter):
    """A filter written as its :attr:`rules` plus :meth:`measure`, which yields the signals in rule order.

    A decision stops at the first failing rule, as datatrove's filters do; :meth:`signals` takes every
    measurement, so the report's numbers and the decisions come from the same code.
    """

    def measure(self, text: str) -> Measurements:
        raise NotImplementedError

    def _checks(self) -> dict[str, tuple[tuple[str, bool, float], ...]]:
        """Per signal, its rules in force as (rule, drops when below, threshold); built once per batch."""
        checks: dict[str, list[tuple[str, bool, float]]] = {}
        for t in self.thresholds():
            checks.setdefault(t.signal, []).append((t.rule, t.op == "<", t.value))
        return {signal: tuple(rules) for signal, rules in checks.items()}

    def _decide(self, text: str, checks: dict[str, tuple[tuple[str, bool, float], ...]]) -> str | None:
        for item in self.measure(text):
            if isinstance(item, Drop):
                return str(item)
            signal, value = item
            for rule, below, threshold in checks.get(signal, ()):
                if (value < threshold) if below else (value > threshold):
                    return rule
        return None

    def reasons(self, texts: list[str]) -> list[str | None]:
        checks = self._checks()
        return [self._decide(text, checks) for text in texts]

    def reason(self, text: str) -> str | None:
        return self._decide(text, self._checks())

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.judge(texts)[1]

    def judge(self, texts: list[str]) -> tuple[list[str | None], dict[str, np.ndarray]]:
        """The decisions and every signal from one measurement of each text. The decision is the first failing
        rule in :meth:`measure`'s order, as :meth:`reasons` gives it; measuring on past it costs what the report's
        signals cost anyway, so a chain that wants both measures once."""
        checks = self._checks()
        names = self.signal_names()
        values = np.full((len(texts), len(names)), np.nan, dtype=np.float32)
        column = {name: i for i, name in enumerate(names)}
        reasons: list[str | None] = []
        for row, text in enumerate(texts):
            reason = None
            for item in self.measure(text):
                if isinstance(item, Drop):
                    reason = reason or str(item)
                    continue
                signal, value = item
                if (i := column.get(signal)) is not None:
                    values[row, i] = value
                if reason is None:
                    reason = next(
                        (rule for rule, below, threshold in checks.get(signal, ())
                         if ((value < threshold) if below else (value > threshold))),
                        None,
                    )  # fmt: skip
            reasons.append(reason)
        return reasons, {name: values[:, i] for i, name in enumerate(names)}

    def filter_with_signals(self, table: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """This stage's output and its signals over every row, measured once (:func:`pipeline.core.stage.run_chain`
        uses it in place of calling the stage, then measuring again for the report). A subclass that decides or
        measures its own way (overrides ``__call__``, :meth:`reasons` or :meth:`signals`) keeps it: its call,
        then its signals."""
        texts = texts_of(table, self.name)
        own = (type(self).__call__, type(self).reasons, type(self).signals)
        if own != (TextFilter.__call__, MeasuredFilter.reasons, MeasuredFilter.signals):
            return self(table), self.signals(texts)
        reasons, signals = self.judge(texts)
        return with_drop_reasons(table, reasons), signals


@dataclass(frozen=True)
class FilterSpec:
    """A registered filter: its name, its settings' model, and the stage class built from those settings."""

    name: str
    config_model: type[BaseModel]
    factory: Callable[[Any], Stage]


FILTERS: dict[str, FilterSpec] = {}
"""Every registered quality filter by name (the built-in ones register when :mod:`filters.registry` loads)."""

F = TypeVar("F", bound=type)


def register_filter(name: str, config_model: type[BaseModel] | None = None) -> Callable[[F], F]:
    """Class decorator: name the stage class ``name`` and make it available in ``quality.filters``/``extra``.

    Its settings' model is ``config_model``, else the default of its ``config`` dataclass field.
    """

    def decorate(cls: F) -> F:
        model = config_model or _config_model(cls)
        known = FILTERS.get(name)
        if known is not None and known.factory is not cls:
            raise ValueError(f"a quality filter named {name!r} is already registered ({known.factory!r})")
        cls.name = name
        FILTERS[name] = FilterSpec(name, model, cls)
        return cls

    return decorate


def _config_model(cls: type) -> type[BaseModel]:
    config = getattr(cls, "__dataclass_fields__", {}).get("config")
    model = getattr(config, "default_factory", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{cls.__name__}: pass config_model, or give the dataclass a 'config' field with a default")
    return model
