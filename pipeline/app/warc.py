"""The WARC pass: download -> read -> URL filter -> extract -> language ID -> quality filters -> documents.

Each selected WARC file becomes one part (``part-NNNNN`` by its position in the selection), so a
rerun maps the same file to the same part and skips it once its marker exists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from filters.registry import build_filter, quality_stages, registered_filters
from filters.url import UrlFilterStage
from pipeline.app.config import RunConfig
from pipeline.core.parts import PartWriter, part_name
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.core.storage import Location, absolute, is_remote, location, scratch_dir, write_bytes_atomic
from pipeline.engines import Engine
from pipeline.engines.base import PassResult, RunIncomplete, WorkUnit, write_progress
from pipeline.report.build import redact
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

    def __call__(self, unit: WorkUnit, out_dir: Location) -> None:
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
            storage_options=source.storage_options,
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
    """The local WARC cache: ``source.download_dir``, else beside the runs on disk, else in local scratch."""
    if config.source.download_dir is not None:
        return config.source.download_dir
    root = location(config.output_dir)
    return scratch_dir() / "warc-cache" if is_remote(root) else root / "warc-cache"


def plan_units(config: RunConfig) -> list[WorkUnit]:
    """The WARC files of the dump this run processes, one unit each, in listing order."""
    source = config.source
    paths = list_warc_paths(source.cc_base_url, source.dump, retries=source.retries, timeout_s=source.timeout_s,
                            storage_options=source.storage_options)  # fmt: skip
    selected = select_warc_paths(paths, limit=source.limit_warcs)
    return [WorkUnit(part=part_name(i), inputs=(p,)) for i, p in enumerate(selected)]


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with its folders made absolute here: executors run in other working directories."""
    source = config.source
    if source.download_dir is not None and not source.download_dir.is_absolute():
        source = source.model_copy(update={"download_dir": source.download_dir.resolve()})
    if is_local(source.cc_base_url) and not local_dir(source.cc_base_url).is_absolute():
        source = source.model_copy(update={"cc_base_url": f"{local_dir(source.cc_base_url).resolve()}/"})
    return config.model_copy(update={"output_dir": str(absolute(config.output_dir)), "source": source})


def run_warc_pass(config: RunConfig, units: list[WorkUnit], engine: Engine) -> PassResult:
    """The WARC pass into ``<run>``: one part per WARC file; records the config it ran with.

    Up to ``config.max_failed_parts`` failed WARC files are tolerated (the result lists them, and the later
    passes run on the other parts); more, or none finished, raise :class:`RunIncomplete`.
    """
    config = with_absolute_paths(config)
    run_dir = config.run_dir
    recorded = yaml.safe_dump(redact(config.model_dump(mode="json")), sort_keys=False)  # e.g. a Spark secret
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
