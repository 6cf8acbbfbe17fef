"""The dedup pass: ``documents/part-*.parquet`` in, the same parts without duplicates out.

Three steps, each resumable on its own, all intermediate files under ``<output>/_work``:

1. sign (per input part, in parallel): normalised-content hash, MinHash signature and band hashes of
   every document -> ``_work/signatures/part-N.parquet`` (id, url, dump, hashes, bands) and
   ``part-N.sig.npy`` (low 32 bits of the signature, for verifying candidate pairs), then a marker.
   Texts are read here and once more in step 3; they are never all in memory.
2. cluster (one process): documents are numbered by (id, part, row), so every choice below is by
   smallest document id and independent of input order, part count and workers. Exact dedup first:
   one document per (scope, content hash). Then MinHash over the survivors that have a signature
   (band buckets -> candidate pairs -> verified pairs -> union-find, :mod:`pipeline.dedup.clustering`).
   The kept document of a cluster is its smallest id; ``dup_cluster_id`` is that id and
   ``dup_cluster_size`` counts every document of the cluster (exact and near copies). Results go to
   ``_work/clusters/assign/part-N.parquet``, the linked pairs (union-find edges, by id) to
   ``_work/clusters/links.parquet`` and the statistics to ``<output>/dedup_clusters.json``, then ``done.json``.
3. apply (per part, in parallel): stream the input part again, run the two drop stages
   (``exact_dedup``, ``minhash_dedup``, reason ``duplicate``) through :func:`pipeline.core.stage.run_chain`
   and write the part with :class:`pipeline.core.parts.PartWriter` (stats funnel, markers, rejected rows).

Killing the pass at any point and rerunning it gives every kept document exactly once: finished
signature parts and output parts are skipped by their markers, clustering is redone unless it
finished, and it is deterministic anyway. ``_work/fingerprint.json`` refuses to mix a rerun with
different input parts or settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.lock import LOCK_FILE, output_lock
from pipeline.core.parts import DOCUMENTS, PartWriter, done_parts, marker_path
from pipeline.core.stage import run_chain, with_drop_reasons
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    Location,
    absolute,
    list_files,
    list_names,
    local_copy,
    location,
    read_bytes,
    read_files,
    remove,
    remove_tree,
)
from pipeline.dedup.clustering import write_json_atomic
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.signatures import (
    ASSIGN,
    CLUSTER_REPORT,
    CLUSTERS,
    EXACT_DUP,
    NEAR_DUP,
    SIGNATURES,
    WORK,
    SignPart,
)
from pipeline.engines.base import Engine, PassResult, WorkUnit, write_progress

log = logging.getLogger(__name__)

EXACT_STAGE = "exact_dedup"
MINHASH_STAGE = "minhash_dedup"
REASON = "duplicate"
ROW = "_row"
"""Temporary column: a row's position in its input part, the key into the part's cluster assignment."""
_FINGERPRINT_VERSION = 1

__all__ = ["CLUSTER_REPORT", "EXACT_STAGE", "MINHASH_STAGE", "input_units", "run_dedup"]


# ---------------------------------------------------------------- inputs and fingerprint


def input_units(input_dir: Location | str) -> list[WorkUnit]:
    """One unit per finished input part (it has a marker); unfinished parts are left out with a warning.

    Inputs are named by absolute path or URL, so a unit means the same file in any process.
    """
    input_dir = absolute(location(input_dir))
    names = done_parts(input_dir)
    present = {n.removesuffix(".parquet") for n in list_names(input_dir / DOCUMENTS, ".parquet", "part-")}
    if unfinished := sorted(present - set(names)):
        log.warning("%d input parts have no marker and are not deduplicated: %s", len(unfinished), unfinished[:5])
    if not names:
        raise FileNotFoundError(f"no finished parts in {input_dir} (expected {DOCUMENTS}/part-*.parquet and markers)")
    return [WorkUnit(part=n, inputs=(str(input_dir / DOCUMENTS / f"{n}.parquet"),)) for n in names]


def fingerprint(units: list[WorkUnit], config: DedupConfig) -> dict:
    """What the intermediate files depend on: input parts (name, marker rows, size) and result-changing settings."""
    parts = []
    sizes: dict[str, dict[str, int]] = {}
    paths = [location(unit.inputs[0]) for unit in units]
    markers = read_files([marker_path(path.parent.parent, unit.part) for unit, path in zip(units, paths, strict=True)])
    for unit, path, marker in zip(units, paths, markers, strict=True):
        folder = str(path.parent)
        if folder not in sizes:  # one listing per input folder, not one request per part
            sizes[folder] = {name: info.size for name, info in list_files(path.parent).items()}
        rows = None if isinstance(marker, Exception) else json.loads(marker).get("rows")
        if path.name not in sizes[folder]:
            raise FileNotFoundError(f"{path}: input part not found")
        parts.append([unit.part, rows, sizes[folder][path.name]])
    settings = config.model_dump(mode="json", include={"scope", "exact", "minhash"})
    return {"version": _FINGERPRINT_VERSION, "config": settings, "parts": parts}


class StaleDedupOutput(ValueError):
    """The output folder holds dedup work made from other input parts or settings."""


def check_fingerprint(work: Location, expected: dict) -> None:
    path = work / "fingerprint.json"
    try:
        found = json.loads(read_bytes(path))  # one GET on a store (a missing file: not two requests)
    except FileNotFoundError:
        write_json_atomic(path, expected)
        return
    if found != expected:
        raise StaleDedupOutput(
            f"{work} was made from other input parts or dedup settings; "
            "use a new output folder (or delete it) to dedup this input"
        )


# ---------------------------------------------------------------- step 3: apply


@dataclass
class DedupDropStage:
    """Marks rows the cluster step decided to drop at this stage; also fills the cluster columns.

    Pure given its assignment (one part's decisions, indexed by the ``_row`` column).
    """

    name: str
    code: int
    stage_codes: np.ndarray
    cluster_ids: pa.Array
    cluster_sizes: pa.Array

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.column(ROW).to_numpy()
        take = pa.array(rows)
        for column, values in (("dup_cluster_id", self.cluster_ids), ("dup_cluster_size", self.cluster_sizes)):
            table = table.set_column(table.column_names.index(column), column, values.take(take))
        drop = pa.array(self.stage_codes[rows] == self.code)
        reasons = pc.if_else(drop, pa.scalar(REASON, pa.string()), pa.scalar(None, pa.string()))
        return with_drop_reasons(table, reasons)


@dataclass
class ApplyPart:
    """Step 3 for one part: the input part minus its duplicates, written with stats and marker (picklable)."""

    config: DedupConfig
    work: str
    """The pass's work folder (a path or URL: a string pickles the same to any executor)."""
    keep_rejected: bool = False

    def __call__(self, unit: WorkUnit, out_dir: Location | str) -> None:
        (path,) = unit.inputs
        start = time.perf_counter()
        # small: one GET (a Parquet reader on a store asks for the size, the footer, then the data)
        assign_file = location(self.work) / CLUSTERS / ASSIGN / f"{unit.part}.parquet"
        assign = pq.read_table(pa.BufferReader(read_bytes(assign_file)))
        codes = assign.column("stage").to_numpy()
        ids = assign.column("dup_cluster_id").combine_chunks()
        sizes = assign.column("dup_cluster_size").combine_chunks()
        stages = []
        if self.config.exact:
            stages.append(DedupDropStage(EXACT_STAGE, EXACT_DUP, codes, ids, sizes))
        if self.config.minhash.enabled:
            stages.append(DedupDropStage(MINHASH_STAGE, NEAR_DUP, codes, ids, sizes))
        stats = PartStats(part=unit.part, inputs=[path])
        seen = 0
        with (
            local_copy(location(path)) as source,  # on a store one streamed GET, not ranged reads
            PartWriter(out_dir, unit.part, keep_rejected=self.keep_rejected) as writer,
        ):
            for batch in pq.ParquetFile(source).iter_batches(batch_size=self.config.batch_size):
                table = pa.Table.from_batches([batch])
                table = _with_cluster_columns(table).append_column(
                    ROW, pa.array(np.arange(seen, seen + table.num_rows, dtype=np.int64))
                )
                seen += table.num_rows
                if seen > len(codes):
                    raise ValueError(f"{path} has more rows than when it was signed; rerun in a new output folder")
                kept, rejected = run_chain(stages, table, stats)
                writer.write(kept, rejected)
                write_progress(out_dir, unit.part, seen)
            if seen != len(codes):
                raise ValueError(f"{path} has {seen} rows, {len(codes)} when it was signed")
            stats.seconds = time.perf_counter() - start
            writer.commit(stats)


def _with_cluster_columns(table: pa.Table) -> pa.Table:
    for name, kind in (("dup_cluster_id", pa.string()), ("dup_cluster_size", pa.int32())):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table


# ---------------------------------------------------------------- the pass


def _engine(engine: Engine | None, workers: int, progress: bool) -> Engine:
    from pipeline.engines.local import LocalEngine

    return engine if engine is not None else LocalEngine(workers=workers, progress=progress)


def sign_parts(
    units: list[WorkUnit],
    output_dir: Location | str,
    config: DedupConfig,
    *,
    workers: int = 1,
    progress: bool = False,
    engine: Engine | None = None,
) -> None:
    _engine(engine, workers, progress).run_units(
        units, SignPart(config), location(output_dir) / WORK / SIGNATURES, description="dedup: signatures"
    )


def apply_parts(
    units: list[WorkUnit],
    output_dir: Location | str,
    config: DedupConfig,
    *,
    workers: int = 1,
    progress: bool = False,
    keep_rejected: bool = False,
    engine: Engine | None = None,
) -> PassResult:
    output_dir = location(output_dir)
    apply = ApplyPart(config, str(output_dir / WORK), keep_rejected)
    return _engine(engine, workers, progress).run_units(units, apply, output_dir, description="dedup: write parts")


def run_dedup(
    input_dir: Location | str,
    output_dir: Location | str,
    config: DedupConfig,
    *,
    workers: int = 1,
    progress: bool = False,
    keep_rejected: bool = False,
    engine: Engine | None = None,
    replace_stale: bool = False,
) -> PassResult:
    """Deduplicate the finished parts of ``input_dir`` into ``output_dir`` (same part names); resumable.

    ``engine`` runs the per-part steps (default: the local engine with ``workers`` processes); a Spark
    engine also clusters with Spark SQL. An output folder made from other input parts or settings is an
    error, unless ``replace_stale`` (a run's own dedup folder): then it is emptied and dedup starts over.
    Both folders may be local paths or store URLs; every work file goes under ``output_dir``.
    """
    output_dir = absolute(location(output_dir))
    units = input_units(input_dir)
    with output_lock(output_dir, "dedup"):
        return _dedup(units, output_dir, config, _engine(engine, workers, progress), keep_rejected, replace_stale)


def _dedup(
    units: list[WorkUnit], output_dir: Location, config: DedupConfig, engine: Engine, keep_rejected: bool,
    replace_stale: bool,
) -> PassResult:  # fmt: skip
    work = output_dir / WORK
    try:
        check_fingerprint(work, fingerprint(units, config))
    except StaleDedupOutput:
        if not replace_stale:
            raise
        log.warning("the input of %s changed since it was deduplicated: redoing dedup from scratch", output_dir)
        _empty_folder(output_dir, keep=LOCK_FILE)
        check_fingerprint(work, fingerprint(units, config))
    if not {u.part for u in units} <= set(done_parts(output_dir)):  # one listing, not one request per part
        start = time.perf_counter()
        sign_parts(units, output_dir, config, engine=engine)
        log.info("dedup signatures: %.1f s", time.perf_counter() - start)
        start = time.perf_counter()
        engine.cluster_duplicates(output_dir, [u.part for u in units], config)
        log.info("dedup clustering: %.1f s", time.perf_counter() - start)
    return apply_parts(units, output_dir, config, keep_rejected=keep_rejected, engine=engine)


def _empty_folder(folder: Location, keep: str) -> None:
    """Delete everything in ``folder`` but the file ``keep`` (the lock this run holds), from one listing."""
    files = list_files(folder)
    for name in list_names(folder):
        if name in files:
            if name != keep:
                remove(folder / name)
        else:
            remove_tree(folder / name)
