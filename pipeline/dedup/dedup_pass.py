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
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.lock import LOCK_FILE, output_lock
from pipeline.core.parts import DOCUMENTS, PartWriter, done_parts, is_done, marker_path, write_bytes_atomic
from pipeline.core.stage import run_chain, with_drop_reasons
from pipeline.core.stats import PartStats
from pipeline.dedup.clustering import near_duplicate_clusters, write_json_atomic
from pipeline.dedup.config import DedupConfig, s_curve
from pipeline.dedup.exact import content_hashes_from_normalized, exact_representatives
from pipeline.dedup.minhash import band_hashes, normalize_texts, shingle_hashes, signatures_from_shingles
from pipeline.engines import Engine
from pipeline.engines.base import PassResult, WorkUnit, write_progress

log = logging.getLogger(__name__)

WORK = "_work"
SIGNATURES = "signatures"
CLUSTERS = "clusters"
ASSIGN = "assign"
LINKS = "links.parquet"
CLUSTER_REPORT = "dedup_clusters.json"
EXACT_STAGE = "exact_dedup"
MINHASH_STAGE = "minhash_dedup"
REASON = "duplicate"
KEEP, EXACT_DUP, NEAR_DUP = 0, 1, 2
ROW = "_row"
"""Temporary column: a row's position in its input part, the key into the part's cluster assignment."""
_FINGERPRINT_VERSION = 1


def band_column(band: int) -> str:
    return f"band_{band:03d}"


# ---------------------------------------------------------------- inputs and fingerprint


def input_units(input_dir: Path) -> list[WorkUnit]:
    """One unit per finished input part (it has a marker); unfinished parts are left out with a warning."""
    input_dir = Path(input_dir)
    names = done_parts(input_dir)
    present = {p.name.removesuffix(".parquet") for p in (input_dir / DOCUMENTS).glob("part-*.parquet")}
    if unfinished := sorted(present - set(names)):
        log.warning("%d input parts have no marker and are not deduplicated: %s", len(unfinished), unfinished[:5])
    if not names:
        raise FileNotFoundError(f"no finished parts in {input_dir} (expected {DOCUMENTS}/part-*.parquet and markers)")
    return [WorkUnit(part=n, inputs=(str((input_dir / DOCUMENTS / f"{n}.parquet").resolve()),)) for n in names]


def fingerprint(units: list[WorkUnit], config: DedupConfig) -> dict:
    """What the intermediate files depend on: input parts (name, marker rows, size) and result-changing settings."""
    parts = []
    for unit in units:
        path = Path(unit.inputs[0])
        marker = marker_path(path.parent.parent, unit.part)
        rows = json.loads(marker.read_text()).get("rows") if marker.exists() else None
        parts.append([unit.part, rows, path.stat().st_size])
    settings = config.model_dump(mode="json", include={"scope", "exact", "minhash"})
    return {"version": _FINGERPRINT_VERSION, "config": settings, "parts": parts}


class StaleDedupOutput(ValueError):
    """The output folder holds dedup work made from other input parts or settings."""


def check_fingerprint(work: Path, expected: dict) -> None:
    path = work / "fingerprint.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != expected:
            raise StaleDedupOutput(
                f"{work} was made from other input parts or dedup settings; "
                "use a new output folder (or delete it) to dedup this input"
            )
    else:
        write_json_atomic(path, expected)


# ---------------------------------------------------------------- step 1: sign


SIGN_COLUMNS = ["id", "url", "dump", "text"]


