"""The tokenization pass: ``documents/part-*.parquet`` -> llm.c token shards, in parallel, resumable.

Two steps, so that the output does not depend on the number of processes or on interruptions:

1. Each finished input part is tokenized on its own (any process, any order) into
   ``<out>/parts/part-NNNNN.tokens`` (llm.c shard format: every document prefixed by end-of-text),
   ``<out>/token_counts/part-NNNNN.parquet`` (``id``, ``token_count``: the text's tokens, end-of-text not
   counted), ``<out>/stats/part-NNNNN.json`` (the usual PartStats with one ``tokenize`` stage, so
   ``pipeline.core.parts.load_stats(<out>)`` reads its funnel like any pass's) and, last, the marker
   ``<out>/markers/part-NNNNN.done`` (a JSON summary). All are written under temporary names and renamed.
   A part with a marker matching its input file (size, mtime) and tokenizer is not redone; anything else is.
2. The part files are concatenated in part order and cut into shards of ``shard_size_tokens``
   (``val_000000.bin``, ``train_000001.bin``, ...), then ``manifest.json`` is written (see manifest.py).

Both folders may be object-store URLs (``s3://...``): workers read the documents' Parquet from the store and
upload each file once complete (marker last); a part's input is then identified by its size and ETag, and
the driver lists each folder once instead of asking about every file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.lock import output_lock
from pipeline.core.parts import DOCUMENTS, MARKERS, STATS, done_parts
from pipeline.core.stage import text_bytes
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    FileInfo,
    Location,
    arrow_source,
    is_remote,
    list_files,
    list_names,
    location,
    remove,
    scratch_dir,
    write_bytes_atomic,
    write_file_atomic,
)
from pipeline.engines import Engine
from pipeline.engines.base import ItemFailed
from tokenization.encoders import Tokenizer, TokenizerConfig, fetch_rank_file, load_tokenizer
from tokenization.manifest import AtomicShardWriter, PartTokens, assemble_shards
from tokenization.shards import HEADER_BYTES, ShardError, dtype_for_vocab, read_header, read_manifest

log = logging.getLogger(__name__)

PARTS = "parts"
TOKEN_COUNTS = "token_counts"
STAGE = "tokenize"
TOKEN_COUNTS_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("token_count", pa.int32())])


class TokenizeError(RuntimeError):
    """Some parts could not be tokenized; the finished ones are kept for the rerun."""


@dataclass(frozen=True)
class PartJob:
    part: str
    input_file: str
    """The part's Parquet file (a local path or a store URL: text, so the job pickles without a filesystem)."""
    output_dir: str
    tokenizer: str
    rank_file: Path
    batch_size: int
    threads: int
    input_bytes: int = -1
    """On a store: the input's size and ETag, from the driver's listing (on local disk the worker stats it)."""
    input_etag: str = ""


def part_tokens_path(output_dir: Location | str, part: str) -> Location:
    return location(output_dir) / PARTS / f"{part}.tokens"


def token_counts_path(output_dir: Location | str, part: str) -> Location:
    return location(output_dir) / TOKEN_COUNTS / f"{part}.parquet"


def part_stats_path(output_dir: Location | str, part: str) -> Location:
    return location(output_dir) / STATS / f"{part}.json"


def part_marker_path(output_dir: Location | str, part: str) -> Location:
    return location(output_dir) / MARKERS / f"{part}.done"


def _clear_part(output_dir: Location, part: str) -> None:
    """Remove whatever an unfinished (or outdated) attempt at ``part`` left (the marker first)."""
    for path in (
        part_marker_path(output_dir, part),
        part_tokens_path(output_dir, part),
        token_counts_path(output_dir, part),
    ):
        remove(path)
        if not is_remote(path):  # a store has no temporary objects: they are local until uploaded
            for leftover in path.parent.glob(f".{path.name}.*.tmp"):
                leftover.unlink(missing_ok=True)


