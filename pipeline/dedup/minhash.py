"""MinHash signatures for a batch of texts: the one engine-agnostic function every engine calls.

Per batch: FineWeb's text normalisation (:func:`normalize_text`, same output as datatrove's
``simplify_text``), whitespace words, one 64-bit xxh3 hash per word (a C-level ``map``, no Python
loop body), then everything vectorised over the whole batch in numpy: word hashes are folded into
word n-gram (shingle) hashes on the concatenated array, and datatrove's universal hashing
``(a * h + b) mod (2**61 - 1)`` with the same ``a, b`` draws gives ``bands * rows`` minima per document.

Differences from datatrove, on purpose: words are whitespace tokens of the normalised text (datatrove's
English path runs spaCy, which also splits "cannot" or "dont"; after normalisation there is no
punctuation left, so this changes a handful of shingles at most and makes signing language-agnostic),
and a shingle hash combines its words' hashes instead of hashing the joined string.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import regex
import xxhash

from pipeline.dedup.config import MinHashConfig

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
"""Modulus of the permutations; every signature value is below it."""
EMPTY = np.uint64(np.iinfo(np.uint64).max)
"""Signature value of a document with fewer words than one shingle: it has no signature and is never a near-dup."""

_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_FOLD = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 4096
"""Shingles per permutation block: (num_perm x 4096) uint64 stays in the L2 cache."""

# FineWeb's normalisation (datatrove.utils.text.simplify_text): the same characters become spaces.
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
)
_NUMBERS = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?")
_SPACES = re.compile("[" + re.escape(PUNCTUATION) + r"\s]+")
"""Runs of punctuation and whitespace: one pass instead of datatrove's translate, then collapse."""
_MARKS = regex.compile(r"\p{Mn}+")


def normalize_text(text: str) -> str:
    """FineWeb's text normalisation: lowercase, numbers -> 0, punctuation -> space, one space, no diacritics.

    Same result as datatrove's ``simplify_text`` with its default config, several times faster: punctuation
    and whitespace are collapsed by one regex, and diacritics (category Mn after NFD) are removed by one
    regex instead of a Python loop over characters; ASCII texts skip that step. Mn comes from the
    ``regex`` module's Unicode tables, which may know a few marks newer than Python's ``unicodedata``.
    """
    text = _NUMBERS.sub("0", text.lower())
    text = _SPACES.sub(" ", text).strip()
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFD", text)).strip()
    return text


def as_texts(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> list[str]:
    """Python strings from a sequence or an Arrow string column; nulls become empty texts."""
    if isinstance(texts, pa.Array | pa.ChunkedArray):
        texts = texts.to_pylist()
    return [t or "" for t in texts]


def normalize_texts(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> list[str]:
    return [normalize_text(t) for t in as_texts(texts)]


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place: spreads every input bit over the whole word."""
    x ^= x >> np.uint64(33)
    x *= _MIX1
    x ^= x >> np.uint64(33)
    x *= _MIX2
    x ^= x >> np.uint64(33)
    return x


def shingle_hashes(normalized: Sequence[str], ngram_size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of every text, concatenated, and per-text offsets (len n + 1).

    A text with fewer than ``ngram_size`` words has no shingles (as in datatrove).
    """
    words_per_text = [t.split() for t in normalized]
    counts = np.fromiter(map(len, words_per_text), dtype=np.int64, count=len(words_per_text))
    total = int(counts.sum())
    flat = itertools.chain.from_iterable(words_per_text)
    # xxh3 with its default seed: passing seed= per call costs more than the hash itself
    words = np.fromiter(map(xxhash.xxh3_64_intdigest, flat), dtype=np.uint64, count=total)
    if seed:
        words ^= _fmix64(np.array([seed], dtype=np.uint64))[0]
    n_shingles = np.maximum(counts - (ngram_size - 1), 0)
    offsets = np.zeros(len(normalized) + 1, dtype=np.int64)
    np.cumsum(n_shingles, out=offsets[1:])
    if total < ngram_size or offsets[-1] == 0:
        return np.empty(0, dtype=np.uint64), offsets
    # polynomial fold of each window of n word hashes, over the concatenated array
    width = total - ngram_size + 1
    acc = words[:width].copy()
    for k in range(1, ngram_size):
        acc *= _FOLD
        acc += words[k : k + width]
    _fmix64(acc)
    # keep windows that start in a text and end in the same text
    word_starts = np.zeros(len(normalized), dtype=np.int64)
    np.cumsum(counts[:-1], out=word_starts[1:])
    keep = np.repeat(word_starts - offsets[:-1], n_shingles) + np.arange(offsets[-1], dtype=np.int64)
    return acc[keep], offsets


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's permutation parameters ``a`` (in [1, p)) and ``b`` (in [0, p)), same seed -> same draws."""
    gen = np.random.RandomState(seed)
    a = gen.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=(1, num_perm))
    b = gen.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=(1, num_perm))
    return a.reshape(-1), b.reshape(-1)


