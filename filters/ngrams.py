"""Word n-gram repetition measures of Gopher's rules, on integer hashes instead of joined strings.

datatrove builds one Python string per n-gram and per n (nine passes of joins and set or Counter updates).
We hash each document once: a polynomial hash of the text, kept as prefix sums, gives the hash of any run of
words in O(1), so the n-grams of every n are a few array operations, and one grouping pass finds the
repeated n-grams of all n together. The hashes are of the same strings datatrove compares: words joined by
a space for the top n-gram rules, words glued together without a separator for the duplicated n-gram rules
(so, as in datatrove, glued "ab"+"c" and "a"+"bc" are the same n-gram). Keys are 64-bit and include the
length and n: two different n-grams of a document share a key with probability about 2**-64 per pair.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

import numpy as np

_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 2**64)
_LENGTH_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_N_MIX = np.uint64(0x165667B19E3779F9)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_SPACE_CODE = ord(" ") + 1

_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)
_powers_lock = threading.Lock()


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**k and BASE**-k (mod 2**64) for k < size; grown by doubling, shared by the process."""
    global _powers, _inverse_powers
    if len(_powers) < size:
        with _powers_lock:
            if len(_powers) < size:
                n = max(size, 2 * len(_powers), 1 << 16)
                with np.errstate(over="ignore"):
                    powers = np.empty(n, dtype=np.uint64)
                    inverse = np.empty(n, dtype=np.uint64)
                    powers[0] = inverse[0] = 1
                    powers[1:] = np.cumprod(np.full(n - 1, _BASE, dtype=np.uint64))
                    inverse[1:] = np.cumprod(np.full(n - 1, _BASE_INV, dtype=np.uint64))
                _powers, _inverse_powers = powers, inverse
    return _powers, _inverse_powers


