"""The passes of a run, in order: the one list ``refinery run`` loops over and the Prefect flow wraps (a task each).

Each pass reads what it needs from the :class:`RunState` (the WARC files, the latest documents folder, the
token shards) and records what it wrote there, so nothing else knows the order. To add a pass, write its
``run(config, engine, state)`` and put one :class:`Pass` where it belongs in :data:`PASSES`; e.g. a
quality-classifier pass over the deduplicated documents::

    def classify(config: RunConfig, engine: Engine, state: RunState) -> None:
        out = config.run_dir / "classified"
        run_classifier(state.documents_dir, out, config.classifier, engine=engine)
        state.documents_dirs.append(out)  # the next pass (tokens) reads these documents

    Pass("classify", "classified", ("classifier",), classify, enabled=lambda c: c.classifier.enabled,
         parts=document_parts),  # between dedup and tokenize in PASSES
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.app.config import RunConfig
from pipeline.app.warc import failed_inputs, plan_units, run_warc_pass, warc_units
from pipeline.core.parts import done_parts, total_stats
from pipeline.core.processes import die_with_this_process
from pipeline.core.stats import PartStats, nothing_kept
from pipeline.core.storage import Location
from pipeline.engines import Engine
from pipeline.engines.base import PassResult, WorkUnit

log = logging.getLogger(__name__)

DEDUP_DIR = "dedup"
TOKENS_DIR = "tokens"
VALIDATION_DIR = "validation"
REPORT_DIR = "report"


@dataclass
class RunState:
    """What a run's passes have produced so far; each pass reads its input here and records its output."""

    run_dir: Location
    warc_paths: list[str]
    """The WARC files of the run, in listing order: file ``i`` becomes part ``part-{i:05d}``."""
    documents_dirs: list[Location] = field(default_factory=list)
    """Folders of the document passes that ran, in order; the last one's ``documents/`` is the corpus so far."""
    warc_result: PassResult | None = None
    """Which WARC parts were done, skipped (done earlier) or failed."""
    tokens_dir: Location | None = None
    validation_dir: Location | None = None
    report_path: Location | None = None
    failed: dict[str, str] = field(default_factory=dict)
    """WARC files that failed (path -> error), tolerated by ``max_failed_parts``."""
    warnings: list[str] = field(default_factory=list)
    split_warcs: int = 1
    """Byte ranges per WARC file (``source.split_warcs``): each is its own unit and part."""

    @property
    def units(self) -> list[WorkUnit]:
        return warc_units(self.warc_paths, self.split_warcs)

    @property
    def documents_dir(self) -> Location:
        if not self.documents_dirs:
            raise RuntimeError("no document pass has run yet")
        return self.documents_dirs[-1]

    def stats(self) -> PartStats:
        """One funnel over the document passes that ran."""
        return run_stats(self.documents_dirs)

    def warn(self, message: str) -> None:
        """A warning for the end of the run (the CLI prints them last, the flow logs them as warnings)."""
        log.info("%s", message)
        self.warnings.append(message)


def start_run(config: RunConfig) -> RunState:
    """The state before the first pass: the dump's WARC files this run reads (cut to ``limit_warcs``)."""
    units = plan_units(config)
    paths = list(dict.fromkeys(u.inputs[0] for u in units))
    return RunState(run_dir=config.run_dir, warc_paths=paths, split_warcs=config.source.split_warcs)


@dataclass(frozen=True)
class Pass:
    """One pass: its name, its folder under the run, the config sections it reads, how it runs, when it is on."""

    name: str
    folder: str
    sections: tuple[str, ...]
    run: Callable[[RunConfig, Engine, RunState], None]
    enabled: Callable[[RunConfig], bool] = lambda config: True
    parts: Callable[[RunState], list[str]] | None = None
    """The parts it writes (from its input), so a caller can follow its progress in ``out_dir``."""

    def out_dir(self, config: RunConfig) -> Location:
        return config.run_dir / self.folder


# ---------------------------------------------------------------- the passes


def warc(config: RunConfig, engine: Engine, state: RunState) -> None:
    """WARC files -> documents in ``<run>``, one part per file (up to ``max_failed_parts`` may fail)."""
    units = state.units
    state.warc_result = result = run_warc_pass(config, units, engine)
    state.failed = failed_inputs(units, result)
    state.documents_dirs.append(config.run_dir)
    _warn_if_empty(state)


def dedup(config: RunConfig, engine: Engine, state: RunState) -> None:
    """Exact + MinHash dedup of the latest documents into ``<run>/dedup`` (same part names)."""
    from pipeline.dedup.dedup_pass import run_dedup

    out = config.run_dir / DEDUP_DIR
    # a run owns its dedup folder: when the WARC pass's parts changed (a failed file now done), dedup is redone
    run_dedup(state.documents_dir, out, config.dedup, keep_rejected=config.keep_rejected, engine=engine,
              replace_stale=True)  # fmt: skip
    state.documents_dirs.append(out)


