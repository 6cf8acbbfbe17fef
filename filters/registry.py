"""Quality filters by name: what ``quality.filters`` and ``quality.extra`` in a run's configuration refer to.

The four FineWeb filters are built in. A new filter is a stage class (usually a :class:`filters.base.MeasuredFilter`
declaring its rules) whose constructor takes its config, registered with :func:`filters.base.register_filter`;
its settings come from ``quality.options.<name>``, validated by its config model, and the module that registers
it is named in ``quality.plugins`` (imported before the stages are built). ``quality.extra`` runs it after the
default list.
"""

from __future__ import annotations

import importlib
from collections import Counter

from pydantic import BaseModel, ValidationError

from filters.base import FILTERS, FilterSpec, TextFilter
from filters.c4 import C4Stage
from filters.config import QUALITY_FILTER_ORDER, QualityConfig
from filters.fineweb import FineWebQualityStage
from filters.gopher import GopherQualityStage, GopherRepetitionStage
from pipeline.core.stage import Stage

BUILT_IN: tuple[type[TextFilter], ...] = (GopherRepetitionStage, GopherQualityStage, C4Stage, FineWebQualityStage)
"""FineWeb's filters in FineWeb's order; each registers itself where it is defined."""


def registered_filters() -> tuple[str, ...]:
    """Every registered filter: the built-in ones in FineWeb's order, then plugins in the order they registered."""
    built_in = tuple(f.name for f in BUILT_IN)
    return built_in + tuple(name for name in FILTERS if name not in built_in)


def _spec(name: str) -> FilterSpec:
    spec = FILTERS.get(name)
    if spec is None:
        raise ValueError(f"unknown quality filter {name!r}; registered: {', '.join(registered_filters())}")
    return spec


def filter_config(name: str, quality: QualityConfig) -> BaseModel:
    """The settings of filter ``name``: a built-in's own field of ``quality``, else ``quality.options[name]``."""
    spec = _spec(name)
    if name in QUALITY_FILTER_ORDER:
        return getattr(quality, name)
    try:
        return spec.config_model.model_validate(quality.options.get(name, {}))
    except ValidationError as e:
        raise ValueError(f"invalid settings for quality filter {name!r} (quality.options.{name}): {e}") from None


def build_filter(name: str, quality: QualityConfig | None = None) -> Stage:
    """The stage of filter ``name`` with its settings from ``quality`` (default settings without)."""
    return _spec(name).factory(filter_config(name, quality or QualityConfig()))


def check_filters(quality: QualityConfig) -> None:
    """Raise ValueError unless every plugin imports and every name in ``quality.filters`` and ``quality.extra`` is
    a registered filter with valid settings, listed once."""
    _import_plugins(quality)
    for field in ("filters", "extra"):
        if unknown := [name for name in getattr(quality, field) if name not in FILTERS]:
            raise ValueError(
                f"unknown quality filter(s) {', '.join(map(repr, unknown))} in quality.{field}; "
                f"registered: {', '.join(registered_filters())}"
            )
    if twice := [name for name, n in Counter(quality.chain).items() if n > 1]:
        raise ValueError(
            f"quality filter(s) {', '.join(map(repr, twice))} listed more than once in quality.filters + quality.extra"
        )
    for name in quality.chain:
        filter_config(name, quality)


def quality_stages(quality: QualityConfig | None = None) -> list[Stage]:
    """The enabled quality filters of ``quality``, in its order (FineWeb's by default, then ``extra``)."""
    quality = quality or QualityConfig()
    _import_plugins(quality)
    stages = []
    for name in quality.chain:
        config = filter_config(name, quality)
        if getattr(config, "enabled", True):
            stages.append(_spec(name).factory(config))
    return stages


def _import_plugins(quality: QualityConfig) -> None:
    """Import ``quality.plugins``, where extra filters register themselves."""
    for module in quality.plugins:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"quality.plugins: cannot import {module!r}: {e}") from None
