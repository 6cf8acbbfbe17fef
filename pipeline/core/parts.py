"""Atomic, resumable Parquet part files.

A pass writes, per input unit, ``documents/part-NNNNN.parquet`` (and ``rejected/part-NNNNN.parquet``
with ``--keep-rejected``), then ``stats/part-NNNNN.json``, then the completion marker
``markers/part-NNNNN.done``, last. On local disk files are written under a hidden temporary name and
renamed into place; on an object store each is uploaded as one object once complete (see
:mod:`pipeline.core.storage`), so a reader never sees a half-written part. A part without its marker
is not done: a rerun deletes whatever it left and writes it again, so after ``kill -9`` and a rerun every document is
present exactly once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.profile import DocumentProfile, profile_documents
from pipeline.core.schema import DOCUMENT_SCHEMA, REJECTED_SCHEMA, conform
from pipeline.core.stats import PartStats, merge_parts
from pipeline.core.storage import (
    Location,
    arrow_source,
    is_remote,
    list_names,
    location,
    publish,
    read_files,
    remove,
    temp_path_for,
    write_bytes_atomic,
)

log = logging.getLogger(__name__)

DOCUMENTS = "documents"
REJECTED = "rejected"
STATS = "stats"
MARKERS = "markers"


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def chunk_name(part: str, index: int) -> str:
    """A committed chunk of a part that is not finished yet (``part-00003.00001``); the last chunk of a part takes
    the part's own name, so a part is done exactly when its marker exists, chunked or not."""
    return f"{part}.{index:05d}"


def part_order(name: str) -> tuple[str, int, str]:
    """Sort key: parts in order, each part's chunks in order, the part's last chunk (its own name) after them."""
    part, _, chunk = name.partition(".")
    return part, 0 if chunk else 1, chunk


def marker_path(out_dir: Location | str, name: str) -> Location:
    return location(out_dir) / MARKERS / f"{name}.done"


def is_done(out_dir: Location | str, name: str) -> bool:
    return marker_path(out_dir, name).exists()


PART_FOLDERS = ((MARKERS, ".done"), (DOCUMENTS, ".parquet"), (REJECTED, ".parquet"), (STATS, ".json"))
"""Every folder a part writes a file to, with the file's suffix."""
_listed: dict[str, set[str]] = {}
"""Per output folder on a store: the parts that had any file when the pass started (:func:`pass_listing`),
plus every part this process has cleared since."""
_listed_guard = threading.Lock()


def listed_part_files(out_dir: Location | str) -> set[str]:
    """Names of the parts and chunks that have any file (marker, documents, rejected, stats), from one listing
    per folder."""
    out_dir = location(out_dir)
    names: set[str] = set()
    for folder, suffix in PART_FOLDERS:
        names.update(n.removesuffix(suffix) for n in list_names(out_dir / folder, suffix, "part-"))
    return names


@contextlib.contextmanager
def pass_listing(out_dir: Location | str) -> Iterator[None]:
    """While a pass runs on a store: :func:`clear_part` skips its DELETEs (about 4 per part) for a part that one
    listing, taken here, showed without any file.

    Only for a pass where each part is attempted once per process and nothing else writes the folder (the run
    lock): a part cleared once is then remembered as having files, so a second clear (a failed commit, a retry)
    deletes for real. Worker processes forked inside the block inherit the listing. Local disk: no effect.
    """
    out_dir = location(out_dir)
    if not is_remote(out_dir):
        yield
        return
    key = str(out_dir)
    names = listed_part_files(out_dir)
    with _listed_guard:
        _listed[key] = names
    try:
        yield
    finally:
        with _listed_guard:
            _listed.pop(key, None)


def _surely_absent(out_dir: Location, name: str) -> bool:
    """Whether the pass's listing shows no file of ``name`` and this process has not cleared it before (it
    counts as cleared from now on)."""
    with _listed_guard:
        names = _listed.get(str(out_dir))
        if names is None or name in names:
            return False
        names.add(name)
        return True


def _note_written(out_dir: Location, name: str) -> None:
    """``name`` may have files from now on: a later :func:`clear_part` of it deletes for real."""
    with _listed_guard:
        if (names := _listed.get(str(out_dir))) is not None:
            names.add(name)


def clear_part(out_dir: Location | str, name: str) -> None:
    """Remove everything an unfinished attempt at part ``name`` may have left behind (marker first, so a
    reader never sees a marker without its files). On a store, nothing to do for a part that the pass's listing
    (:func:`pass_listing`) showed without files."""
    out_dir = location(out_dir)
    if _surely_absent(out_dir, name):
        return
    remove(marker_path(out_dir, name))
    for folder, suffix in ((DOCUMENTS, ".parquet"), (REJECTED, ".parquet"), (STATS, ".json")):
        directory = out_dir / folder
        if not is_remote(directory):  # local temporaries of a killed attempt (a store has none: temps are local)
            if not directory.is_dir():
                continue
            for leftover in directory.glob(f".{name}{suffix}.*"):
                leftover.unlink(missing_ok=True)
        remove(directory / f"{name}{suffix}")