class _WordHashes:
    """What the hash of any run of words needs, gathered once per document at word starts and ends.

    With P the prefix sums of code[j] * BASE**-j, the hash of ``codes[a:b]`` is BASE**(b-1) * (P[b] - P[a]),
    i.e. sum_j code[j] * BASE**(b-1-j): it depends on the characters only, not on where they sit.
    """

    def __init__(self, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        powers, inverse = _power_tables(len(codes) + 1)
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(codes * inverse[: len(codes)], out=prefix[1:])
        self.starts = starts
        self.ends = ends
        self._prefix_at_start = prefix[starts]
        self._prefix_at_end = prefix[ends]
        self._power_at_end = powers[ends - 1]

    def keys(self, n: int) -> np.ndarray:
        """One key per n-gram: its characters' hash, its length and n, mixed (a strong high half)."""
        m = len(self.starts) - n + 1
        lengths = (self.ends[n - 1 :] - self.starts[:m]).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = self._power_at_end[n - 1 :] * (self._prefix_at_end[n - 1 :] - self._prefix_at_start[:m])
            h += lengths * _LENGTH_MIX + np.uint64(n) * _N_MIX
            h ^= h >> np.uint64(31)
            h *= _MIX
            h ^= h >> np.uint64(29)
        return h

    def chars(self, n: int, positions: np.ndarray) -> np.ndarray:
        """Characters of the n-grams starting at ``positions`` (separators included when there are any)."""
        return self.ends[positions + n - 1] - self.starts[positions]


class _Repeats:
    """For each n, the n-grams that occur more than once, found in one pass over the keys of all n.

    Per n: ``later`` (sorted positions of second and later occurrences), their n-gram ``group`` and that
    group's ``first`` position; ``top_count`` (the highest count, 1 if nothing repeats) and ``top_first``
    (earliest position of an n-gram with that count).
    """

    def __init__(self, hashes: _WordHashes, ns: Sequence[int]) -> None:
        n_words = len(hashes.starts)
        self.ns = [n for n in ns if n_words - n + 1 > 0]
        sizes = [n_words - n + 1 for n in self.ns]
        self._offsets = np.cumsum([0, *sizes])
        self.later: dict[int, np.ndarray] = {}
        self.group: dict[int, np.ndarray] = {}
        self.first: dict[int, np.ndarray] = {}
        self.top_count = dict.fromkeys(self.ns, 1)
        self.top_first = dict.fromkeys(self.ns, 0)
        if self.ns:
            self._find(np.concatenate([hashes.keys(n) for n in self.ns]))

    def _find(self, keys: np.ndarray) -> None:
        """Drop keys into >= 8 buckets per key by their high bits; sort and compare only crowded buckets."""
        bits = min(max(len(keys).bit_length() + 3, 6), 40)
        bucket = (keys >> np.uint64(64 - bits)).astype(np.intp)
        positions = np.flatnonzero(np.bincount(bucket, minlength=1 << bits)[bucket] > 1)
        if positions.size == 0:
            return
        order = np.argsort(keys[positions], kind="stable")  # stable: a group's first member is its earliest
        ordered_positions = positions[order]
        ordered = keys[ordered_positions]
        new_run = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        if new_run.all():
            return
        run_starts = np.flatnonzero(new_run)
        counts = np.diff(np.append(run_starts, len(ordered)))
        group = np.cumsum(new_run) - 1
        group_first = ordered_positions[run_starts]
        # Which n each group belongs to, from the block its (global) position falls in.
        group_block = np.searchsorted(self._offsets, group_first, side="right") - 1
        later_mask = ~new_run
        later_global = ordered_positions[later_mask]
        later_group = group[later_mask]
        by_position = np.argsort(later_global)
        later_global, later_group = later_global[by_position], later_group[by_position]
        later_block = group_block[later_group]
        for b, n in enumerate(self.ns):
            offset = self._offsets[b]
            in_block = later_block == b
            if in_block.any():
                g = later_group[in_block]
                self.later[n] = later_global[in_block] - offset
                self.group[n] = g
                self.first[n] = group_first[g] - offset
            block_groups = group_block == b
            top = int(counts[block_groups].max(initial=1))
            if top > 1:
                self.top_count[n] = top
                self.top_first[n] = int(group_first[block_groups & (counts == top)].min() - offset)


class WordNgrams:
    """One document's words, ready to answer Gopher's n-gram questions.

    Words hold no whitespace (they come from whitespace-free chunks), so in ``" ".join(words)`` every space
    is a word boundary: word offsets come from the spaces, without a Python loop over the words.
    """

    def __init__(self, words: list[str], top_ns: Sequence[int] = (), dup_ns: Sequence[int] = ()) -> None:
        self.n_words = len(words)
        self._top: _Repeats | None = None
        self._dup: _Repeats | None = None
        if not words:
            return
        spaced = np.frombuffer(" ".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        codes = spaced.astype(np.uint64) + 1  # +1: a NUL character still moves the hash
        is_space = codes == _SPACE_CODE
        spaces = np.flatnonzero(is_space)
        index = np.arange(self.n_words)
        starts = np.concatenate(([0], spaces + 1))
        ends = np.concatenate((spaces, [len(codes)]))
        self._spaced = _WordHashes(codes, starts, ends)
        self._glued = _WordHashes(codes[~is_space], starts - index, ends - index)
        self._top_ns, self._dup_ns = tuple(top_ns), tuple(dup_ns)

    def top_ngram_chars(self, n: int) -> int | None:
        """datatrove's ``find_top_duplicate``: characters of the most frequent space-joined n-gram, times its count.

        Ties go to the n-gram seen first (``Counter.most_common(1)``). None when there are fewer than n words.
        """
        if self.n_words - n + 1 <= 0:
            return None
        if self._top is None or n not in self._top.top_count:
            self._top = _Repeats(self._spaced, sorted({*self._top_ns, n}))
        top, first = self._top.top_count[n], self._top.top_first[n]
        return int(self._spaced.chars(n, np.array([first]))[0]) * top

    def duplicate_ngram_chars(self, n: int) -> int:
        """datatrove's ``find_all_duplicate``: characters of glued n-grams that repeat an earlier one.

        datatrove walks the words left to right, remembering each n-gram it visits; a repeat adds its
        characters and jumps n words ahead, so the n-grams it jumps over are never remembered. Only the later
        occurrences of a repeated n-gram can be repeats, so we replay the walk on those positions alone.
        """
        if self.n_words - n + 1 <= 1:
            return 0
        if self._dup is None or n not in self._dup.top_count:
            self._dup = _Repeats(self._glued, sorted({*self._dup_ns, n}))
        later = self._dup.later.get(n)
        if later is None:
            return 0
        hits: list[int] = []
        seen: set[int] = set()
        repeated = 0
        next_free = 0
        for p, g, first, chars in zip(
            later.tolist(),
            self._dup.group[n].tolist(),
            self._dup.first[n].tolist(),
            self._glued.chars(n, later).tolist(),
            strict=True,
        ):
            if p < next_free:
                continue  # jumped over
            if g in seen or _visited(first, hits, n):
                repeated += chars
                hits.append(p)
                next_free = p + n
            seen.add(g)
        return repeated


def _visited(position: int, hits: list[int], n: int) -> bool:
    """Whether the walk stopped at ``position``: it skips the n-1 positions after every repeat (hits, sorted)."""
    k = bisect.bisect_left(hits, position)
    return k == 0 or position > hits[k - 1] + n - 1