def tokenize(config: RunConfig, engine: Engine, state: RunState) -> None:
    """The latest documents -> llm.c token shards + ``manifest.json`` in ``<run>/tokens``."""
    from tokenization.tokenize_pass import run_tokenize

    out = config.run_dir / TOKENS_DIR
    run_tokenize(state.documents_dir, out, config.tokenizer, engine=engine)
    state.tokens_dir = out


def validate(config: RunConfig, engine: Engine, state: RunState) -> None:
    """Train a small GPT on the shards (the GPU hand-off, run here): its verdict goes into the report."""
    if state.tokens_dir is None or state.stats().docs_out == 0:
        state.warn("shard validation skipped: there are no tokens to train on")
        return
    out = config.run_dir / VALIDATION_DIR
    if validate_shards_subprocess(state.tokens_dir, out, config.validation_preset):
        log.info("shard validation passed: %s", out / "validation.json")
    else:
        log.warning("shard validation did not pass; see %s", out / "validation.json")
    state.validation_dir = out


def report(config: RunConfig, engine: Engine, state: RunState) -> None:
    """The dataset report (``<run>/report/index.html`` + ``report.json``) from the stats every pass wrote."""
    from pipeline.report.build import write_report

    state.report_path = write_report(config.run_dir).html_path


def document_parts(state: RunState) -> list[str]:
    """A pass over the latest documents writes the same parts."""
    return done_parts(state.documents_dir)


def dedup_enabled(config: RunConfig) -> bool:
    return config.dedup.exact or config.dedup.minhash.enabled


PASSES: tuple[Pass, ...] = (
    Pass("warc", ".", ("source", "url_filter", "extraction", "langid", "quality", "quality_classifier",
                       "decontaminate", "pii"), warc, parts=lambda state: [u.part for u in state.units]),
    Pass("dedup", DEDUP_DIR, ("dedup",), dedup, enabled=dedup_enabled, parts=document_parts),
    Pass("tokenize", TOKENS_DIR, ("tokenizer",), tokenize, enabled=lambda c: c.tokenize, parts=document_parts),
    Pass("validate", VALIDATION_DIR, ("validation_preset",), validate,
         enabled=lambda c: c.tokenize and c.validate_shards),
    Pass("report", REPORT_DIR, (), report, enabled=lambda c: c.report),
)  # fmt: skip
"""Every pass of a run, in run order; a run runs the enabled ones."""


def enabled_passes(config: RunConfig) -> list[Pass]:
    return [p for p in PASSES if p.enabled(config)]


# ---------------------------------------------------------------- helpers


def validate_shards_subprocess(tokens_dir: Location | str, out_dir: Location | str, preset: str) -> bool:
    """The GPU hand-off, run locally: the training job in its own process, as on a training node.

    Returns whether the shards passed; the job's report is ``out_dir/validation.json`` either way. The job
    reads local files only: shards on a store are downloaded to scratch first, and when either folder is on a
    store the job writes to scratch and its folder is uploaded to ``out_dir`` afterwards (same layout).
    """
    import contextlib
    import tempfile

    from pipeline.app.shards_cli import local_shard_folder, publish_validation
    from pipeline.core.storage import is_remote, location, scratch_dir

    tokens_dir, out_dir = location(tokens_dir), location(out_dir)
    staged = is_remote(tokens_dir) or is_remote(out_dir)
    with contextlib.ExitStack() as stack:
        job_tokens, job_out = tokens_dir, out_dir
        if staged:
            job_tokens = stack.enter_context(local_shard_folder(tokens_dir))
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="validation-", dir=scratch_dir()))
            job_out = Path(scratch) / VALIDATION_DIR
        cmd = [sys.executable, "-m", "validation.validate", str(job_tokens), "-o", str(job_out), "--preset", preset]
        log.info("validating shards: %s", " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=die_with_this_process())
        if done.returncode not in (0, 1):
            raise RuntimeError(
                f"shard validation could not run (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        if staged:
            publish_validation(job_out, out_dir, tokens_dir)
    return done.returncode == 0


def run_stats(pass_dirs: list[Location]) -> PartStats:
    """One funnel over the finished parts of document passes, in run order (what the CLI and the report show)."""
    return merge_passes([total_stats(d) for d in pass_dirs])


def merge_passes(passes: list[PartStats]) -> PartStats:
    """One funnel over consecutive passes: the first pass's source counters, every pass's stages in order."""
    if not passes:
        return PartStats(part="run")
    total = PartStats(part="run", inputs=list(passes[0].inputs), source=passes[0].source.copy())
    for p in passes:
        total.stages.extend(p.stages)
    total.docs_out = passes[-1].docs_out
    total.seconds = sum(p.seconds for p in passes)
    return total


def _warn_if_empty(state: RunState) -> None:
    stats = state.stats()
    if stats.docs_out == 0:
        state.warn(no_documents_warning(stats))


def no_documents_warning(stats: PartStats) -> str:
    drops: Counter[str] = Counter()
    for stage in stats.stages:
        drops.update(stage.drops)
    return nothing_kept(stats.stages[0].docs_in if stats.stages else 0, drops)
