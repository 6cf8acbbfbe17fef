"""Benchmark decontamination: drop documents that share a word n-gram (13 by default, as GPT-3) with a benchmark.

The index is built once per run from the configured benchmark files (JSONL, Parquet or plain text; one chosen text
field) and checked per batch with numpy, never per document in Python:

- normalisation (:func:`normalise`), in Arrow, the same for benchmarks and documents: lower case, every number
  (with its decimal part) becomes ``0``, punctuation, symbols and control characters become spaces, diacritics
  are removed (NFD, then combining marks dropped), words are what whitespace separates. Case, punctuation and
  spacing differences between a benchmark and a page therefore still match, as in datatrove's n-gram
  decontamination (which also splits words with a language's tokenizer; here whitespace splits them, so a
  language written without spaces contributes one long word per run of text).
- hashing: each distinct word of a batch is hashed once (xxh3, stable across processes, so the driver's index
  and the workers' documents agree), an n-gram's hash combines its words' hashes (a polynomial, then a 64-bit
  mixer), vectorised over every window of the batch; windows that cross two documents are discarded.
- the index (:class:`BenchmarkIndex`): one sorted ``uint64`` array of n-gram hashes and a parallel array naming
  the benchmark of each (the first configured one when several hold it). A batch is checked with one
  ``np.searchsorted``. 8 + 2 bytes per distinct n-gram: a 20 MB benchmark (about 3.5 M words) is about 35 MB.

How the index reaches the workers: it travels inside the WARC pass's processor (``WarcPass``), which every engine
already ships to its workers, so nothing else is needed on either engine and no shared filesystem is assumed.
The local engine forks its workers (they inherit the arrays copy-on-write) or pickles the processor (numpy arrays
pickle as raw buffers); the Spark engine pickles it with the task function, which PySpark broadcasts to the
executors once per job when it is over 1 MB. A file in the run folder would need one read per worker process and
a cache keyed by run, for the same bytes.

Entries shorter than ``n`` words contribute no n-gram (as in datatrove and GPT-3): they cannot be matched.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import xxhash

from filters.config import BenchmarkConfig, DecontaminateConfig
from pipeline.core.stage import with_drop_reasons
from pipeline.core.storage import arrow_source, location, read_bytes

log = logging.getLogger(__name__)

NUMBER = r"\p{Nd}+(?:[.,\x{060C}\x{066B}\x{2396}\x{2397}\x{2398}]\p{Nd}+)?"
"""A number in any script, with an optional decimal part (decimal separators of several scripts)."""
NOT_A_WORD = r"[\p{P}\p{S}\p{Cc}]+"
"""Punctuation, symbols and control characters: they separate words and are not part of them."""
COMBINING_MARK = r"\p{Mn}+"

MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
"""Odd, so the polynomial over word hashes is invertible mod 2**64 (the golden-ratio constant)."""

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "text"}


class BenchmarkError(ValueError):
    """A benchmark file that cannot be indexed: missing, unreadable, or without the configured field."""


def normalise(text: pa.Array | pa.ChunkedArray, *, numbers: bool = True) -> pa.Array | pa.ChunkedArray:
    """Lower case, numbers to ``0``, punctuation and symbols to spaces, no diacritics (see the module)."""
    text = pc.utf8_lower(text)
    if numbers:
        text = pc.replace_substring_regex(text, NUMBER, "0")
    text = pc.replace_substring_regex(text, NOT_A_WORD, " ")
    text = pc.utf8_normalize(text, "NFD")
    return pc.replace_substring_regex(text, COMBINING_MARK, "")


def words_of(text: pa.Array | pa.ChunkedArray, *, numbers: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(word hashes, row of each word)`` of normalised ``text``, in reading order (nulls hold no words)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lists = pc.utf8_split_whitespace(normalise(text, numbers=numbers))
    words = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy()
    nonempty = pc.greater(pc.utf8_length(words), 0)  # splitting yields "" at the ends of a text
    words, rows = words.filter(nonempty), rows[nonempty.to_numpy(zero_copy_only=False)]
    if not len(words):
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    encoded = pc.dictionary_encode(words)
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    hashes = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in distinct), np.uint64, len(distinct))
    return hashes[encoded.indices.to_numpy()], rows.astype(np.int64, copy=False)


def mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64's): spreads every input bit over the output bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def ngram_hashes(words: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hash, row)`` of every run of ``n`` consecutive words within one row (runs across rows are dropped)."""
    windows = len(words) - n + 1
    if windows <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    h = words[:windows].copy()
    for k in range(1, n):
        h *= MULTIPLIER
        h += words[k : k + windows]
    inside = rows[:windows] == rows[n - 1 :]
    return mix(h[inside]), rows[:windows][inside]


