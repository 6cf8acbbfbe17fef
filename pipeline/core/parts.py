"""Atomic, resumable Parquet part files.

A pass writes, per input unit, ``documents/part-NNNNN.parquet`` (and ``rejected/part-NNNNN.parquet``
with ``--keep-rejected``), then ``stats/part-NNNNN.json``, then the completion marker
``markers/part-NNNNN.done``, last. Files are written under a hidden temporary name and renamed into
place, so a reader never sees a half-written part. A part without its marker is not done: a rerun
deletes whatever it left and writes it again, so after ``kill -9`` and a rerun every document is
present exactly once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.profile import DocumentProfile, profile_documents
from pipeline.core.schema import DOCUMENT_SCHEMA, REJECTED_SCHEMA, conform
from pipeline.core.stats import PartStats, merge_parts

log = logging.getLogger(__name__)

DOCUMENTS = "documents"
REJECTED = "rejected"
STATS = "stats"
MARKERS = "markers"


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def marker_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / MARKERS / f"{name}.done"


def is_done(out_dir: Path, name: str) -> bool:
    return marker_path(out_dir, name).exists()


def clear_part(out_dir: Path, name: str) -> None:
    """Remove everything an unfinished attempt at part ``name`` may have left behind."""
    out_dir = Path(out_dir)
    for folder, suffix in ((DOCUMENTS, ".parquet"), (REJECTED, ".parquet"), (STATS, ".json")):
        directory = out_dir / folder
        if not directory.is_dir():
            continue
        for leftover in directory.glob(f".{name}{suffix}.*"):
            leftover.unlink(missing_ok=True)
        (directory / f"{name}{suffix}").unlink(missing_ok=True)
    marker_path(out_dir, name).unlink(missing_ok=True)


def write_file_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` under a temporary name, fsync, rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` as the whole content of ``path``, atomically (see :func:`write_file_atomic`)."""
    write_file_atomic(path, lambda f: f.write(data))


class _AtomicParquet:
    """A Parquet file written batch by batch under a temporary name, renamed on commit."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(conform(table, self.schema), row_group_size=10_000)
            self.rows += table.num_rows

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class PartWriter:
    """Write one part: stream kept (and rejected) batches, then :meth:`commit` with its stats.

    Used as a context manager, an exception before ``commit`` leaves no part behind.
    """

    def __init__(self, out_dir: Path, name: str, keep_rejected: bool = False) -> None:
        self.out_dir = Path(out_dir)
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

    def commit(self, stats: PartStats) -> None:
        stats.docs_out = self.documents.rows
        stats.profile.merge(self.profile)
        self.documents.commit()
        if self.rejected is not None:
            self.rejected.commit()
        stats_path = self.out_dir / STATS / f"{self.name}.json"
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(stats_path, json.dumps(stats.to_json(), indent=1).encode())
        marker = marker_path(self.out_dir, self.name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(marker, json.dumps({"rows": self.documents.rows}).encode())
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


def done_parts(out_dir: Path) -> list[str]:
    directory = Path(out_dir) / MARKERS
    return sorted(p.name.removesuffix(".done") for p in directory.glob("part-*.done")) if directory.is_dir() else []


def load_stats(out_dir: Path) -> list[PartStats]:
    """Stats of every finished part (unfinished parts' stats are ignored, as their documents are)."""
    return [PartStats.load(Path(out_dir) / STATS / f"{name}.json") for name in done_parts(out_dir)]


def total_stats(out_dir: Path) -> PartStats:
    return merge_parts(load_stats(out_dir), name=str(out_dir))


def document_files(out_dir: Path) -> list[Path]:
    """Parquet files of finished parts, in part order."""
    return [Path(out_dir) / DOCUMENTS / f"{name}.parquet" for name in done_parts(out_dir)]


def read_documents(out_dir: Path, columns: list[str] | None = None) -> pa.Table:
    files = document_files(out_dir)
    if not files:
        return DOCUMENT_SCHEMA.empty_table() if columns is None else DOCUMENT_SCHEMA.empty_table().select(columns)
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