def signature_schema(config: DedupConfig) -> pa.Schema:
    fields = [
        pa.field("row", pa.int32()),
        pa.field("id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("dump", pa.string()),
        pa.field("hash_hi", pa.uint64()),
        pa.field("hash_lo", pa.uint64()),
        pa.field("empty", pa.bool_()),
        pa.field("shingles", pa.int32()),
    ]
    if config.minhash.enabled:
        fields += [pa.field(band_column(b), pa.uint64()) for b in range(config.minhash.bands)]
    return pa.schema(fields)


def sign_batch(table: pa.Table, first_row: int, config: DedupConfig) -> tuple[pa.Table, np.ndarray | None]:
    """Hashes and band hashes of one batch (the spilled columns) and its 32-bit signatures."""
    normalized = normalize_texts(table.column("text"))
    hashes = content_hashes_from_normalized(normalized)
    n = table.num_rows
    columns = {
        "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        "id": table.column("id"),
        "url": table.column("url"),
        "dump": table.column("dump"),
        "hash_hi": pa.array(hashes[:, 0]),
        "hash_lo": pa.array(hashes[:, 1]),
        "empty": pa.array(np.fromiter(map(len, normalized), dtype=np.int64, count=n) == 0),
    }
    sig32 = None
    mh = config.minhash
    if mh.enabled:
        shingles, offsets = shingle_hashes(normalized, mh.ngram_size, mh.seed)
        signatures = signatures_from_shingles(shingles, offsets, mh)
        counts = np.diff(offsets)
        columns["shingles"] = pa.array(np.minimum(counts, np.iinfo(np.int32).max).astype(np.int32))
        bands = band_hashes(signatures, mh.bands, mh.rows)
        for b in range(mh.bands):
            columns[band_column(b)] = pa.array(bands[:, b])
        sig32 = (signatures & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    else:
        columns["shingles"] = pa.array(np.zeros(n, dtype=np.int32))
    return pa.table(columns, schema=signature_schema(config)), sig32


@dataclass
class SignPart:
    """Step 1 for one input part: writes its signature Parquet + ``.sig.npy``, then the marker (picklable)."""

    config: DedupConfig

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        (path,) = unit.inputs
        source = pq.ParquetFile(path)
        rows = source.metadata.num_rows
        num_perm = self.config.minhash.num_perm if self.config.minhash.enabled else 0
        table_path = out_dir / f"{unit.part}.parquet"
        sig_path = out_dir / f"{unit.part}.sig.npy"
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(f".{unit.part}.*.tmp"):  # a killed attempt's (one run per output: see lock)
            stale.unlink(missing_ok=True)
        unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp_table = table_path.with_name(f".{table_path.name}.{unique}.tmp")
        tmp_sig = sig_path.with_name(f".{sig_path.name}.{unique}.tmp")
        done = 0
        try:
            # the .npy is written with plain writes, not a memory map: on a full disk a write raises ENOSPC,
            # where a store into a memory map kills the process with SIGBUS
            with (
                open(tmp_sig, "wb") as sig_file,
                pq.ParquetWriter(tmp_table, signature_schema(self.config), compression="zstd") as writer,
            ):
                header = {"descr": np.dtype(np.uint32).str, "fortran_order": False, "shape": (rows, num_perm)}
                np.lib.format.write_array_header_1_0(sig_file, header)
                for batch in source.iter_batches(batch_size=self.config.batch_size, columns=SIGN_COLUMNS):
                    table, sig32 = sign_batch(pa.Table.from_batches([batch]), done, self.config)
                    writer.write_table(table, row_group_size=100_000)
                    if sig32 is not None:
                        sig_file.write(np.ascontiguousarray(sig32, dtype=np.uint32).tobytes())
                    done += table.num_rows
                    write_progress(out_dir, unit.part, done)
                if done != rows:
                    raise ValueError(f"{path}: read {done} rows, its metadata says {rows}")
                sig_file.flush()
                os.fsync(sig_file.fileno())
            tmp_sig.replace(sig_path)
            tmp_table.replace(table_path)
        finally:
            tmp_sig.unlink(missing_ok=True)
            tmp_table.unlink(missing_ok=True)
        write_json_atomic(marker_path(out_dir, unit.part), {"rows": rows})


# ---------------------------------------------------------------- step 2: cluster


@dataclass
class _Meta:
    """Per-document columns of all signature parts, in load order (part after part)."""

    names: list[str]
    offsets: np.ndarray
    ids: pa.Array
    dumps: pa.Array
    hashes: np.ndarray
    empty: np.ndarray
    shingles: np.ndarray


def _load_meta(sig_dir: Path, names: list[str]) -> _Meta:
    tables = [
        pq.read_table(sig_dir / f"{n}.parquet", columns=["id", "dump", "hash_hi", "hash_lo", "empty", "shingles"])
        for n in names
    ]
    sizes = np.array([t.num_rows for t in tables], dtype=np.int64)
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    table = pa.concat_tables(tables) if tables else None

    def col(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    hashes = np.stack([col("hash_hi").to_numpy(), col("hash_lo").to_numpy()], axis=1)
    ids = pc.fill_null(col("id"), "")
    return _Meta(
        names=names,
        offsets=offsets,
        ids=ids,
        dumps=pc.fill_null(col("dump"), ""),
        hashes=hashes,
        empty=col("empty").to_numpy(zero_copy_only=False),
        shingles=col("shingles").to_numpy(),
    )


def keep_order(meta: _Meta) -> np.ndarray:
    """Load positions sorted by (id, part, row): position ``g`` of the result is document number ``g``."""
    n = int(meta.offsets[-1])
    part = np.repeat(np.arange(len(meta.names), dtype=np.int32), np.diff(meta.offsets))
    row = np.arange(n, dtype=np.int64) - meta.offsets[part]
    table = pa.table({"id": meta.ids, "part": part, "row": row})
    keys = [("id", "ascending"), ("part", "ascending"), ("row", "ascending")]
    return pc.sort_indices(table, sort_keys=keys).to_numpy().astype(np.int64)


def scope_codes(dumps: pa.Array, scope: str) -> tuple[np.ndarray, list[str]]:
    """Integer scope per document: its dump's rank among the sorted dump names, or 0 for the whole run."""
    if scope == "run":
        return np.zeros(len(dumps), dtype=np.int32), ["*"]
    names = sorted(pc.unique(dumps).to_pylist())
    return pc.index_in(dumps, pa.array(names, pa.string())).to_numpy().astype(np.int32), names


class _SignatureFiles:
    """Band loader and signature gatherer over the spilled parts, both addressed by document number."""

    def __init__(self, sig_dir: Path, meta: _Meta, g_of_l: np.ndarray, l_of_g: np.ndarray, eligible_l: np.ndarray):
        self.sig_dir = sig_dir
        self.meta = meta
        self.g_of_l = g_of_l
        self.l_of_g = l_of_g
        self.eligible_l = eligible_l
        self._maps: dict[int, np.ndarray] = {}

    def load_band(self, band: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        idx, keys = [], []
        full = lo == 0 and hi >= 1 << 64
        for p, name in enumerate(self.meta.names):
            start, stop = self.meta.offsets[p], self.meta.offsets[p + 1]
            column = pq.read_table(self.sig_dir / f"{name}.parquet", columns=[band_column(band)]).column(0)
            values = column.to_numpy()
            mask = self.eligible_l[start:stop]
            if not full:
                mask = mask & (values >= np.uint64(lo)) & (values <= np.uint64(hi - 1))
            local = np.flatnonzero(mask)
            idx.append(self.g_of_l[start + local])
            keys.append(values[local])
        if not idx:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64)
        return np.concatenate(idx), np.concatenate(keys)

    def _map(self, part: int) -> np.ndarray:
        if part not in self._maps:
            self._maps[part] = np.load(self.sig_dir / f"{self.meta.names[part]}.sig.npy", mmap_mode="r")
        return self._maps[part]

    def gather(self, docs: np.ndarray) -> np.ndarray:
        loads = self.l_of_g[docs]
        parts = np.searchsorted(self.meta.offsets, loads, side="right") - 1
        rows = loads - self.meta.offsets[parts]
        out = None
        for part in np.unique(parts):
            sel = parts == part
            values = self._map(int(part))[np.sort(rows[sel])]  # sorted reads from the memory map
            if out is None:
                out = np.empty((len(docs), values.shape[1]), dtype=np.uint32)
            order = np.argsort(rows[sel], kind="stable")
            target = np.flatnonzero(sel)[order]
            out[target] = values
        return out if out is not None else np.empty((0, 0), dtype=np.uint32)


def _histogram(sizes: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Clusters per exact size, and per power-of-two bucket (1, 2, 3-4, 5-8, ...)."""
    values, counts = np.unique(sizes, return_counts=True)
    exact = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
    buckets: Counter[str] = Counter()
    for v, c in zip(values, counts, strict=True):
        v = int(v)
        hi = 1 << (v - 1).bit_length()
        lo = hi // 2 + 1
        buckets[str(v) if v <= 2 else f"{lo}-{hi}"] += int(c)
    order = sorted(buckets, key=lambda k: int(k.split("-")[0]))
    return exact, {k: buckets[k] for k in order}


def _urls(sig_dir: Path, meta: _Meta, loads: np.ndarray) -> list[str]:
    """URLs of a few documents (by load position), read from the spilled parts."""
    parts = np.searchsorted(meta.offsets, loads, side="right") - 1
    out = [""] * len(loads)
    for part in np.unique(parts):
        urls = pq.read_table(sig_dir / f"{meta.names[part]}.parquet", columns=["url"]).column(0)
        for i in np.flatnonzero(parts == part):
            out[i] = urls[int(loads[i] - meta.offsets[part])].as_py() or ""
    return out


def cluster(output_dir: Path, names: list[str], config: DedupConfig) -> dict:
    """Step 2: decide, for every document, kept / exact duplicate / near duplicate, and its cluster."""
    work = Path(output_dir) / WORK
    done_file = work / CLUSTERS / "done.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    start = time.perf_counter()
    sig_dir = work / SIGNATURES
    meta = _load_meta(sig_dir, names)
    n = int(meta.offsets[-1])
    l_of_g = keep_order(meta)
    g_of_l = np.empty(n, dtype=np.int64)
    g_of_l[l_of_g] = np.arange(n, dtype=np.int64)
    scope_l, scope_names = scope_codes(meta.dumps, config.scope)
    scope = scope_l[l_of_g]
    documents = np.arange(n, dtype=np.int64)
    seconds: dict[str, float] = {"load": time.perf_counter() - start}

    t = time.perf_counter()
    if config.exact:
        exact_rep = exact_representatives(meta.hashes[l_of_g], scope, ~meta.empty[l_of_g])
    else:
        exact_rep = documents.copy()
    seconds["exact"] = time.perf_counter() - t

    t = time.perf_counter()
    mh = config.minhash
    eligible = (exact_rep == documents) & (meta.shingles[l_of_g] > 0)
    pairs: dict[str, object] = {}
    if mh.enabled:
        files = _SignatureFiles(sig_dir, meta, g_of_l, l_of_g, eligible[g_of_l])
        result = near_duplicate_clusters(
            n,
            mh.bands,
            files.load_band,
            scope,
            int(eligible.sum()),
            gather=files.gather,
            verify_threshold=mh.verify_threshold,
            budget_bytes=config.memory_budget_mb << 20,
            work_dir=work / CLUSTERS,
        )
        near = result.labels
        pairs = {"candidates": result.candidate_pairs, "linked": result.linked_pairs, "per_band": result.pairs_per_band}
        _write_links(work / CLUSTERS / LINKS, meta, l_of_g, result.linked)
    else:
        near = documents
    seconds["minhash"] = time.perf_counter() - t

    t = time.perf_counter()
    final = near[exact_rep]
    code = np.full(n, NEAR_DUP, dtype=np.int8)
    code[exact_rep != documents] = EXACT_DUP
    code[final == documents] = KEEP
    cluster_size = np.bincount(final, minlength=n)
    size = cluster_size[final].astype(np.int32)
    assign_dir = work / CLUSTERS / ASSIGN
    for p, name in enumerate(names):
        g = g_of_l[meta.offsets[p] : meta.offsets[p + 1]]
        table = pa.table(
            {
                "stage": pa.array(code[g]),
                "dup_cluster_id": meta.ids.take(pa.array(l_of_g[final[g]])),
                "dup_cluster_size": pa.array(size[g]),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_bytes_atomic(assign_dir / f"{name}.parquet", sink.getvalue().to_pybytes())
    seconds["assign"] = time.perf_counter() - t

    report = _report(sig_dir, meta, config, l_of_g, final, code, cluster_size, scope, scope_names, eligible, pairs)
    report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    write_json_atomic(Path(output_dir) / CLUSTER_REPORT, report)
    summary = {k: report[k] for k in ("documents", "kept", "exact_duplicates", "near_duplicates")}
    write_json_atomic(done_file, summary)
    log.info("dedup clusters: %s", summary)
    return summary


def _write_links(path: Path, meta: _Meta, l_of_g: np.ndarray, linked: tuple[np.ndarray, ...]) -> None:
    """The union-find edges by document id, so any removal can be traced to the pair that caused it."""
    a, b, similarity = linked
    table = pa.table(
        {
            "id": meta.ids.take(pa.array(l_of_g[a])),
            "linked_id": meta.ids.take(pa.array(l_of_g[b])),
            "estimated_jaccard": pa.array(similarity, pa.float32()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


def _report(
    sig_dir: Path,
    meta: _Meta,
    config: DedupConfig,
    l_of_g: np.ndarray,
    final: np.ndarray,
    code: np.ndarray,
    cluster_size: np.ndarray,
    scope: np.ndarray,
    scope_names: list[str],
    eligible: np.ndarray,
    pairs: dict,
) -> dict:
    """The cluster statistics for the dataset report (``dedup_clusters.json``)."""
    n = len(final)
    reps = np.flatnonzero(cluster_size)
    exact_hist, buckets = _histogram(cluster_size[reps])
    top = reps[np.lexsort((reps, -cluster_size[reps]))][: config.top_clusters]
    top = top[cluster_size[top] > 1]
    members_by_rep: dict[int, list[int]] = {int(r): [] for r in top}
    if len(top):
        for g in np.flatnonzero(np.isin(final, top) & (final != np.arange(n))):
            kept = members_by_rep[int(final[g])]
            if len(kept) < 3:
                kept.append(int(g))
    loads = [l_of_g[r] for r in top] + [l_of_g[g] for r in top for g in members_by_rep[int(r)]]
    urls = dict(zip(loads, _urls(sig_dir, meta, np.array(loads, dtype=np.int64)), strict=True)) if loads else {}
    top_clusters = []
    for r in top:
        in_cluster = final == r
        top_clusters.append(
            {
                "id": meta.ids[int(l_of_g[r])].as_py(),
                "url": urls[l_of_g[r]],
                "dump": scope_names[int(scope[r])] if config.scope == "dump" else meta.dumps[int(l_of_g[r])].as_py(),
                "size": int(cluster_size[r]),
                "exact_duplicates": int(np.count_nonzero(in_cluster & (code == EXACT_DUP))),
                "near_duplicates": int(np.count_nonzero(in_cluster & (code == NEAR_DUP))),
                "member_urls": [urls[l_of_g[g]] for g in members_by_rep[int(r)]],
            }
        )
    per_scope = {}
    for s, name in enumerate(scope_names):
        in_scope = scope == s
        per_scope[name] = {"documents": int(in_scope.sum()), "kept": int(np.count_nonzero(in_scope & (code == KEEP)))}
    mh = config.minhash
    return {
        "scope": config.scope,
        "documents": n,
        "kept": int(np.count_nonzero(code == KEEP)),
        "exact_duplicates": int(np.count_nonzero(code == EXACT_DUP)),
        "near_duplicates": int(np.count_nonzero(code == NEAR_DUP)),
        "without_signature": int(np.count_nonzero(meta.shingles == 0)),
        "minhash_eligible": int(eligible.sum()) if mh.enabled else 0,
        "clusters": len(reps),
        "clusters_with_duplicates": int(np.count_nonzero(cluster_size[reps] > 1)),
        "size_histogram": exact_hist,
        "size_buckets": buckets,
        "top_clusters": top_clusters,
        "pairs": pairs,
        "per_scope": per_scope,
        "minhash": {
            **mh.model_dump(mode="json"),
            "num_perm": mh.num_perm,
            "s_curve": [[j, round(p, 4)] for j, p in s_curve(mh.bands, mh.rows)],
        },
        "keep_rule": "smallest document id of each cluster (then part name, then row)",
    }


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
    work: Path
    keep_rejected: bool = False

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        (path,) = unit.inputs
        start = time.perf_counter()
        assign = pq.read_table(self.work / CLUSTERS / ASSIGN / f"{unit.part}.parquet")
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
        with PartWriter(out_dir, unit.part, keep_rejected=self.keep_rejected) as writer:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.config.batch_size):
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
    output_dir: Path,
    config: DedupConfig,
    *,
    workers: int = 1,
    progress: bool = False,
    engine: Engine | None = None,
) -> None:
    _engine(engine, workers, progress).run_units(
        units, SignPart(config), Path(output_dir) / WORK / SIGNATURES, description="dedup: signatures"
    )


def cluster_parts(output_dir: Path, names: list[str], config: DedupConfig, engine: Engine | None = None) -> dict:
    """Step 2 on the engine's machinery: Spark SQL on a Spark engine, numpy on this machine otherwise."""
    spark = getattr(engine, "spark", None)
    if spark is not None:
        from pipeline.dedup.spark_clustering import cluster_spark

        return cluster_spark(spark, output_dir, names, config)
    return cluster(output_dir, names, config)


def apply_parts(
    units: list[WorkUnit],
    output_dir: Path,
    config: DedupConfig,
    *,
    workers: int = 1,
    progress: bool = False,
    keep_rejected: bool = False,
    engine: Engine | None = None,
) -> PassResult:
    return _engine(engine, workers, progress).run_units(
        units, ApplyPart(config, Path(output_dir) / WORK, keep_rejected), output_dir, description="dedup: write parts"
    )


def run_dedup(
    input_dir: Path,
    output_dir: Path,
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
    """
    output_dir = Path(output_dir).resolve()  # executors may run elsewhere: every path they get is absolute
    units = input_units(input_dir)
    with output_lock(output_dir, "dedup"):
        return _dedup(units, output_dir, config, _engine(engine, workers, progress), keep_rejected, replace_stale)


def _dedup(
    units: list[WorkUnit], output_dir: Path, config: DedupConfig, engine: Engine, keep_rejected: bool,
    replace_stale: bool,
) -> PassResult:  # fmt: skip
    work = output_dir / WORK
    try:
        check_fingerprint(work, fingerprint(units, config))
    except StaleDedupOutput:
        if not replace_stale:
            raise
        log.warning("the input of %s changed since it was deduplicated: redoing dedup from scratch", output_dir)
        for entry in output_dir.iterdir():  # all but the lock this run holds
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != LOCK_FILE:
                entry.unlink()
        check_fingerprint(work, fingerprint(units, config))
    if not all(is_done(output_dir, u.part) for u in units):
        start = time.perf_counter()
        sign_parts(units, output_dir, config, engine=engine)
        log.info("dedup signatures: %.1f s", time.perf_counter() - start)
        start = time.perf_counter()
        cluster_parts(output_dir, [u.part for u in units], config, engine)
        log.info("dedup clustering: %.1f s", time.perf_counter() - start)
    return apply_parts(units, output_dir, config, keep_rejected=keep_rejected, engine=engine)
