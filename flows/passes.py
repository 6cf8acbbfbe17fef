"""The passes of a run as ``(config, inputs) -> outputs`` functions over paths, in run order, for the flow's tasks.

No Prefect here. Each adapter calls the one pipeline function that :func:`pipeline.run.run_pipeline` calls for
that pass, with the same arguments, so a flow run and ``refinery run`` write the same folders; once
``run_pipeline`` is split into per-pass functions these adapters become plain references to them.

Inputs and outputs are folders (or, for the WARC pass, the WARC paths of the listing): a pass's outputs are
the next enabled pass's inputs. ``parts`` says where a pass writes ``markers/``, ``stats/`` and
``progress/`` and which parts it will write, so the flow can show its progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import RunConfig
from pipeline.engines.base import WorkUnit
from pipeline.run import (
    DEDUP_DIR,
    TOKENS_DIR,
    VALIDATION_DIR,
    WarcPass,
    dedup_enabled,
    merge_passes,
    validate_shards_subprocess,
)
from pipeline.shards import MARKERS, done_parts, part_name, total_stats
from pipeline.stats import PartStats

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


def warc_pass(config: RunConfig, warc_paths: list[str]) -> list[Path]:
    """WARC files -> documents (download, URL filter, extraction, language ID, quality filters), a part per file."""
    from pipeline.engines.local import run_local

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    units = [WorkUnit(part=part_name(i), inputs=(path,)) for i, path in enumerate(warc_paths)]
    engine = config.engine
    run_local(
        units, WarcPass(config), run_dir, workers=engine.workers, tasks=engine.tasks, progress=False,
        description="WARC files",
    )  # fmt: skip
    return [run_dir]


def warc_parts(config: RunConfig, warc_paths: list[str]) -> tuple[Path, list[str]]:
    return config.run_dir, [part_name(i) for i in range(len(warc_paths))]


def dedup_pass(config: RunConfig, inputs: list[str]) -> list[Path]:
    """Exact + MinHash dedup of the previous document pass into ``<run>/dedup`` (same part names)."""
    from pipeline.dedup.dedup_pass import run_dedup

    (input_dir,) = inputs
    out = config.run_dir / DEDUP_DIR
    run_dedup(
        Path(input_dir), out, config.dedup, workers=config.engine.workers, progress=False,
        keep_rejected=config.keep_rejected,
    )  # fmt: skip
    return [out]


def dedup_parts(config: RunConfig, inputs: list[str]) -> tuple[Path, list[str]]:
    return config.run_dir / DEDUP_DIR, done_parts(Path(inputs[0]))


def tokenize_pass(config: RunConfig, inputs: list[str]) -> list[Path]:
    """The final documents -> llm.c token shards + manifest in ``<run>/tokens``."""
    from tokenization.tokenize_pass import run_tokenize

    (documents_dir,) = inputs
    out = config.run_dir / TOKENS_DIR
    run_tokenize(Path(documents_dir), out, config.tokenizer, workers=config.engine.workers, progress=False)
    return [out]


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