@dataclass(frozen=True)
class BenchmarkIndex:
    """Every n-gram hash of the benchmarks, sorted, with the benchmark (position in ``names``) that holds it."""

    names: tuple[str, ...]
    n: int
    hashes: np.ndarray
    owners: np.ndarray
    numbers: bool = True
    """Whether numbers were normalised to ``0`` (documents are normalised the same way)."""

    def __len__(self) -> int:
        return len(self.hashes)

    def first_hits(self, text: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per row of ``text``: the first benchmark (in config order) sharing an n-gram with it, or -1."""
        best = np.full(len(text), len(self.names), np.int64)
        if not len(self.hashes):
            return np.full(len(text), -1, np.int64)
        grams, rows = ngram_hashes(*words_of(text, numbers=self.numbers), self.n)
        pos = np.searchsorted(self.hashes, grams)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == grams
        np.minimum.at(best, rows[hit], self.owners[pos[hit]].astype(np.int64))
        best[best == len(self.names)] = -1
        return best


def build_index(config: DecontaminateConfig) -> BenchmarkIndex:
    """Read every configured benchmark and index its n-grams (logs entries, n-grams and seconds per benchmark)."""
    all_hashes, all_owners = [], []
    for owner, benchmark in enumerate(config.benchmarks):
        start = time.perf_counter()
        texts = read_benchmark(benchmark)
        grams, _ = ngram_hashes(*words_of(texts, numbers=config.normalise_numbers), config.n)
        if not len(grams):  # nothing to match: a wrong field, an empty file, or entries all shorter than n
            what = "lines" if benchmark_format(benchmark) == "text" else f"entries of field {benchmark.field!r}"
            raise BenchmarkError(
                f"benchmark {benchmark.name!r}: none of the {len(texts) - texts.null_count:,} {what} in "
                f"{benchmark.path} has {config.n} words (decontaminate.n): nothing to match"
            )
        grams = distinct(grams)
        all_hashes.append(grams)
        all_owners.append(np.full(len(grams), owner, np.uint16))
        log.info("decontaminate: benchmark %s: %d entries, %d distinct %d-grams, indexed in %.2f s",
                 benchmark.name, len(texts), len(grams), config.n, time.perf_counter() - start)  # fmt: skip
    hashes = np.concatenate(all_hashes) if all_hashes else np.empty(0, np.uint64)
    owners = np.concatenate(all_owners) if all_owners else np.empty(0, np.uint16)
    if len(config.benchmarks) > 1:  # by hash, then benchmark: a hash several hold keeps the first benchmark
        order = np.lexsort((owners, hashes))
        hashes, owners = hashes[order], owners[order]
        first = np.ones(len(hashes), bool)
        first[1:] = hashes[1:] != hashes[:-1]
        hashes, owners = hashes[first], owners[first]
    names = tuple(b.name for b in config.benchmarks)
    return BenchmarkIndex(names, config.n, hashes, owners, config.normalise_numbers)


def distinct(values: np.ndarray) -> np.ndarray:
    """``values`` sorted, each once (a sort and a comparison: faster than ``np.unique`` on hashes)."""
    values = np.sort(values)
    keep = np.ones(len(values), bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def benchmark_format(benchmark: BenchmarkConfig) -> str:
    """The configured format, else the one the file name says (``.gz`` aside)."""
    if benchmark.format != "auto":
        return benchmark.format
    name = benchmark.path.lower().removesuffix(".gz")
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise BenchmarkError(
        f"benchmark {benchmark.name!r}: cannot tell the format of {benchmark.path} from its name; "
        f"set format: jsonl, parquet or text"
    )


def read_benchmark(benchmark: BenchmarkConfig) -> pa.Array:
    """The texts of a benchmark: its field's strings (a list of strings counts as several entries), or its lines."""
    kind = benchmark_format(benchmark)
    where = f"benchmark {benchmark.name!r}"
    try:
        if kind == "parquet":
            source, filesystem = arrow_source(location(benchmark.path))
            names = pq.read_schema(source, filesystem=filesystem).names
            if benchmark.field not in names:
                raise BenchmarkError(f"{where}: no field {benchmark.field!r} in {benchmark.path} (fields: {names})")
            column = pq.read_table(source, columns=[benchmark.field], filesystem=filesystem).column(0)
            return entries(column, benchmark)
        data = read_bytes(benchmark.path)
    except FileNotFoundError:
        raise BenchmarkError(f"{where}: file not found: {benchmark.path}") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise BenchmarkError(f"{where}: cannot read {benchmark.path}: {e}") from None
    if benchmark.path.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:  # not gzip, or cut short
            raise BenchmarkError(f"{where}: cannot read {benchmark.path}: {e}") from None
    if not data.strip():
        raise BenchmarkError(f"{where}: {benchmark.path} is empty")
    if kind == "text":
        return pa.array(data.decode("utf-8", "replace").splitlines(), pa.string())
    try:
        table = pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(block_size=1 << 24))
    except pa.ArrowInvalid as e:
        raise BenchmarkError(f"{where}: {benchmark.path} is not JSON lines: {e}") from None
    if benchmark.field not in table.column_names:
        fields = table.column_names
        raise BenchmarkError(f"{where}: no field {benchmark.field!r} in {benchmark.path} (fields: {fields})")
    return entries(table.column(benchmark.field), benchmark)


def entries(column: pa.ChunkedArray, benchmark: BenchmarkConfig) -> pa.Array:
    """A text column as strings: lists of strings flattened (answer choices), anything else refused."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise BenchmarkError(
            f"benchmark {benchmark.name!r}: field {benchmark.field!r} of {benchmark.path} holds {column.type}, not text"
        )
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


@dataclass
class DecontaminateStage:
    """Drops documents sharing an n-gram with a benchmark; the reason names it (``decontaminate:<benchmark>``)."""

    config: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    index: BenchmarkIndex | None = None
    """Built by the caller once per run and shared by every batch; built here when not given."""
    name: str = "decontaminate"

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = build_index(self.config)

    def __call__(self, table: pa.Table) -> pa.Table:
        if "text" not in table.column_names or not table.num_rows:
            return table
        assert self.index is not None
        hits = self.index.first_hits(table.column("text"))
        names = pa.array(self.index.names, pa.string())
        reasons = names.take(pa.array(hits, mask=hits < 0))
        return with_drop_reasons(table, reasons)
