"""Exact and MinHash near-duplicate dedup.

- :mod:`pipeline.dedup.config`: ``DedupConfig`` / ``MinHashConfig`` and the LSH S-curve helpers;
- :mod:`pipeline.dedup.minhash`: ``minhash_signatures`` and ``band_hashes``, the engine-agnostic signature code;
- :mod:`pipeline.dedup.exact`: normalised content hashes;
- :mod:`pipeline.dedup.clustering`: band buckets -> candidate pairs -> union-find on one machine;
- :mod:`pipeline.dedup.dedup_pass`: ``run_dedup``, the resumable pass over ``documents/part-*.parquet``.
"""

from __future__ import annotations

from pipeline.dedup.config import DedupConfig, MinHashConfig
from pipeline.dedup.minhash import band_hashes, minhash_signatures

__all__ = ["DedupConfig", "MinHashConfig", "band_hashes", "minhash_signatures"]
