"""Near-duplicate clusters on one machine: band buckets -> candidate pairs -> verified pairs -> union-find.

Documents are numbered ``0..n-1`` in keep-preference order (the pass sorts them by document id), so
"smallest index" is "smallest id" everywhere below and the result does not depend on input order.

- Band buckets: for one band at a time, the documents' band hashes are sorted (numpy) together with
  their scope (dump) and index; every run of equal (scope, hash) is a bucket. Each member is paired
  with the bucket's smallest index (a star, not all pairs: a bucket of k documents gives k-1 pairs).
  Only one band's hashes are in memory at once, and a band larger than the memory budget is grouped
  in slices of the hash range, each read from the spilled Parquet parts separately.
- Candidate pairs of a band are spilled to ``pairs-band-NNN.npy`` (atomic) and reused on rerun.
- Verification (optional, on by default): a pair is linked only if the Jaccard similarity estimated
  from the full signatures (low 32 bits of each of the ``bands * rows`` values) reaches the threshold.
- Union-find: vectorised min-label hooking plus pointer jumping on an int64 array; every component's
  label is its smallest index, i.e. the representative the pass keeps.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.storage import Location, is_remote, list_names, location, write_bytes_atomic, write_file_atomic
from pipeline.dedup.minhash import estimated_jaccard

log = logging.getLogger(__name__)

BandLoader = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]
"""``load(band, lo, hi)`` -> (document indices, band hashes) of eligible documents with ``lo <= hash < hi``."""
SignatureGather = Callable[[np.ndarray], np.ndarray]
"""``gather(indices)`` -> ``(len(indices), num_perm)`` uint32 signature values of those documents."""

BYTES_PER_BAND_ENTRY = 64
"""Working memory per document while grouping one band: hash, index, scope, sort order and copies."""
_HASH_SPACE = 1 << 64


def write_json_atomic(path: Location | str, data: object) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())


def save_array_atomic(path: Location | str, array: np.ndarray) -> None:
    """An ``.npy`` written to a local temporary file with plain writes, then published (renamed or uploaded)."""
    write_file_atomic(path, lambda f: np.save(f, array))


def load_array(path: Location | str) -> np.ndarray:
    """A whole ``.npy`` into memory, from disk or a store (one GET)."""
    path = location(path)
    if is_remote(path):
        return np.load(io.BytesIO(path.read_bytes()))
    return np.load(path)


def bucket_pairs(keys: np.ndarray, scope: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (head, member) for documents sharing (scope, key); head is the bucket's smallest index."""
    if len(members) < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    order = np.lexsort((members, keys, scope))
    k, s, m = keys[order], scope[order], members[order]
    new = np.ones(len(m), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (s[1:] != s[:-1])
    first = np.maximum.accumulate(np.where(new, np.arange(len(m)), 0))
    dup = ~new
    return m[first][dup].astype(np.int64), m[dup].astype(np.int64)


def hash_ranges(entries: int, budget_bytes: int) -> list[tuple[int, int]]:
    """Split the 64-bit hash space into as few equal slices as keep ``entries`` within the budget."""
    slices = max(1, math.ceil(entries * BYTES_PER_BAND_ENTRY / max(budget_bytes, 1)))
    slices = 1 << (slices - 1).bit_length()  # a power of two: slice bounds are exact 64-bit values
    step = _HASH_SPACE // slices
    return [(i * step, (i + 1) * step) for i in range(slices)]


def band_pairs(
    band: int, load: BandLoader, scope: np.ndarray, entries: int, budget_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of one band, grouping slice by slice of the hash range if it does not fit the budget."""
    heads, members = [], []
    for lo, hi in hash_ranges(entries, budget_bytes):
        idx, keys = load(band, lo, hi)
        h, m = bucket_pairs(keys, scope[idx], idx)
        heads.append(h)
        members.append(m)
    return np.concatenate(heads), np.concatenate(members)


def unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs with a < b, sorted."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    code = np.unique(lo[keep].astype(np.int64) * np.int64(n) + hi[keep])
    return code // n, code % n


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label of each of ``n`` nodes under edges (a, b): the smallest node index of its component."""
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]  # roots: parent is fully compressed here
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        open_ = lo != hi
        if not open_.any():
            break
        a, b, lo, hi = a[open_], b[open_], lo[open_], hi[open_]
        np.minimum.at(parent, hi, lo)  # hook each root under the smallest root it touches
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def pair_similarity(a: np.ndarray, b: np.ndarray, gather: SignatureGather, chunk: int = 100_000) -> np.ndarray:
    """Signature-estimated Jaccard similarity of each pair (a[i], b[i]), float32."""
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):
        sa = gather(a[start : start + chunk])
        sb = gather(b[start : start + chunk])
        out[start : start + chunk] = estimated_jaccard(sa, sb)
    return out


@dataclass
class NearDupResult:
    """Union-find labels (smallest index per component) and how many pairs each step produced."""

    labels: np.ndarray
    candidate_pairs: int = 0
    pairs_per_band: list[int] = field(default_factory=list)
    linked: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    )
    """Linked pairs (a, b, estimated Jaccard or NaN without verification): the union-find edges."""

    @property
    def linked_pairs(self) -> int:
        return len(self.linked[0])


def near_duplicate_clusters(
    n: int,
    num_bands: int,
    load: BandLoader,
    scope: np.ndarray,
    entries: int,
    *,
    gather: SignatureGather | None,
    verify_threshold: float | None,
    budget_bytes: int,
    work_dir: Location | str | None = None,
) -> NearDupResult:
    """Band buckets -> candidate pairs (spilled per band) -> verified pairs -> components over ``n`` documents.

    ``entries`` is how many documents take part (sizes the hash-range slices); ``scope`` is indexed by document.
    """
    heads, members, per_band = [], [], []
    work_dir = location(work_dir) if work_dir is not None else None
    spilled = set(list_names(work_dir, ".npy", "pairs-band-")) if work_dir is not None else set()  # one listing
    # on a store a band's spill uploads while the next band is grouped (one request each, not one after the other)
    with ThreadPoolExecutor(max_workers=4 if work_dir is not None and is_remote(work_dir) else 1) as spills:
        saved = []
        for band in range(num_bands):
            path = work_dir / f"pairs-band-{band:03d}.npy" if work_dir is not None else None
            if path is not None and path.name in spilled:
                pairs = load_array(path)
            else:
                h, m = band_pairs(band, load, scope, entries, budget_bytes)
                pairs = np.stack([h, m]) if len(h) else np.empty((2, 0), dtype=np.int64)
                if path is not None:
                    saved.append(spills.submit(save_array_atomic, path, pairs))
            heads.append(pairs[0])
            members.append(pairs[1])
            per_band.append(int(pairs.shape[1]))
    for future in saved:  # all ended (the pool waited): the first failure, if any
        future.result()
    a, b = unique_pairs(np.concatenate(heads), np.concatenate(members), max(n, 1))
    candidates = len(a)
    similarity = np.full(candidates, np.nan, dtype=np.float32)
    if verify_threshold is not None and candidates:
        if gather is None:
            raise ValueError("verification needs the signatures (gather)")
        similarity = pair_similarity(a, b, gather)
        keep = similarity >= np.float32(verify_threshold) - np.float32(1e-6)
        a, b, similarity = a[keep], b[keep], similarity[keep]
    log.info("near-dup: %d candidate pairs, %d linked", candidates, len(a))
    return NearDupResult(
        labels=connected_components(n, a, b),
        candidate_pairs=candidates,
        pairs_per_band=per_band,
        linked=(a, b, similarity),
    )
