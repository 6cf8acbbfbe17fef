"""The passes of a run as ``(config, inputs) -> outputs`` functions over paths, in run order, for the flow's tasks.

No Prefect here. Each adapter calls the per-pass function of :mod:`pipeline.app.run` that
:func:`pipeline.app.run.run_pipeline` calls, on the run's configured engine (local or Spark), so a flow run and
``refinery run`` write the same folders.

Inputs and outputs are folders (or, for the WARC pass, the WARC paths of the listing): a pass's outputs are
the next enabled pass's inputs. ``parts`` says where a pass writes ``markers/``, ``stats/`` and
``progress/`` and which parts it will write, so the flow can show its progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import run
from pipeline.app.config import RunConfig
from pipeline.app.run import (
    DEDUP_DIR,
    TOKENS_DIR,
    VALIDATION_DIR,
    dedup_enabled,
    merge_passes,
    validate_shards_subprocess,
)
from pipeline.core.parts import MARKERS, done_parts, part_name, total_stats
from pipeline.core.stats import PartStats
from pipeline.engines import Engine, make_engine
from pipeline.engines.base import WorkUnit

log = logging.getLogger(__name__)

PassFn = Callable[[RunConfig, list[str]], list[Path]]
PartsFn = Callable[[RunConfig, list[str]], tuple[Path, list[str]]]


def _always(config: RunConfig) -> bool:
    return True


@dataclass(frozen=True)
class Pass:
    """One pass: ``run(config, inputs) -> outputs``; whether it runs for a config; where its progress shows."""

    name: str
    run: PassFn
    parts: PartsFn | None = None
    enabled: Callable[[RunConfig], bool] = _always
    documents: bool = False
    """Its output folder holds ``documents/`` parts (the last such pass holds the run's corpus)."""


def _engine(config: RunConfig) -> Engine:
    """The run's engine, without progress bars (the flow shows progress as artifacts); Spark joins its session."""
    return make_engine(config.engine, progress=False)


def warc_pass(config: RunConfig, warc_paths: list[str]) -> list[Path]:
    """WARC files -> documents (download, URL filter, extraction, language ID, quality filters), a part per file."""
    units = [WorkUnit(part=part_name(i), inputs=(path,)) for i, path in enumerate(warc_paths)]
    run.warc_pass(config, units, _engine(config))
    return [config.run_dir]


def warc_parts(config: RunConfig, warc_paths: list[str]) -> tuple[Path, list[str]]:
    return config.run_dir, [part_name(i) for i in range(len(warc_paths))]


def dedup_pass(config: RunConfig, inputs: list[str]) -> list[Path]:
    """Exact + MinHash dedup of the previous document pass into ``<run>/dedup`` (same part names)."""
    (input_dir,) = inputs
    return [run.dedup_pass(config, Path(input_dir), _engine(config))]


def dedup_parts(config: RunConfig, inputs: list[str]) -> tuple[Path, list[str]]:
    return config.run_dir / DEDUP_DIR, done_parts(Path(inputs[0]))


def tokenize_pass(config: RunConfig, inputs: list[str]) -> list[Path]:
    """The final documents -> llm.c token shards + manifest in ``<run>/tokens``."""
    (documents_dir,) = inputs
    return [run.tokenize_pass(config, Path(documents_dir), _engine(config))]


def tokenize_parts(config: RunConfig, inputs: list[str]) -> tuple[Path, list[str]]:
    return config.run_dir / TOKENS_DIR, done_parts(Path(inputs[0]))


def validate_pass(config: RunConfig, inputs: list[str]) -> list[Path]:
    """Train a small GPT on the shards (the GPU hand-off, run locally); its verdict goes into the report."""
    (tokens_dir,) = inputs
    out = config.run_dir / VALIDATION_DIR
    if validate_shards_subprocess(Path(tokens_dir), out, config.validation_preset):
        log.info("shard validation passed: %s", out / "validation.json")
    else:
        log.warning("shard validation did not pass; see %s", out / "validation.json")
    return [out]


def _tokenize_enabled(config: RunConfig) -> bool:
    return config.tokenize


def _validate_enabled(config: RunConfig) -> bool:
    return config.tokenize and config.validate_shards


PASSES: tuple[Pass, ...] = (
    Pass("warc", warc_pass, warc_parts, documents=True),
    Pass("dedup", dedup_pass, dedup_parts, enabled=dedup_enabled, documents=True),
    Pass("tokenize", tokenize_pass, tokenize_parts, enabled=_tokenize_enabled),
    Pass("validate", validate_pass, enabled=_validate_enabled),
)
"""Every pass of a run, in order; the flow runs the enabled ones, each as one task."""


def document_pass_dirs(run_dir: Path) -> list[Path]:
    """Folders of the document passes a run has written so far, in run order (the run folder, then dedup/)."""
    run_dir = Path(run_dir)
    return [d for d in (run_dir, run_dir / DEDUP_DIR) if (d / MARKERS).is_dir()]


def run_stats(pass_dirs: list[Path]) -> PartStats:
    """One funnel over document passes: the first one's source counters, then every stage of every pass."""
    return merge_passes([total_stats(d) for d in pass_dirs]) if pass_dirs else PartStats(part="run")
