"""Run configurations of the embedded sample crawl, as the tests build them (one place for the shared keys)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.app.config import RunConfig

WARC_PASS_ONLY: dict[str, Any] = {
    "dedup.exact": False,
    "dedup.minhash.enabled": False,
    "tokenize": False,
    "report": False,
}
"""Overrides that leave only the WARC pass of a run (no dedup, tokens or report)."""


def sample_config(base_url: str, out: Path, name: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run named ``name`` of the sample crawl's dump read from ``base_url``, written under ``out``."""
    from pipeline.app.config import SAMPLE_DUMP, load_config

    base = {"source.cc_base_url": base_url, "source.dump": SAMPLE_DUMP, "output_dir": str(out), "name": name}
    return load_config(overrides={**base, **(overrides or {})})