def signatures_from_shingles(hashes: np.ndarray, offsets: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """Per text, the minimum of ``(a * h + b) mod p`` over its shingle hashes, for each permutation.

    Bit-identical to datatrove's ``MinhashDedupSignature.get_signature`` (64-bit) on the same shingle
    hashes: ``a * h + b`` wraps modulo 2**64 as in datatrove, and the modulo of the Mersenne prime is
    computed with shifts and masks instead of a division. Texts without shingles get :data:`EMPTY`.
    """
    n = len(offsets) - 1
    num_perm = config.num_perm
    out = np.full((n, num_perm), EMPTY, dtype=np.uint64)
    total = int(offsets[-1])
    if total == 0:
        return out
    a, b = permutations(num_perm, config.seed)
    a_col, b_col = a[:, None], b[:, None]
    has = np.flatnonzero(offsets[1:] > offsets[:-1])
    starts = offsets[has]
    x = np.empty((num_perm, _CHUNK), dtype=np.uint64)
    y = np.empty((num_perm, _CHUNK), dtype=np.uint64)
    shift = np.uint64(61)
    for c0 in range(0, total, _CHUNK):
        c1 = min(c0 + _CHUNK, total)
        width = c1 - c0
        xs, ys = x[:, :width], y[:, :width]
        np.multiply(a_col, hashes[None, c0:c1], out=xs)
        xs += b_col
        np.right_shift(xs, shift, out=ys)
        xs &= MERSENNE_PRIME
        xs += ys  # now in [0, p + 7]
        np.subtract(xs, MERSENNE_PRIME, out=ys)  # wraps to a huge value when xs < p
        np.minimum(xs, ys, out=xs)
        first = np.searchsorted(starts, c0, side="right") - 1
        last = np.searchsorted(starts, c1 - 1, side="right") - 1
        docs = has[first : last + 1]
        seg = np.maximum(starts[first : last + 1], c0) - c0
        part = np.minimum.reduceat(xs, seg, axis=1).T
        out[docs] = np.minimum(out[docs], part)
    return out


def minhash_signatures(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray, config: MinHashConfig) -> np.ndarray:
    """MinHash signatures, ``(len(texts), bands * rows)`` uint64, of raw texts (normalised here).

    uint64 because the values are 61-bit (datatrove's 64-bit precision): truncating to 32 bits would
    make unrelated shingles collide once in 4 billion instead of never, and band hashes use all bits.
    Rows of :data:`EMPTY` mark texts too short for one shingle.
    """
    normalized = normalize_texts(texts)
    hashes, offsets = shingle_hashes(normalized, config.ngram_size, config.seed)
    return signatures_from_shingles(hashes, offsets, config)


def has_signature(signatures: np.ndarray) -> np.ndarray:
    """Which rows are real signatures (the text had at least one shingle)."""
    return signatures[:, 0] != EMPTY


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` uint64: one 64-bit hash of each band's ``rows`` values, equal iff the band is (almost surely).

    Two documents are an LSH candidate pair when they share a band hash in the same band column.
    """
    n = signatures.shape[0]
    if signatures.shape[1] != bands * rows:
        raise ValueError(f"signatures have {signatures.shape[1]} values, bands x rows is {bands * rows}")
    view = signatures.reshape(n, bands, rows)
    acc = np.full((n, bands), np.uint64(rows), dtype=np.uint64)
    acc += np.arange(bands, dtype=np.uint64) * _FOLD
    for r in range(rows):
        acc *= _FOLD
        acc ^= view[:, :, r]
        _fmix64(acc)
    return acc


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values: the MinHash estimate of the Jaccard similarity."""
    return (sig_a == sig_b).mean(axis=-1)