def _encode_batch(tokenizer: Tokenizer, texts: list[str | None], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens of the batch, each non-empty document prefixed by end-of-text; per-document text token counts)."""
    present = [i for i, text in enumerate(texts) if text]
    arrays = tokenizer.encode_arrays([texts[i] for i in present], threads=threads)
    counts = np.zeros(len(texts), dtype=np.int64)
    if not arrays:
        return np.zeros(0, dtype=np.uint32), counts
    counts[present] = [a.size for a in arrays]
    eot = np.array([tokenizer.eot_token], dtype=np.uint32)
    pieces: list[np.ndarray] = []
    for array in arrays:
        pieces.append(eot)
        pieces.append(array)
    return np.concatenate(pieces), counts


def tokenize_part(job: PartJob) -> PartTokens:
    """Tokenize one input part into its token file, token counts and marker (in that order)."""
    start = time.perf_counter()
    out = location(job.output_dir)
    input_file = location(job.input_file)
    _clear_part(out, job.part)
    tokenizer = load_tokenizer(job.tokenizer, job.rank_file)
    if is_remote(input_file):
        input_bytes, input_mtime_ns = job.input_bytes, 0
    else:
        stat = input_file.stat()
        input_bytes, input_mtime_ns = stat.st_size, stat.st_mtime_ns
    source, filesystem = arrow_source(input_file)
    try:
        parquet = pq.ParquetFile(source, filesystem=filesystem)
    except (OSError, pa.ArrowException) as e:
        raise TokenizeError(f"{job.part}: cannot read {input_file}: {e}") from e
    missing = {"id", "text"} - set(parquet.schema_arrow.names)
    if missing:
        raise TokenizeError(f"{job.part}: {input_file} lacks column(s) {sorted(missing)}")

    writer = AtomicShardWriter(part_tokens_path(out, job.part), tokenizer.vocab_size)
    ids: list[pa.Array] = []
    counts: list[np.ndarray] = []
    documents = skipped = 0
    stats = PartStats(part=job.part, inputs=[str(input_file)])
    stage = stats.stage(STAGE)
    try:
        for batch in parquet.iter_batches(batch_size=job.batch_size, columns=["id", "text"]):
            stage.bytes_in += text_bytes(pa.table(batch))
            texts = batch.column("text").to_pylist()
            tokens, batch_counts = _encode_batch(tokenizer, texts, job.threads)
            writer.write(tokens)
            nonempty = sum(1 for text in texts if text)
            documents += nonempty
            skipped += len(texts) - nonempty
            ids.append(batch.column("id"))
            counts.append(batch_counts)
        header, sha = writer.commit()
    except BaseException as e:
        writer.abort()
        if isinstance(e, pa.ArrowException | OSError):
            raise TokenizeError(f"{job.part}: error reading {input_file}: {e}") from e
        raise

    all_counts = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    table = pa.table(
        {
            "id": pa.concat_arrays([a.cast(pa.string()) for a in ids]) if ids else pa.array([], pa.string()),
            "token_count": pa.array(np.minimum(all_counts, 2**31 - 1).astype(np.int32)),
        },
        schema=TOKEN_COUNTS_SCHEMA,
    )
    write_file_atomic(token_counts_path(out, job.part), lambda f: pq.write_table(table, f, compression="zstd"))

    stage.docs_in = documents + skipped
    stage.docs_out = stats.docs_out = documents
    stage.bytes_out = stage.bytes_in  # empty texts have no bytes: every byte in was tokenized
    if skipped:
        stage.drops[f"{STAGE}:empty_text"] = skipped
    stage.seconds = stats.seconds = time.perf_counter() - start
    write_bytes_atomic(part_stats_path(out, job.part), json.dumps(stats.to_json(), indent=1).encode())

    info = PartTokens(
        part=job.part,
        num_documents=documents,
        num_tokens=header.num_tokens,
        skipped_empty=skipped,
        sha256=sha,
        input_bytes=input_bytes,
        input_mtime_ns=input_mtime_ns,
        input_etag=job.input_etag,
        tokenizer=tokenizer.name,
        tokenizer_sha256=tokenizer.rank_sha256,
        seconds=round(time.perf_counter() - start, 3),
    )
    write_bytes_atomic(part_marker_path(out, job.part), json.dumps(info.to_json(), indent=1).encode())
    return info


@dataclass
class StoreListing:
    """What a tokenization on an object store needs to know of its folders, from one listing per folder."""

    inputs: dict[str, FileInfo] = field(default_factory=dict)
    """``documents/`` of the input: Parquet file name -> its size and ETag."""
    markers: set[str] = field(default_factory=set)
    part_files: dict[str, int] = field(default_factory=dict)
    """``parts/``: token file name -> size."""
    token_counts: set[str] = field(default_factory=set)
    stats: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, input_dir: Location, output_dir: Location) -> StoreListing:
        return cls(
            inputs=list_files(input_dir / DOCUMENTS),
            markers=set(list_names(output_dir / MARKERS, ".done")),
            part_files={name: info.size for name, info in list_files(output_dir / PARTS).items()},
            token_counts=set(list_names(output_dir / TOKEN_COUNTS, ".parquet")),
            stats=set(list_names(output_dir / STATS, ".json")),
        )

    def input_version(self, part: str) -> tuple[int, str]:
        """(size, ETag) of the part's Parquet file as listed; (-1, "") if it is not there."""
        info = self.inputs.get(f"{part}.parquet")
        return (-1, "") if info is None else (info.size, info.tag)