class _AtomicParquet:
    """A Parquet file written batch by batch to a local temporary file, published (renamed/uploaded) on commit."""

    def __init__(self, path: Location, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.tmp = temp_path_for(path)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(conform(table, self.schema), row_group_size=10_000)
            self.rows += table.num_rows

    def commit(self, path: Location | None = None) -> None:
        """Publish under ``path`` (default: the path it was opened for)."""
        self.writer.close()
        self.path = path or self.path
        publish(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class PartWriter:
    """Write one part: stream kept (and rejected) batches, then :meth:`commit` with its stats.

    Used as a context manager, an exception before ``commit`` leaves no part behind.
    """

    def __init__(self, out_dir: Location | str, name: str, keep_rejected: bool = False) -> None:
        self.out_dir = location(out_dir)
        self.name = name
        clear_part(self.out_dir, name)
        self.documents = _AtomicParquet(self.out_dir / DOCUMENTS / f"{name}.parquet", DOCUMENT_SCHEMA)
        self.rejected = (
            _AtomicParquet(self.out_dir / REJECTED / f"{name}.parquet", REJECTED_SCHEMA) if keep_rejected else None
        )
        self.committed = False
        self.profile = DocumentProfile()

    def write(self, kept: pa.Table, rejected: list[pa.Table] | None = None) -> None:
        self.documents.write(kept)
        if kept.num_rows:
            self.profile.merge(profile_documents(kept))
        if self.rejected is not None:
            for table in rejected or []:
                self.rejected.write(table)

    def commit(self, stats: PartStats, *, name: str | None = None, marker: dict | None = None) -> None:
        """Publish the part, its stats, then its marker (holding ``marker`` besides the row count). ``name``
        publishes it under another name than it was opened with (the caller has cleared that name)."""
        self.name = name or self.name
        stats.part = self.name
        stats.docs_out = self.documents.rows
        stats.profile.merge(self.profile)
        _note_written(self.out_dir, self.name)
        try:
            stats_json = json.dumps(stats.to_json(), indent=1).encode()
            uploads: list[Callable[[], None]] = [
                lambda: self.documents.commit(self.out_dir / DOCUMENTS / f"{self.name}.parquet"),
                lambda: write_bytes_atomic(self.out_dir / STATS / f"{self.name}.json", stats_json),
            ]
            if (rejected := self.rejected) is not None:
                uploads.append(lambda: rejected.commit(self.out_dir / REJECTED / f"{self.name}.parquet"))
            _run_all(uploads, concurrently=is_remote(self.out_dir))
            info = {"rows": self.documents.rows, **(marker or {})}
            write_bytes_atomic(marker_path(self.out_dir, self.name), json.dumps(info).encode())
        except BaseException:
            # published files without their marker: readers that glob documents/ would see them, so remove them
            try:
                clear_part(self.out_dir, self.name)
            except Exception as e:  # the store may be what failed; the next attempt clears the part first
                log.warning("could not remove what part %s published before failing: %s", self.name, e)
            raise
        self.committed = True

    def abort(self) -> None:
        self.documents.abort()
        if self.rejected is not None:
            self.rejected.abort()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.abort()


def _run_all(calls: list[Callable[[], None]], *, concurrently: bool) -> None:
    """Every call, each to its end; then the first error, if any. On a store the uploads before a marker go
    concurrently (a request each, ~5 ms apiece one after the other); every one has ended before this returns, so
    nothing lands after a failure's clean-up, nor after the marker."""
    if not concurrently:
        for call in calls:
            call()
        return
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="part-upload") as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def done_parts(out_dir: Location | str) -> list[str]:
    """Names of the finished parts and chunks (:func:`chunk_name`), in :func:`part_order`, from one listing of the
    markers folder."""
    names = [name.removesuffix(".done") for name in list_names(location(out_dir) / MARKERS, ".done", "part-")]
    return sorted(names, key=part_order)


def remove_unfinished(out_dir: Location | str) -> int:
    """Remove every part file that has no marker (left by a killed attempt), from one listing per folder: a
    reader globbing ``documents/`` must never see them, and a part resumed from a chunk does not rewrite them.
    Only while no pass writes here (the run lock). Returns how many files went."""
    out_dir = location(out_dir)
    done = set(done_parts(out_dir))
    removed = 0
    for folder, suffix in ((DOCUMENTS, ".parquet"), (REJECTED, ".parquet"), (STATS, ".json")):
        for file in list_names(out_dir / folder, suffix, "part-"):
            if file.removesuffix(suffix) not in done:
                remove(out_dir / folder / file)
                removed += 1
    return removed


def load_stats(out_dir: Location | str) -> list[PartStats]:
    """Stats of every finished part (unfinished parts' stats are ignored, as their documents are); on a store
    fetched concurrently, one request each."""
    out_dir = location(out_dir)
    stats = []
    for content in read_files([out_dir / STATS / f"{name}.json" for name in done_parts(out_dir)]):
        if isinstance(content, Exception):
            raise content
        stats.append(PartStats.from_json(json.loads(content)))
    return stats


def total_stats(out_dir: Location | str) -> PartStats:
    return merge_parts(load_stats(out_dir), name=str(out_dir))


def document_files(out_dir: Location | str) -> list[Location]:
    """Parquet files of finished parts, in part order."""
    out_dir = location(out_dir)
    return [out_dir / DOCUMENTS / f"{name}.parquet" for name in done_parts(out_dir)]


def read_parquet(path: Location | str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file from disk or a store."""
    source, filesystem = arrow_source(path)
    return pq.read_table(source, columns=columns, filesystem=filesystem)


def read_documents(out_dir: Location | str, columns: list[str] | None = None) -> pa.Table:
    files = document_files(out_dir)
    if not files:
        return DOCUMENT_SCHEMA.empty_table() if columns is None else DOCUMENT_SCHEMA.empty_table().select(columns)
    return pa.concat_tables(read_parquet(f, columns=columns) for f in files)
