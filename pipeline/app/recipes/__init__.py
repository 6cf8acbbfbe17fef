"""Recipes: named presets of the run configuration, shipped as YAML files next to this module.

A recipe holds only the settings it changes from ``RunConfig``'s defaults. ``refinery run --recipe NAME`` applies it
first, then the config file, then the command line flags (each overrides the one before). The Prefect form's config
is always complete, so there the recipe is applied under the fields the form changed from the defaults
(:func:`apply_recipe`): the form's changes still win.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any, Literal, get_args

import yaml

RecipeName = Literal["fineweb", "fineweb-edu-like", "dclm-like"]
"""The recipes shipped with the package (``<name>.yaml`` here); ``fineweb`` is the defaults."""

RECIPES: tuple[str, ...] = get_args(RecipeName)
DEFAULT_RECIPE = "fineweb"

DCLM_MODEL = "openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"
"""DCLM-Baseline's published classifier (model repository ``mlfoundations/fasttext-oh-eli5``)."""


class RecipeError(ValueError):
    """An unknown recipe, or one that cannot run as configured; the message says what to do."""


def recipe_data(name: str) -> dict[str, Any]:
    """The settings recipe ``name`` sets, as a nested mapping (a fresh copy)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, mappings merged key by key (neither input is changed)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def changed_from(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that differ from ``defaults`` (mappings compared key by key)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            inner = changed_from(value, default)
            if inner:
                out[key] = inner
        elif key not in defaults or value != default:
            out[key] = value
    return out


def missing_model(name: str, data: dict[str, Any]) -> str | None:
    """The one-line error when recipe ``name`` enables the classifier and ``data`` (the merged config) gives no
    model, else None."""
    section = data.get("quality_classifier") or {}
    if not section.get("enabled") or section.get("model"):
        return None
    hint = f" (DCLM's model: {DCLM_MODEL}, see the README)" if name == "dclm-like" else ""
    return (
        f"recipe {name} needs a quality classifier model: set quality_classifier.model to a fastText model path or "
        f"URL (--set quality_classifier.model=PATH, or in the config file){hint}"
    )
