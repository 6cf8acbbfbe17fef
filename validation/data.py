"""Token data for training and evaluation: counts, entropy, the capped vocabulary, batches and val windows.

Everything reads the shards as memory maps (``tokenization.shards.load_tokens``), so shards of 100M tokens
cost only the windows actually used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokenization.shards import load_tokens

_CHUNK = 1 << 22  # tokens per bincount


def token_counts(paths: list[Path], vocab_size: int, limit: int | None = None) -> np.ndarray:
    """Token id counts over shards (at most ``limit`` tokens, taken evenly from each), chunk by chunk."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    per_shard = None if limit is None else max(1, limit // max(1, len(paths)))
    for path in paths:
        tokens = load_tokens(path)
        end = tokens.size if per_shard is None else min(tokens.size, per_shard)
        for start in range(0, end, _CHUNK):
            counts += np.bincount(np.asarray(tokens[start : min(end, start + _CHUNK)]), minlength=vocab_size)
    return counts


def entropy_nats(counts: np.ndarray) -> float:
    """Entropy of the empirical distribution given by ``counts``, in nats."""
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class VocabMap:
    """Token id -> model class. Identity for a full-vocabulary model."""

    lut: np.ndarray | None
    """int64 table over the tokenizer's ids, or None for the identity."""
    size: int

    @classmethod
    def build(cls, train_counts: np.ndarray, cap: int | None) -> VocabMap:
        vocab_size = train_counts.size
        if cap is None or cap >= vocab_size:
            return cls(None, vocab_size)
        keep = np.argsort(-train_counts, kind="stable")[: cap - 1]
        lut = np.full(vocab_size, cap - 1, dtype=np.int64)
        lut[keep] = np.arange(cap - 1, dtype=np.int64)
        return cls(lut, cap)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        return tokens.astype(np.int64) if self.lut is None else self.lut[tokens]

    def counts(self, full_counts: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return full_counts
        return np.bincount(self.lut, weights=full_counts, minlength=self.size)


class Batches:
    """Random contiguous windows from the train shards (each shard weighted by its number of windows)."""

    def __init__(self, paths: list[Path], block_size: int, vocab: VocabMap, device: torch.device, seed: int) -> None:
        self.tokens = [load_tokens(p) for p in paths]
        self.tokens = [t for t in self.tokens if t.size >= block_size + 1]
        windows = np.array([t.size - block_size for t in self.tokens], dtype=np.float64)
        self.weights = windows / windows.sum()
        self.block_size = block_size
        self.vocab = vocab
        self.device = device
        self.rng = np.random.default_rng(seed)

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        shards = self.rng.choice(len(self.tokens), size=batch_size, p=self.weights)
        rows = []
        for s in shards:
            start = int(self.rng.integers(0, self.tokens[s].size - self.block_size))
            rows.append(np.asarray(self.tokens[s][start : start + self.block_size + 1]))
        return to_device(self.vocab.apply(np.stack(rows)), self.device)


def to_device(windows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) from windows of block_size + 1 tokens; pinned, asynchronous copy on CUDA."""
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def eval_windows(paths: list[Path], block_size: int, max_tokens: int, vocab: VocabMap) -> np.ndarray:
    """Fixed, non-overlapping windows of block_size + 1 tokens spread evenly over the val shards."""
    tokens = np.concatenate([np.asarray(load_tokens(p)) for p in paths]) if len(paths) > 1 else load_tokens(paths[0])
    span = block_size + 1
    count = max(1, min(max_tokens // block_size, tokens.size // span))
    starts = np.linspace(0, tokens.size - span, count).astype(np.int64)
    return vocab.apply(np.stack([np.asarray(tokens[s : s + span]) for s in starts]))


def shuffled_windows(windows: np.ndarray, seed: int) -> np.ndarray:
    """The same tokens in random order: context destroyed, token frequencies kept."""
    flat = windows.reshape(-1).copy()
    np.random.default_rng(seed).shuffle(flat)
    return flat.reshape(windows.shape)
