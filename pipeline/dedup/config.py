"""Dedup settings: exact dedup, MinHash LSH (FineWeb's 14 bands x 8 rows) and how to pick bands/rows.

With ``b`` bands of ``r`` rows, two documents of Jaccard similarity ``J`` share at least one band (become
a candidate pair) with probability ``1 - (1 - J**r)**b``: the S-curve. For FineWeb's 14 x 8 that is
~0.92 at J=0.8 and ~0.99 at J=0.85, and ~0.05 at J=0.5. :func:`choose_bands_rows` picks ``(b, r)`` for
a target threshold the way datasketch's ``MinHashLSH`` does (least weighted false-positive and
false-negative area under/over the curve), and :func:`format_s_curve` prints the curve for a choice.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.core.settings import Settings


class MinHashConfig(Settings):
    """MinHash signatures and LSH banding; defaults are FineWeb's (5-grams, 14 bands x 8 rows, 64-bit hashes)."""

    enabled: bool = Field(True, description="Run near-duplicate (MinHash) dedup.")
    ngram_size: int = Field(5, ge=1, le=64, description="Words per shingle.")
    bands: int = Field(14, ge=1, le=1024, description="LSH bands; a pair sharing one band is a candidate.")
    rows: int = Field(8, ge=1, le=64, description="MinHash values per band.")
    seed: int = Field(
        1, ge=0, le=2**32 - 1, description="Seed of the permutations and shingle hashes; same on every worker."
    )
    verify_threshold: float | None = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description=(
            "Link a candidate pair only if its Jaccard similarity estimated from the full signature reaches this; "
            "null links every pair that shares a band, as FineWeb's LSH does."
        ),
    )

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @model_validator(mode="after")
    def _size(self) -> MinHashConfig:
        if self.bands * self.rows > 4096:
            raise ValueError(f"bands x rows = {self.bands * self.rows} is more than 4096 permutations")
        return self

    def candidate_probability(self, jaccard: float | np.ndarray) -> float | np.ndarray:
        return candidate_probability(jaccard, self.bands, self.rows)

    def s_curve(self, points: tuple[float, ...] = ()) -> list[tuple[float, float]]:
        return s_curve(self.bands, self.rows, points or S_CURVE_POINTS)

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int = 112, **kwargs: object) -> MinHashConfig:
        """A config whose bands/rows suit ``threshold`` with at most ``num_perm`` permutations.

        Candidate pairs are verified against the same threshold unless ``verify_threshold`` is given.
        """
        bands, rows = choose_bands_rows(threshold, num_perm)
        kwargs.setdefault("verify_threshold", threshold)
        return cls(bands=bands, rows=rows, **kwargs)


class DedupConfig(Settings):
    """The dedup pass: exact dedup by normalised content hash, then MinHash near-dup dedup."""

    scope: Literal["dump", "run"] = Field(
        "dump", description="Deduplicate within each dump (FineWeb's choice) or across the whole run."
    )
    exact: bool = Field(True, description="Drop documents whose normalised text is identical to another's.")
    minhash: MinHashConfig = Field(default_factory=MinHashConfig)
    batch_size: int = Field(2_000, ge=1, description="Documents per Arrow batch when signing and writing.")
    memory_budget_mb: int = Field(
        2_048, ge=64, description="Memory for grouping one band; above it the band is grouped in hash ranges."
    )
    top_clusters: int = Field(20, ge=0, description="Biggest clusters listed in dedup_clusters.json.")


S_CURVE_POINTS = (0.3, 0.5, 0.6, 0.7, 0.72, 0.75, 0.8, 0.85, 0.9, 0.95)


def candidate_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two documents of Jaccard similarity ``jaccard`` share at least one band."""
    j = np.asarray(jaccard, dtype=np.float64)
    p = 1.0 - (1.0 - j**rows) ** bands
    return float(p) if p.ndim == 0 else p


def s_curve(bands: int, rows: int, points: tuple[float, ...] = S_CURVE_POINTS) -> list[tuple[float, float]]:
    return [(float(j), float(candidate_probability(j, bands, rows))) for j in points]


def s_curve_midpoint(bands: int, rows: int) -> float:
    """The similarity where the curve is steepest, ``(1/b)**(1/r)`` (0.72 for 14 x 8)."""
    return (1.0 / bands) ** (1.0 / rows)


def format_s_curve(bands: int, rows: int, points: tuple[float, ...] = S_CURVE_POINTS) -> str:
    lines = [f"{bands} bands x {rows} rows ({bands * rows} permutations), midpoint {s_curve_midpoint(bands, rows):.3f}"]
    lines += [f"  J={j:.2f}: P(candidate)={p:.3f}" for j, p in s_curve(bands, rows, points)]
    return "\n".join(lines)


def _area(bands: int, rows: int, lo: float, hi: float, above: bool) -> float:
    x = np.linspace(lo, hi, 513)
    p = candidate_probability(x, bands, rows)
    y = 1.0 - p if above else p
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def choose_bands_rows(
    threshold: float, num_perm: int = 112, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """Bands and rows (``b * r <= num_perm``) minimising weighted false-positive and false-negative areas.

    False positives: the curve's area below ``threshold``; false negatives: the area it misses above.
    This is datasketch's ``MinHashLSH`` parameter choice, so both libraries agree on a threshold.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _area(bands, rows, 0.0, threshold, above=False)
            fn = _area(bands, rows, threshold, 1.0, above=True)
            error = fp * false_positive_weight + fn * false_negative_weight
            if error < best_error:
                best, best_error = (bands, rows), error
    return best
