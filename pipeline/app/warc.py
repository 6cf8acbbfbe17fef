"""The WARC pass: download -> read -> URL filter -> extract -> language ID -> quality filters -> documents.

Each selected WARC file becomes one part (``part-NNNNN`` by its position in the selection), so a
rerun maps the same file to the same part and skips it once its marker exists.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from filters.decontaminate import BenchmarkIndex, DecontaminateStage, build_index
from filters.pii import PiiStage
from filters.quality_classifier import QualityClassifierStage
from filters.registry import build_filter, quality_stages, registered_filters
from filters.url import UrlFilterStage
from pipeline.app.config import RunConfig
from pipeline.core.parts import (
    PartWriter,
    chunk_name,
    clear_part,
    done_parts,
    marker_path,
    part_name,
    remove_unfinished,
)
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    Location,
    absolute,
    is_remote,
    location,
    read_bytes,
    read_files,
    scratch_dir,
    write_bytes_atomic,
)
from pipeline.engines import Engine
from pipeline.engines.base import PassResult, RunIncomplete, WorkUnit, write_progress
from pipeline.report.build import redact
from pipeline.sources.commoncrawl import list_warc_paths, select_warc_paths
from pipeline.sources.download import Limits, SourceTruncatedError, fetch_warc, is_local, local_dir
from pipeline.sources.stream import RangesUnsupported, RemoteWarc
from pipeline.sources.warc import (
    BATCH_HTML_BYTES,
    PER_RECORD_GZIP,
    PLAIN,
    SINGLE_GZIP,
    ChunkEnd,
    WarcFile,
    read_warc,
    sync_to_record,
    warc_layout,
)
from pipeline.stages.extraction import ExtractStage
from pipeline.stages.langid import LangIdStage
from pipeline.stages.prescreen import PrescreenStage, prescreen_enabled

log = logging.getLogger(__name__)

BASE_STAGES = ("url_filter", "prescreen", "extract", "langid")
"""Stages every WARC pass starts with (the language pre-screen when it is on); the configured quality filters
follow (FineWeb's order)."""


def stage_names() -> tuple[str, ...]:
    """Every stage ``refinery stage NAME`` can run: the base stages, every registered quality filter, the quality
    classifier, decontamination, then PII."""
    return BASE_STAGES + registered_filters() + ("quality_classifier", "decontaminate", "pii")


def build_stage(name: str, config: RunConfig) -> Stage:
    """The configured stage called ``name``."""
    if name == "url_filter":
        return UrlFilterStage(config.url_filter)
    if name == "prescreen":
        return PrescreenStage(config.langid, max_html_bytes=config.extraction.max_html_bytes)
    if name == "extract":
        return ExtractStage(config.extraction)
    if name == "langid":
        return LangIdStage(config.langid)
    if name in registered_filters():
        return build_filter(name, config.quality)
    if name == "quality_classifier":
        return QualityClassifierStage(config.quality_classifier)
    if name == "decontaminate":
        if not config.decontaminate.enabled:
            raise ValueError("stage 'decontaminate' needs benchmarks: set decontaminate.benchmarks in the config")
        return DecontaminateStage(config.decontaminate)  # builds its benchmark index
    if name == "pii":
        return PiiStage(config.pii)
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")


def warc_stages(config: RunConfig, benchmarks: BenchmarkIndex | None = None) -> list[Stage]:
    """The chain a WARC pass runs on every batch of records; benchmark decontamination (with the run's index,
    ``benchmarks``, built here when not given) after the quality filters, PII anonymisation last, as in FineWeb."""
    off = {"url_filter": not config.url_filter.enabled, "prescreen": not prescreen_enabled(config.langid)}
    names = [n for n in BASE_STAGES if not off.get(n)]
    decontaminate = [DecontaminateStage(config.decontaminate, benchmarks)] if config.decontaminate.enabled else []
    pii = [PiiStage(config.pii)] if config.pii.enabled and config.pii.kinds else []
    classifier = [QualityClassifierStage(config.quality_classifier)] if config.quality_classifier.enabled else []
    quality = quality_stages(config.quality) + classifier
    return [build_stage(n, config) for n in names] + quality + decontaminate + pii


def process_records(
    local_path: Path,
    warc_path: str,
    stages: list[Stage],
    writer: PartWriter,
    stats: PartStats,
    *,
    dump: str,
    batch_size: int,
    batch_bytes: int = BATCH_HTML_BYTES,
    limit: int | None = None,
    on_batch: object = None,
) -> None:
    """Read one WARC file in batches, run the chain, stream kept/dropped rows to ``writer``."""
    seen = 0
    batches = read_warc(
        local_path,
        dump=dump,
        warc_path=warc_path,
        counters=stats.source,
        batch_size=batch_size,
        batch_bytes=batch_bytes,
    )
    for batch in batches:
        if limit is not None:
            if seen >= limit:
                break
            batch = batch.slice(0, limit - seen)
        seen += batch.num_rows
        kept, rejected = run_chain(stages, batch, stats)
        writer.write(kept, rejected)
        if callable(on_batch):
            on_batch(seen)


@dataclass(frozen=True)
class UnitPlan:
    """Which bytes of its WARC file a unit reads: range ``piece`` of ``pieces``, resumed after the chunks an
    earlier attempt committed (``next_chunk`` of them, the next record at byte ``resume_offset``)."""

    piece: int = 0
    pieces: int = 1
    next_chunk: int = 0
    resume_offset: int | None = None
    file: dict | None = None
    """The file the committed chunks were read from (size, ETag): another version means starting over."""


@dataclass
class WarcPass:
    """Turns one WARC file, or one byte range of it (a work unit), into one part: picklable, so any worker can
    run it. The part is committed in chunks of ``source.checkpoint_every`` pages; its last chunk takes the part's
    name, so the part is done exactly when that marker exists."""

    config: RunConfig
    plans: dict[str, UnitPlan] = field(default_factory=dict)
    benchmarks: BenchmarkIndex | None = None
    """The run's benchmark n-gram index, built once in the driver; it travels to the workers with this object."""

    def __call__(self, unit: WorkUnit, out_dir: Location) -> None:
        (warc_path,) = unit.inputs
        source = self.config.source
        plan = self.plans.get(unit.part, UnitPlan())
        warc = warc_file(self.config, warc_path)
        try:
            self.process(unit, out_dir, warc, plan)
        finally:
            if isinstance(warc, RemoteWarc):
                warc.close()
        cached = isinstance(warc, Path) and warc.is_relative_to(download_dir(self.config))
        if not source.keep_warcs and plan.pieces == 1 and cached:
            warc.unlink(missing_ok=True)  # (the ranges of a split file may still be reading it: kept)
            warc.with_name(warc.name + ".complete").unlink(missing_ok=True)

    def process(self, unit: WorkUnit, out_dir: Location, warc: WarcFile, plan: UnitPlan) -> None:
        """Read ``plan``'s range of ``warc`` through the chain, committing a chunk every ``checkpoint_every`` pages
        and the part's last chunk under the part's name."""
        (warc_path,) = unit.inputs
        source = self.config.source
        started = time.perf_counter()
        counts: Counter[str] = Counter()
        start, end, chunk_size = byte_range(warc, plan, source.checkpoint_every, counts)
        identity = file_identity(warc)
        chunk, resume_offset = resume_point(out_dir, unit.part, plan, identity)
        if resume_offset is not None:
            log.info("%s (%s): resuming after %d committed chunks, at byte %d", unit.part, warc_path,
                     chunk, resume_offset)  # fmt: skip
            start = resume_offset
        clear_part(out_dir, unit.part)  # the last chunk of a killed attempt, published without its marker
        chunk_start, seen = start, 0
        stages = warc_stages(self.config, self.benchmarks)
        keep = self.config.keep_rejected
        writer = PartWriter(out_dir, chunk_name(unit.part, chunk), keep_rejected=keep)
        stats = PartStats(part=unit.part, inputs=[warc_path])
        try:
            records = () if start is None else read_warc(
                warc, dump=source.dump, warc_path=warc_path, counters=counts, batch_size=self.config.engine.batch_size,
                batch_bytes=self.config.engine.batch_bytes, start=start, end=end, chunk_size=chunk_size,
            )  # fmt: skip
            for item in records:
                if isinstance(item, ChunkEnd):
                    stats.source, stats.seconds = Counter(counts), time.perf_counter() - started
                    counts.clear()
                    writer.commit(
                        stats, marker={"start_offset": chunk_start, "next_offset": item.offset, "file": identity}
                    )
                    chunk, chunk_start, started = chunk + 1, item.offset, time.perf_counter()
                    writer = PartWriter(out_dir, chunk_name(unit.part, chunk), keep_rejected=keep)
                    stats = PartStats(part=unit.part, inputs=[warc_path])
                    continue
                kept, rejected = run_chain(stages, item, stats)
                writer.write(kept, rejected)
                seen += item.num_rows
                write_progress(out_dir, unit.part, seen)
            if counts["truncated_file"]:  # the part commits with what the cut left (counted in stats)
                if isinstance(warc, RemoteWarc) and not source.salvage_truncated:
                    raise SourceTruncatedError(f"{warc_path} is truncated at the source (salvage_truncated is off)")
                log.warning("%s is truncated: salvaged the documents before the cut", warc_path)
            stats.source, stats.seconds = counts, time.perf_counter() - started
            writer.commit(
                stats, name=unit.part, marker={"start_offset": chunk_start, "chunks": chunk + 1, "file": identity}
            )
        finally:
            if not writer.committed:
                writer.abort()


def file_identity(warc: WarcFile) -> dict:
    """What tells two versions of a WARC file apart without reading it: its size, and the server's ETag."""
    if isinstance(warc, Path):
        return {"size": warc.stat().st_size}
    return {"size": warc.size, "etag": warc.etag}


def resume_point(out_dir: Location, part: str, plan: UnitPlan, identity: dict) -> tuple[int, int | None]:
    """``(next chunk, its first byte)`` for ``part``: after the chunks the plan found committed, and after any a
    retried or concurrent attempt committed since (one read per chunk, a missing marker ends it), so no attempt
    redoes or clears a committed chunk. Chunks read from another version of the file (size or ETag) are removed and
    the part starts over; ``(0, None)`` when nothing is committed."""
    chunk, offset, found = plan.next_chunk, plan.resume_offset, plan.file
    while True:
        try:
            info = json.loads(read_bytes(marker_path(out_dir, chunk_name(part, chunk))))
        except FileNotFoundError:
            break
        chunk, offset, found = chunk + 1, int(info["next_offset"]), info.get("file")
    if chunk and not same_file(found, identity):
        log.warning("%s: the WARC file changed since its %d committed chunks were read (%s, now %s): starting over",
                    part, chunk, found, identity)  # fmt: skip
        for index in range(chunk):
            clear_part(out_dir, chunk_name(part, index))
        return 0, None
    return chunk, offset


def same_file(recorded: dict | None, current: dict) -> bool:
    """Sizes equal, and ETags equal where both are known (chunks of an older version of the project record none)."""
    if not recorded:
        return True
    if recorded.get("size") != current.get("size"):
        return False
    return not (recorded.get("etag") and current.get("etag") and recorded["etag"] != current["etag"])


def warc_file(config: RunConfig, warc_path: str) -> WarcFile:
    """The WARC file to read: a local mirror's file as it is; a remote one read by ranges while it is processed
    (``keep_warcs`` off), else downloaded whole into the cache (kept for later runs)."""
    source = config.source
    if not source.keep_warcs and not is_local(source.cc_base_url):
        try:
            remote = RemoteWarc(
                source.cc_base_url, warc_path, retries=source.retries, timeout_s=source.timeout_s,
                limits=Limits(min_speed_bps=source.min_speed_bytes_s, window_s=source.speed_window_s),
                storage_options=source.storage_options,
            )  # fmt: skip
            try:
                remote.check_warc()
            except BaseException:
                remote.close()
                raise
            return remote
        except RangesUnsupported as e:
            log.warning("%s: downloading it whole instead", e)
    return fetch_warc(
        source.cc_base_url,
        warc_path,
        download_dir(config),
        retries=source.retries,
        timeout_s=source.timeout_s,
        min_speed_bps=source.min_speed_bytes_s,
        speed_window_s=source.speed_window_s,
        deadline_s=source.deadline_s,
        salvage_truncated=source.salvage_truncated,
        storage_options=source.storage_options,
    )


def byte_range(
    local: WarcFile, plan: UnitPlan, checkpoint_every: int, counts: Counter[str]
) -> tuple[int | None, int | None, int | None]:
    """``(start, end, chunk_size)`` of ``plan``'s range of ``local``: ``start`` None for a range holding no record.

    A range starts at the first record boundary at or after its share of the bytes and ends where the next range
    starts, so the ranges hold every record once. A file that is not one gzip member per record cannot be cut:
    its first range reads it whole (counted as ``whole_file_unit`` when a cut or checkpoints were asked for) and
    the others are empty; checkpoints still work in a plain ``.warc`` (any record offset can be read from).
    """
    layout = warc_layout(local)
    chunk_size = checkpoint_every or None
    if layout != PER_RECORD_GZIP:
        if plan.piece > 0:
            return None, None, None
        if layout == SINGLE_GZIP and chunk_size or plan.pieces > 1:
            counts["whole_file_unit"] += 1
        return 0, None, chunk_size if layout == PLAIN else None
    size = local.stat().st_size if isinstance(local, Path) else local.size
    end = None if plan.piece == plan.pieces - 1 else size * (plan.piece + 1) // plan.pieces
    start = 0 if plan.piece == 0 else sync_to_record(local, size * plan.piece // plan.pieces)
    if start is None or (end is not None and start >= end):
        return None, None, None
    return start, end, chunk_size


def download_dir(config: RunConfig) -> Path:
    """The local WARC cache: ``source.download_dir``, else beside the runs on disk, else in local scratch."""
    if config.source.download_dir is not None:
        return config.source.download_dir
    root = location(config.output_dir)
    return scratch_dir() / "warc-cache" if is_remote(root) else root / "warc-cache"


def plan_units(config: RunConfig) -> list[WorkUnit]:
    """The WARC files of the dump this run processes, in listing order, one unit each (or ``split_warcs``)."""
    source = config.source
    paths = list_warc_paths(source.cc_base_url, source.dump, retries=source.retries, timeout_s=source.timeout_s,
                            storage_options=source.storage_options)  # fmt: skip
    return warc_units(select_warc_paths(paths, limit=source.limit_warcs), source.split_warcs)


def warc_units(warc_paths: list[str], split: int = 1) -> list[WorkUnit]:
    """File ``i`` is part ``part-{i:05d}``, or parts ``part-{i:05d}-{j:03d}`` for its ``split`` byte ranges."""
    if split <= 1:
        return [WorkUnit(part=part_name(i), inputs=(p,)) for i, p in enumerate(warc_paths)]
    return [
        WorkUnit(part=f"{part_name(i)}-{j:03d}", inputs=(p,)) for i, p in enumerate(warc_paths) for j in range(split)
    ]


def unit_plans(units: list[WorkUnit], out_dir: Location) -> dict[str, UnitPlan]:
    """Each unit's range of its file (its place among the units of that file) and where it resumes: after the
    chunks of its part already committed, read from one listing of the markers and one read per resumed part."""
    pieces = Counter(u.inputs for u in units)
    seen: Counter[tuple[str, ...]] = Counter()
    plans = {}
    for unit in units:
        plans[unit.part] = UnitPlan(piece=seen[unit.inputs], pieces=pieces[unit.inputs])
        seen[unit.inputs] += 1
    done = set(done_parts(out_dir))
    committed: dict[str, set[int]] = {}
    for name in done:
        part, _, index = name.partition(".")
        if index and part in plans and part not in done:
            committed.setdefault(part, set()).add(int(index))
    chunks: dict[str, int] = {}
    for part, indices in committed.items():
        contiguous = next(i for i in range(len(indices) + 1) if i not in indices) - 1
        for stale in sorted(i for i in indices if i > contiguous):  # after a gap: not a resumable prefix
            log.warning("%s: chunk %d follows a missing chunk: removed, it is read again", part, stale)
            clear_part(out_dir, chunk_name(part, stale))
        if contiguous >= 0:
            chunks[part] = contiguous
    last = {part: marker_path(out_dir, chunk_name(part, index)) for part, index in chunks.items()}
    for (part, index), content in zip(chunks.items(), read_files(list(last.values())), strict=True):
        if isinstance(content, Exception):
            raise content
        info = json.loads(content)
        plans[part] = replace(plans[part], next_chunk=index + 1, resume_offset=int(info["next_offset"]),
                              file=info.get("file"))  # fmt: skip
    return plans


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``config`` with its folders made absolute here: executors run in other working directories."""
    source = config.source
    if source.download_dir is not None and not source.download_dir.is_absolute():
        source = source.model_copy(update={"download_dir": source.download_dir.resolve()})
    if is_local(source.cc_base_url) and not local_dir(source.cc_base_url).is_absolute():
        source = source.model_copy(update={"cc_base_url": f"{local_dir(source.cc_base_url).resolve()}/"})
    return config.model_copy(update={"output_dir": str(absolute(config.output_dir)), "source": source})


def check_layout(run_dir: Location, split_warcs: int) -> None:
    """Refuse to cut the WARC files into another number of ranges (``split_warcs``) than the run that wrote the
    parts already in ``run_dir`` (its ``config.yaml`` says): the same pages would land in two parts."""
    if not done_parts(run_dir):
        return
    try:
        recorded = yaml.safe_load(read_bytes(run_dir / "config.yaml")) or {}
    except FileNotFoundError:
        return
    before = int((recorded.get("source") or {}).get("split_warcs") or 1)
    if before != split_warcs:
        raise ValueError(
            f"{run_dir} holds parts of WARC files cut into {before} range(s) (source.split_warcs), this run cuts "
            f"them into {split_warcs}: rerun with --split-warcs {before}, or write to another output folder"
        )


def run_warc_pass(config: RunConfig, units: list[WorkUnit], engine: Engine) -> PassResult:
    """The WARC pass into ``<run>``: one part per WARC file; records the config it ran with.

    Up to ``config.max_failed_parts`` failed WARC files are tolerated (the result lists them, and the later
    passes run on the other parts); more, or none finished, raise :class:`RunIncomplete`.
    """
    config = with_absolute_paths(config)
    run_dir = config.run_dir
    check_layout(run_dir, config.source.split_warcs)
    recorded = yaml.safe_dump(redact(config.model_dump(mode="json")), sort_keys=False)  # e.g. a Spark secret
    write_bytes_atomic(run_dir / "config.yaml", recorded.encode())
    removed = remove_unfinished(run_dir)
    if removed:
        log.info("removed %d files an earlier attempt left unfinished", removed)
    benchmarks = build_index(config.decontaminate) if config.decontaminate.enabled else None  # once per run
    processor = WarcPass(config, unit_plans(units, run_dir), benchmarks)
    if config.quality_classifier.enabled:  # loaded here once: a bad model fails now; forked workers share it
        QualityClassifierStage(config.quality_classifier).prepare()
    try:
        return engine.run_units(units, processor, run_dir, description="WARC files")
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