def finished_part(
    output_dir: Location | str,
    part: str,
    input_file: Location | str,
    tokenizer: Tokenizer,
    listing: StoreListing | None = None,
) -> PartTokens | None:
    """The part's summary if it was tokenized from this very input with this tokenizer, else None.

    On a store, ``listing`` (taken once for all parts) answers for the inputs and the files beside the marker;
    only the marker itself is read.
    """
    output_dir, input_file = location(output_dir), location(input_file)
    if listing is not None:
        return _finished_on_store(output_dir, part, input_file, tokenizer, listing)
    try:
        info = PartTokens.from_json(json.loads(part_marker_path(output_dir, part).read_text()))
        stat = input_file.stat()
        header = read_header(part_tokens_path(output_dir, part))
    except (OSError, ValueError, TypeError, ShardError):
        return None
    current = (
        info.input_bytes == stat.st_size
        and info.input_mtime_ns == stat.st_mtime_ns
        and info.tokenizer == tokenizer.name
        and info.tokenizer_sha256 == tokenizer.rank_sha256
        and header.num_tokens == info.num_tokens
        and token_counts_path(output_dir, part).is_file()
        and part_stats_path(output_dir, part).is_file()
    )
    return info if current else None


def _finished_on_store(
    output_dir: Location, part: str, input_file: Location, tokenizer: Tokenizer, listing: StoreListing
) -> PartTokens | None:
    if f"{part}.done" not in listing.markers:
        return None
    try:
        info = PartTokens.from_json(json.loads(part_marker_path(output_dir, part).read_text()))
        if is_remote(input_file):
            size, etag = listing.input_version(part)
            same_input = bool(etag) and info.input_bytes == size and info.input_etag == etag
        else:
            stat = input_file.stat()
            same_input = info.input_bytes == stat.st_size and info.input_mtime_ns == stat.st_mtime_ns
    except (OSError, ValueError, TypeError):
        return None
    expected_bytes = HEADER_BYTES + info.num_tokens * np.dtype(dtype_for_vocab(tokenizer.vocab_size)).itemsize
    current = (
        same_input
        and info.tokenizer == tokenizer.name
        and info.tokenizer_sha256 == tokenizer.rank_sha256
        and listing.part_files.get(f"{part}.tokens") == expected_bytes
        and f"{part}.parquet" in listing.token_counts
        and f"{part}.json" in listing.stats
    )
    return info if current else None


def input_parts(input_dir: Location | str, listing: StoreListing | None = None) -> list[tuple[str, Location]]:
    """Finished parts of a pass (per its markers), in part order."""
    input_dir = location(input_dir)
    parts = [(name, input_dir / DOCUMENTS / f"{name}.parquet") for name in done_parts(input_dir)]
    if listing is not None:
        missing = [str(path) for name, path in parts if f"{name}.parquet" not in listing.inputs]
    else:
        missing = [str(path) for _, path in parts if not path.is_file()]
    if missing:
        raise TokenizeError(f"parts marked done but missing: {missing[:5]}")
    return parts


@dataclass(frozen=True)
class _TokenizeJobs:
    """Tokenize job ``i`` wherever the engine runs it (a worker process, a Spark executor); picklable."""

    jobs: tuple[PartJob, ...]
    rank_bytes: bytes
    """The BPE rank file travels with the tasks: Spark executors need not have the driver's cache."""

    def __call__(self, index: int) -> PartTokens:
        job = self.jobs[index]
        if not job.rank_file.is_file():
            local = scratch_dir() / "cc-refinery-ranks" / job.rank_file.name
            if not local.is_file():
                write_bytes_atomic(local, self.rank_bytes)
            job = dataclasses.replace(job, rank_file=local)
        return tokenize_part(job)


def _run_jobs(jobs: list[PartJob], engine: Engine) -> tuple[dict[str, PartTokens], list[str]]:
    """Every job on the engine; failed ones (an error, or a worker killed by the OS) are listed, not raised."""
    results: dict[str, PartTokens] = {}
    failures: list[str] = []
    if not jobs:
        return results, failures
    task = _TokenizeJobs(tuple(jobs), jobs[0].rank_file.read_bytes())
    for job, outcome in zip(jobs, engine.map_items(task, len(jobs), description="tokenize"), strict=True):
        if isinstance(outcome, ItemFailed):
            log.error("tokenizing %s failed: %s", job.part, outcome.error)
            failures.append(f"{job.part}: {outcome.error}")
        else:
            results[job.part] = outcome
    return results, failures


