"""Step 2 of dedup on one machine (the reference every engine's clustering must match).

Documents are numbered by (id, part, row), so every choice is by smallest document id and independent of
input order, part count and workers. Exact dedup first: one document per (scope, content hash). Then
MinHash over the survivors that have a signature (band buckets -> candidate pairs -> verified pairs ->
union-find, :mod:`pipeline.dedup.clustering`). Results: ``_work/clusters/assign/part-N.parquet``, the
linked pairs in ``_work/clusters/links.parquet``, the statistics in ``<output>/dedup_clusters.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.parts import read_parquet
from pipeline.core.storage import (
    Location,
    download_files,
    is_remote,
    local_copy,
    location,
    read_bytes,
    scratch_dir,
    write_bytes_atomic,
    write_files,
)
from pipeline.dedup.clustering import near_duplicate_clusters, write_json_atomic
from pipeline.dedup.config import DedupConfig, s_curve
from pipeline.dedup.exact import exact_representatives
from pipeline.dedup.signatures import (
    ASSIGN,
    CLUSTER_REPORT,
    CLUSTERS,
    EXACT_DUP,
    KEEP,
    LINKS,
    NEAR_DUP,
    SIGNATURES,
    WORK,
    band_column,
)

log = logging.getLogger(__name__)


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


def _load_meta(sig_dir: Location, names: list[str]) -> _Meta:
    tables = [
        read_parquet(sig_dir / f"{n}.parquet", columns=["id", "dump", "hash_hi", "hash_lo", "empty", "shingles"])
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
    """Band loader and signature gatherer over the spilled parts, both addressed by document number.

    The ``.sig.npy`` files are memory-mapped (random rows are gathered, the whole never sits in memory); the
    band Parquet files are read one column per band. On a store each file is downloaded to local scratch once,
    on first use, and deleted by :meth:`close` (reading a column per band from the store would cost a request
    per band and part).
    """

    def __init__(
        self, sig_dir: Location, meta: _Meta, g_of_l: np.ndarray, l_of_g: np.ndarray, eligible_l: np.ndarray
    ) -> None:
        self.sig_dir = sig_dir
        self.meta = meta
        self.g_of_l = g_of_l
        self.l_of_g = l_of_g
        self.eligible_l = eligible_l
        self._maps: dict[int, np.ndarray] = {}
        self._local: dict[str, Path] = {}
        self._copies = contextlib.ExitStack()

    def close(self) -> None:
        self._maps.clear()
        self._local.clear()
        self._copies.close()

    def _file(self, name: str) -> Path:
        """A local copy of ``name`` under the signatures folder (the file itself on local disk)."""
        if name not in self._local:
            self._local[name] = self._copies.enter_context(local_copy(self.sig_dir / name))
        return self._local[name]

    def load_band(self, band: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        idx, keys = [], []
        full = lo == 0 and hi >= 1 << 64
        for p, name in enumerate(self.meta.names):
            start, stop = self.meta.offsets[p], self.meta.offsets[p + 1]
            column = read_parquet(self._file(f"{name}.parquet"), columns=[band_column(band)]).column(0)
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
            self._maps[part] = np.load(self._file(f"{self.meta.names[part]}.sig.npy"), mmap_mode="r")
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


def _urls(sig_dir: Location, meta: _Meta, loads: np.ndarray) -> list[str]:
    """URLs of a few documents (by load position), read from the spilled parts."""
    parts = np.searchsorted(meta.offsets, loads, side="right") - 1
    out = [""] * len(loads)
    for part in np.unique(parts):
        urls = read_parquet(sig_dir / f"{meta.names[part]}.parquet", columns=["url"]).column(0)
        for i in np.flatnonzero(parts == part):
            out[i] = urls[int(loads[i] - meta.offsets[part])].as_py() or ""
    return out


def cluster(output_dir: Location | str, names: list[str], config: DedupConfig) -> dict:
    """Step 2: decide, for every document, kept / exact duplicate / near duplicate, and its cluster.

    Reads step 1's files and writes its own under ``output_dir`` (a local folder or a store location).
    """
    output_dir = location(output_dir)
    work = output_dir / WORK
    done_file = work / CLUSTERS / "done.json"
    with contextlib.suppress(FileNotFoundError):  # one GET on a store (exists() then a read: up to three)
        return json.loads(read_bytes(done_file))
    with contextlib.ExitStack() as scratch:
        sig_dir: Location = work / SIGNATURES
        if is_remote(sig_dir):  # every file is read at least twice: fetch them all at once, concurrently
            sig_dir = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="signatures-", dir=scratch_dir())))
            files = [work / SIGNATURES / f"{n}{suffix}" for n in names for suffix in (".parquet", ".sig.npy")]
            download_files(files, sig_dir)
        return _cluster(output_dir, sig_dir, names, config)


def _cluster(output_dir: Location, sig_dir: Location, names: list[str], config: DedupConfig) -> dict:
    work = output_dir / WORK
    done_file = work / CLUSTERS / "done.json"
    start = time.perf_counter()
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
        try:
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
        finally:
            files.close()
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
    assignments: dict[Location, bytes] = {}
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
        assignments[assign_dir / f"{name}.parquet"] = sink.getvalue().to_pybytes()
    write_files(assignments)  # on a store concurrently: one request per part, not one after the other
    seconds["assign"] = time.perf_counter() - t

    report = _report(sig_dir, meta, config, l_of_g, final, code, cluster_size, scope, scope_names, eligible, pairs)
    report["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    write_json_atomic(output_dir / CLUSTER_REPORT, report)
    summary = {k: report[k] for k in ("documents", "kept", "exact_duplicates", "near_duplicates")}
    write_json_atomic(done_file, summary)
    log.info("dedup clusters: %s", summary)
    return summary


def _write_links(path: Location, meta: _Meta, l_of_g: np.ndarray, linked: tuple[np.ndarray, ...]) -> None:
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
    sig_dir: Location,
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
