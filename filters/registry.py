"""Quality filters by name: what ``quality.filters`` in a run's configuration refers to.

The four FineWeb filters are built in. A new filter is a stage class (usually a :class:`filters.base.TextFilter`
with a ``reason`` method) whose constructor takes its config, registered with :func:`register_filter`; its
settings come from ``quality.options.<name>``, validated by the config model it registered with, and the module
that registers it is named in ``quality.plugins`` (imported before the stages are built).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from filters.c4 import C4Stage
from filters.config import (
    QUALITY_FILTER_ORDER,
    C4Config,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    QualityConfig,
)
from filters.fineweb import FineWebQualityStage
from filters.gopher import GopherQualityStage, GopherRepetitionStage
from pipeline.core.stage import Stage

F = TypeVar("F", bound=Callable[..., Stage])


@dataclass(frozen=True)
class FilterSpec:
    """A registered filter: its name, its settings' model, and what builds the stage from those settings."""

    name: str
    config_model: type[BaseModel]
    factory: Callable[[Any], Stage]


_REGISTRY: dict[str, FilterSpec] = {
    "gopher_repetition": FilterSpec("gopher_repetition", GopherRepetitionConfig, GopherRepetitionStage),
    "gopher_quality": FilterSpec("gopher_quality", GopherQualityConfig, GopherQualityStage),
    "c4": FilterSpec("c4", C4Config, C4Stage),
    "fineweb_quality": FilterSpec("fineweb_quality", FineWebQualityConfig, FineWebQualityStage),
}


def register_filter(name: str, config_model: type[BaseModel]) -> Callable[[F], F]:
    """Class decorator: make the stage ``factory(config)`` available as ``name`` in ``quality.filters``."""

    def decorate(factory: F) -> F:
        known = _REGISTRY.get(name)
        if known is not None and known.factory is not factory:
            raise ValueError(f"a quality filter named {name!r} is already registered ({known.factory!r})")
        _REGISTRY[name] = FilterSpec(name, config_model, factory)
        return factory

    return decorate


def registered_filters() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _spec(name: str) -> FilterSpec:
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown quality filter {name!r}; registered: {', '.join(_REGISTRY)}")
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
    """Raise ValueError unless every plugin imports and every name in ``quality.filters`` is a registered
    filter with valid settings."""
    for module in quality.plugins:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"quality.plugins: cannot import {module!r}: {e}") from None
    if unknown := [name for name in quality.filters if name not in _REGISTRY]:
        raise ValueError(
            f"unknown quality filter(s) {', '.join(map(repr, unknown))} in quality.filters; "
            f"registered: {', '.join(_REGISTRY)}"
        )
    for name in quality.filters:
        filter_config(name, quality)


def quality_stages(quality: QualityConfig | None = None) -> list[Stage]:
    """The enabled quality filters of ``quality``, in its order (FineWeb's by default)."""
    quality = quality or QualityConfig()
    for module in quality.plugins:
        importlib.import_module(module)
    stages = []
    for name in quality.filters:
        config = filter_config(name, quality)
        if getattr(config, "enabled", True):
            stages.append(_spec(name).factory(config))
    return stages
