"""How far a pass is, read from the files its workers write: ``progress/<part>.json`` (documents read so far),
``stats/<part>.json`` and ``markers/<part>.done`` (:mod:`pipeline.core.parts`, :func:`write_progress`).

The CLI's progress bar and the Prefect UI's progress artifact both poll with :class:`ProgressReader`. The pass
folder may be on an object store, so a poll costs two folder listings (markers, progress) plus a read of each
progress file that changed since the last poll; a finished part's stats are read once. A poll never asks about
each part in turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.core.parts import MARKERS, STATS
from pipeline.core.storage import FileInfo, Location, list_files, list_names, location, read_files
from pipeline.engines.base import PROGRESS


@dataclass(frozen=True)
class PassProgress:
    """How far a pass is: parts done of total, documents read and kept so far."""

    done: int
    total: int
    read: int
    kept: int

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)

    def describe(self, title: str) -> str:
        text = f"{title}: {self.done}/{self.total} parts done"
        if self.read:  # passes that report documents as they read them
            text += f", {self.read:,} documents read"
        if self.read or self.kept:
            text += f", {self.kept:,} kept"
        return text


class ProgressReader:
    """Reads a pass's progress again and again, re-reading only what changed (the folder may be on a store)."""

    def __init__(self, out_dir: Location | str, parts: list[str]) -> None:
        self.out_dir = location(out_dir)
        self.parts = list(parts)
        self._wanted = set(self.parts)
        self._kept: dict[str, int] = {}
        """``docs_out`` of each finished part (read once)."""
        self._read: dict[str, tuple[FileInfo, int]] = {}
        """Documents read per part, with the listing entry of the progress file they were read from."""

    def read(self) -> PassProgress:
        """Snapshot of the pass (missing or half-written files count as zero)."""
        done = {n.removesuffix(".done") for n in list_names(self.out_dir / MARKERS, ".done")} & self._wanted
        listed = {n.removesuffix(".json"): info for n, info in list_files(self.out_dir / PROGRESS).items()}
        changed = [p for p, info in listed.items() if p in self._wanted and self._read.get(p, (None, 0))[0] != info]
        for part, docs in zip(changed, self._ints(PROGRESS, changed, "docs"), strict=True):
            self._read[part] = (listed[part], docs)
        for part in [p for p in self._read if p not in listed]:  # cleared by a rerun of the part
            del self._read[part]
        for part in [p for p in self._kept if p not in done]:  # cleared for a redo: its stats will change
            del self._kept[part]
        new_done = sorted(done - self._kept.keys())
        self._kept.update(zip(new_done, self._ints(STATS, new_done, "docs_out"), strict=True))
        kept = sum(self._kept.values())
        read = sum(n for _, n in self._read.values())
        return PassProgress(done=len(done), total=len(self.parts), read=read, kept=kept)

    def _ints(self, folder: str, parts: list[str], key: str) -> list[int]:
        """``key`` of ``<folder>/<part>.json`` for each part (fetched concurrently from a store); 0 if unreadable."""
        out = []
        for content in read_files([self.out_dir / folder / f"{part}.json" for part in parts]):
            try:
                if isinstance(content, Exception):
                    raise content
                out.append(int(json.loads(content).get(key, 0)))
            except (OSError, ValueError, AttributeError, TypeError):
                out.append(0)
        return out


def read_progress(out_dir: Location | str, parts: list[str]) -> PassProgress:
    """Snapshot of a pass over ``parts`` under ``out_dir`` (missing or half-written files count as zero)."""
    return ProgressReader(out_dir, parts).read()
