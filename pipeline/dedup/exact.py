"""Exact dedup: one 128-bit hash of each document's normalised text; one document per hash survives.

The text is normalised as for MinHash (:func:`pipeline.dedup.minhash.normalize_text`), so copies that
differ only in case, whitespace, punctuation, digits or diacritics are exact duplicates. 128 bits
because at Common Crawl scale (10^10 documents) a 64-bit hash would merge unrelated pages.
Documents whose normalised text is empty have nothing to compare and are never exact duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import xxhash

from pipeline.dedup.minhash import normalize_texts


def content_hashes_from_normalized(normalized: Sequence[str]) -> np.ndarray:
    """``(n, 2)`` uint64: xxh3-128 of each normalised text's UTF-8 bytes; all zeros for an empty text."""
    digests = b"".join(xxhash.xxh3_128_digest(t) if t else bytes(16) for t in normalized)
    return np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2).copy()


def content_hashes(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``(n, 2)`` uint64 content hashes of raw texts (normalised here)."""
    return content_hashes_from_normalized(normalize_texts(texts))


def exact_representatives(hashes: np.ndarray, scope: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """For documents indexed in keep-preference order, the index of the one kept for each (scope, hash).

    ``hashes`` is ``(n, 2)``, ``scope`` the integer scope (dump) of each document, ``eligible`` which
    documents take part (non-empty text). The lowest index of each group is its representative; other
    documents point to themselves.
    """
    n = len(hashes)
    rep = np.arange(n, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    if len(idx) < 2:
        return rep
    hi, lo, sc = hashes[idx, 0], hashes[idx, 1], scope[idx]
    order = np.lexsort((idx, lo, hi, sc))  # last key is the primary one
    hi, lo, sc, members = hi[order], lo[order], sc[order], idx[order]
    new_group = np.ones(len(members), dtype=bool)
    new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (sc[1:] != sc[:-1])
    group_first = np.maximum.accumulate(np.where(new_group, np.arange(len(members)), 0))
    rep[members] = members[group_first]
    return rep
