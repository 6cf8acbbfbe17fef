"""A run: the WARC pass (download -> read -> URL filter -> extract -> language ID -> quality filters), then dedup,
tokenization, optional shard validation and the report.

Each selected WARC file becomes one part (``part-NNNNN`` by its position in the selection), so a
rerun maps the same file to the same part and skips it once its marker exists.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from filters.registry import build_filter, quality_stages, registered_filters
from filters.url import UrlFilterStage
from pipeline.app.config import RunConfig
from pipeline.core.lock import output_lock
from pipeline.core.parts import PartWriter, part_name, total_stats, write_bytes_atomic
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.engines import Engine, make_engine
from pipeline.engines.base import PassResult, RunIncomplete, WorkUnit, write_progress
from pipeline.sources.commoncrawl import list_warc_paths, select_warc_paths
from pipeline.sources.download import fetch_warc, is_local, local_dir
from pipeline.sources.warc import read_warc
from pipeline.stages.extraction import ExtractStage
from pipeline.stages.langid import LangIdStage

log = logging.getLogger(__name__)

BASE_STAGES = ("url_filter", "extract", "langid")
"""Stages every WARC pass starts with; the configured quality filters follow (FineWeb's order)."""


def stage_names() -> tuple[str, ...]:
    """Every stage ``refinery stage NAME`` can run: the base stages, then every registered quality filter."""
    return BASE_STAGES + registered_filters()


def build_stage(name: str, config: RunConfig) -> Stage:
    """The configured stage called ``name``."""
    if name == "url_filter":
        return UrlFilterStage(config.url_filter)
    if name == "extract":
        return ExtractStage(config.extraction)
    if name == "langid":
        return LangIdStage(config.langid)
    if name in registered_filters():
        return build_filter(name, config.quality)
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")


def warc_stages(config: RunConfig) -> list[Stage]:
    """The chain a WARC pass runs on every batch of records."""
    names = [n for n in BASE_STAGES if n != "url_filter" or config.url_filter.enabled]
    return [build_stage(n, config) for n in names] + quality_stages(config.quality)


def process_records(
    local_path: Path,
    warc_path: str,
    stages: list[Stage],
    writer: PartWriter,
    stats: PartStats,
    *,
    dump: str,
    batch_size: int,
    limit: int | None = None,
    on_batch: object = None,
) -> None:
    """Read one WARC file in batches, run the chain, stream kept/dropped rows to ``writer``."""
    seen = 0
    for batch in read_warc(local_path, dump=dump, warc_path=warc_path, counters=stats.source, batch_size=batch_size):
        if limit is not None:
            if seen >= limit:
                break
            batch = batch.slice(0, limit - seen)
        seen += batch.num_rows
        kept, rejected = run_chain(stages, batch, stats)
        writer.write(kept, rejected)
        if callable(on_batch):
            on_batch(seen)


@dataclass
class WarcPass:
    """Turns one WARC file (a work unit) into one part: picklable, so any worker can run it."""

    config: RunConfig

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        (warc_path,) = unit.inputs
        source = self.config.source
        start = time.perf_counter()
        local = fetch_warc(
            source.cc_base_url,
            warc_path,
            download_dir(self.config),
            retries=source.retries,
            timeout_s=source.timeout_s,
            min_speed_bps=source.min_speed_bytes_s,
            speed_window_s=source.speed_window_s,
            deadline_s=source.deadline_s,
            salvage_truncated=source.salvage_truncated,
        )
        stats = PartStats(part=unit.part, inputs=[warc_path])
        with PartWriter(out_dir, unit.part, keep_rejected=self.config.keep_rejected) as writer:
            process_records(
                local,
                warc_path,
                warc_stages(self.config),
                writer,
                stats,
                dump=source.dump,
                batch_size=self.config.engine.batch_size,
                on_batch=lambda n: write_progress(out_dir, unit.part, n),
            )
            if stats.source["truncated_file"]:  # the part commits with what the cut left (counted in stats)
                log.warning("%s is truncated: salvaged %d documents before the cut", warc_path,
                            stats.source["documents"])  # fmt: skip
            stats.seconds = time.perf_counter() - start
            writer.commit(stats)
        if not source.keep_warcs and local.is_relative_to(download_dir(self.config)):
            local.unlink(missing_ok=True)
            local.with_name(local.name + ".complete").unlink(missing_ok=True)


def download_dir(config: RunConfig) -> Path:
    return config.source.download_dir or config.output_dir / "warc-cache"


def plan_units(config: RunConfig) -> list[WorkUnit]:
    """The WARC files of the dump this run processes, one unit each, in listing order."""
    source = config.source
    paths = list_warc_paths(source.cc_base_url, source.dump, retries=source.retries, timeout_s=source.timeout_s)
    selected = select_warc_paths(paths, limit=source.limit_warcs)
    return [WorkUnit(part=part_name(i), inputs=(p,)) for i, p in enumerate(selected)]


DEDUP_DIR = "dedup"
TOKENS_DIR = "tokens"
REPORT_DIR = "report"
VALIDATION_DIR = "validation"


def validate_shards_subprocess(tokens_dir: Path, out_dir: Path, preset: str) -> bool:
    """The GPU hand-off, run locally: the training job in its own process, as on a training node.

    Returns whether the shards passed; the job's report is ``out_dir/validation.json`` either way.
    """
    cmd = [sys.executable, "-m", "validation.validate", str(tokens_dir), "-o", str(out_dir), "--preset", preset]
    log.info("validating shards: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"shard validation could not run (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.returncode == 0


def dedup_enabled(config: RunConfig) -> bool:
    return config.dedup.exact or config.dedup.minhash.enabled


@dataclass
class RunSummary:
    """Where a run's outputs are and what its passes counted."""

    run_dir: Path
    result: PassResult
    stats: PartStats
    documents_dir: Path
    pass_stats: list[PartStats] = field(default_factory=list)
    tokens_dir: Path | None = None
    report_path: Path | None = None
    failed: dict[str, str] = field(default_factory=dict)
    """WARC files that failed (path -> error), tolerated by ``max_failed_parts``: the run completed without them."""
    warnings: list[str] = field(default_factory=list)


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with its folders made absolute here: executors run in other working directories."""
    source = config.source
    if source.download_dir is not None and not source.download_dir.is_absolute():
        source = source.model_copy(update={"download_dir": source.download_dir.resolve()})
    if is_local(source.cc_base_url) and not local_dir(source.cc_base_url).is_absolute():
        source = source.model_copy(update={"cc_base_url": f"{local_dir(source.cc_base_url).resolve()}/"})
    return config.model_copy(update={"output_dir": config.output_dir.resolve(), "source": source})


def warc_pass(config: RunConfig, units: list[WorkUnit], engine: Engine) -> PassResult:
    """The WARC pass into ``<run>``: one part per WARC file; records the config it ran with.

    Up to ``config.max_failed_parts`` failed WARC files are tolerated (the result lists them, and the later
    passes run on the other parts); more, or none finished, raise :class:`RunIncomplete`.
    """
    config = with_absolute_paths(config)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    write_bytes_atomic(run_dir / "config.yaml", recorded.encode())
    try:
        return engine.run_units(units, WarcPass(config), run_dir, description="WARC files")
    except RunIncomplete as e:
        result = e.result
        finished = len(result.done) + len(result.skipped)
        if len(result.failed) > config.max_failed_parts or not finished:
            allowed = f"at most {config.max_failed_parts} may" if config.max_failed_parts else "none may"
            hint = (
                f"\n{len(result.failed)} failed, {allowed} (--max-failed-parts N lets dedup, tokens and the "
                "report run on the other files)"
                if finished
                else ""
            )
            raise RunIncomplete(f"{e}{hint}", result) from None
        log.warning(
            "%d of %d WARC files failed (at most %d allowed by max_failed_parts): the later passes run on "
            "the %d others; rerun the same command to retry the failed ones",
            len(result.failed), len(units), config.max_failed_parts, finished,
        )  # fmt: skip
        return result


def failed_inputs(units: list[WorkUnit], result: PassResult) -> dict[str, str]:
    """``{WARC path: error}`` of the units that failed in ``result``."""
    inputs = {u.part: ", ".join(u.inputs) for u in units}
    return {inputs.get(part, part): error for part, error in sorted(result.failed.items())}


def dedup_pass(config: RunConfig, input_dir: Path, engine: Engine) -> Path:
    """Exact + MinHash dedup of ``input_dir``'s parts into ``<run>/dedup`` (same part names)."""
    from pipeline.dedup.dedup_pass import run_dedup

    out = config.run_dir / DEDUP_DIR
    # a run owns its dedup folder: when the WARC pass's parts changed (a failed file now done), dedup is redone
    run_dedup(input_dir, out, config.dedup, keep_rejected=config.keep_rejected, engine=engine, replace_stale=True)
    return out


def tokenize_pass(config: RunConfig, documents_dir: Path, engine: Engine) -> Path:
    """The final documents into llm.c token shards + manifest in ``<run>/tokens``."""
    from tokenization.tokenize_pass import run_tokenize

    out = config.run_dir / TOKENS_DIR
    run_tokenize(documents_dir, out, config.tokenizer, workers=config.engine.workers, progress=engine.progress,
                 engine=engine)  # fmt: skip
    return out


def run_pipeline(config: RunConfig, *, progress: bool = True, engine: Engine | None = None) -> RunSummary:
    """Run every pass for ``config`` on its engine; each pass resumes whatever an earlier attempt finished.

    Passes, each in its own folder: the WARC pass (``<run>``: download -> filters -> documents), dedup
    (``<run>/dedup``: exact + MinHash), tokenization (``<run>/tokens``), then the report (``<run>/report``).
    The final corpus is the last document pass's ``documents/``.
    """
    with output_lock(config.run_dir, "run"):
        return _run_passes(config, engine or make_engine(config.engine, progress=progress))


def _run_passes(config: RunConfig, engine: Engine) -> RunSummary:
    run_dir = config.run_dir
    units = plan_units(config)
    log.info("run %s: %d WARC files from %s on the %s engine", run_dir, len(units), config.source.cc_base_url,
             engine.kind)  # fmt: skip
    result = warc_pass(config, units, engine)
    pass_dirs = [run_dir]
    if dedup_enabled(config):
        pass_dirs.append(dedup_pass(config, run_dir, engine))
    documents_dir = pass_dirs[-1]
    pass_stats = [total_stats(d) for d in pass_dirs]
    stats = merge_passes(pass_stats)
    warnings = []
    if stats.docs_out == 0:
        warnings.append(no_documents_warning(stats))
        log.info("%s", warnings[-1])  # the caller shows warnings (CLI: at the end)
    tokens_dir = None
    if config.tokenize:
        tokens_dir = tokenize_pass(config, documents_dir, engine)
        if config.validate_shards and stats.docs_out == 0:
            warnings.append("shard validation skipped: there are no tokens to train on")
            log.info("%s", warnings[-1])  # the caller shows warnings (CLI: at the end)
        elif config.validate_shards:
            validate_shards_subprocess(tokens_dir, run_dir / VALIDATION_DIR, config.validation_preset)
    report_path = None
    if config.report:
        from pipeline.report.build import write_report

        report_path = write_report(run_dir).html_path
    return RunSummary(
        run_dir=run_dir,
        result=result,
        stats=stats,
        documents_dir=documents_dir / "documents",
        pass_stats=pass_stats,
        tokens_dir=tokens_dir,
        report_path=report_path,
        failed=failed_inputs(units, result),
        warnings=warnings,
    )


def no_documents_warning(stats: PartStats) -> str:
    """Why a run kept nothing: its largest drop reasons (or that no page was read)."""
    drops: Counter[str] = Counter()
    for stage in stats.stages:
        drops.update(stage.drops)
    if not drops:
        return "no document was kept: no HTML page was read from the WARC files"
    top = ", ".join(f"{key} ({count:,})" for key, count in drops.most_common(3))
    return f"no document was kept: largest drop reasons: {top}"


def merge_passes(passes: list[PartStats]) -> PartStats:
    """One funnel over consecutive passes: the first pass's source counters, every pass's stages in order."""
    total = PartStats(part="run", inputs=list(passes[0].inputs), source=passes[0].source.copy())
    for p in passes:
        total.stages.extend(p.stages)
    total.docs_out = passes[-1].docs_out
    total.seconds = sum(p.seconds for p in passes)
    return total