def run_tokenize(
    input_dir: Location | str,
    output_dir: Location | str,
    config: TokenizerConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Tokenize a pass's finished parts into shards + manifest in ``output_dir``; resumable and deterministic.

    Parts are tokenized on ``engine`` (default: ``workers`` local processes), as worker processes or Spark
    tasks; the shards are assembled here, in part order, so every engine gives the same bytes. One
    tokenization per output folder (its lock is held throughout).

    Returns ``{"manifest": ..., "parts_tokenized": n, "parts_reused": m, "seconds": s, ...}``; raises
    TokenizeError (after finishing every other part) if some parts fail.
    """
    config = config or TokenizerConfig()
    if engine is None:
        from pipeline.engines.local import LocalEngine

        engine = LocalEngine(workers=workers if workers is not None else config.workers, progress=progress)
    input_dir, output_dir = location(input_dir), location(output_dir)
    with output_lock(output_dir, "tokenize"):
        return _tokenize_parts(input_dir, output_dir, config, engine)


def _tokenize_parts(
    input_dir: Location, output_dir: Location, config: TokenizerConfig, engine: Engine
) -> dict[str, Any]:
    start = time.perf_counter()
    if not is_remote(input_dir):
        input_dir = input_dir.resolve()  # as executors see them
    if not is_remote(output_dir):
        output_dir = output_dir.resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
    remote = is_remote(input_dir) or is_remote(output_dir)
    listing = StoreListing.of(input_dir, output_dir) if remote else None
    parts = input_parts(input_dir, listing)
    if not parts:
        raise TokenizeError(f"no finished parts in {input_dir} (expected {DOCUMENTS}/part-*.parquet with markers)")
    rank_file = fetch_rank_file(config.name)  # once, in this process: workers only read it
    tokenizer = load_tokenizer(config.name, rank_file)

    finished: dict[str, PartTokens] = {}
    jobs: list[PartJob] = []
    for name, path in parts:
        info = finished_part(output_dir, name, path, tokenizer, listing)
        if info is not None:
            finished[name] = info
            continue
        size, etag = listing.input_version(name) if listing is not None and is_remote(path) else (-1, "")
        jobs.append(
            PartJob(
                name, str(path), str(output_dir), config.name, rank_file, config.batch_size, config.threads,
                input_bytes=size, input_etag=etag,
            )
        )  # fmt: skip
    log.info("tokenizing %d parts (%d already done) on the %s engine", len(jobs), len(finished), engine.kind)
    results, failures = _run_jobs(jobs, engine)
    finished.update(results)
    if failures:
        raise TokenizeError(f"{len(failures)} of {len(parts)} parts failed (rerun to retry): " + "; ".join(failures))

    ordered = [(finished[name], part_tokens_path(output_dir, name)) for name, _ in parts]
    manifest = assemble_shards(output_dir, ordered, tokenizer, config, source=str(input_dir))
    seconds = time.perf_counter() - start
    return {
        "output_dir": str(output_dir),
        "manifest": manifest,
        "parts_tokenized": len(jobs),
        "parts_reused": len(parts) - len(jobs),
        "num_tokens": manifest["totals"]["num_tokens"],
        "num_documents": manifest["totals"]["num_documents"],
        "seconds": seconds,
        "tokens_per_second": manifest["totals"]["num_tokens"] / seconds if seconds > 0 else 0.0,
    }


def read_token_counts(output_dir: Location | str) -> pa.Table:
    """``id`` -> ``token_count`` for every tokenized document (end-of-text not counted), in part order.

    Only the parts of the current manifest (when there is one): counts of parts no longer in the input are stale.
    """
    output_dir = location(output_dir)
    try:
        names = [p["part"] for p in read_manifest(output_dir)["source"]["parts"]]
        files = [token_counts_path(output_dir, name) for name in names]
    except (ShardError, KeyError):
        files = [
            output_dir / TOKEN_COUNTS / name for name in list_names(output_dir / TOKEN_COUNTS, ".parquet", "part-")
        ]
    if not files:
        return TOKEN_COUNTS_SCHEMA.empty_table()
    tables = []
    for path in files:
        source, filesystem = arrow_source(path)
        tables.append(pq.read_table(source, schema=TOKEN_COUNTS_SCHEMA, filesystem=filesystem))
    return pa.concat_tables(tables)
