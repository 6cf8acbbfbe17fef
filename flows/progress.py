"""Live progress of a pass in the Prefect UI, read from the same files the CLI progress bar polls.

Workers write ``progress/<part>.json`` (documents read so far), ``stats/<part>.json`` and
``markers/<part>.done`` (see :mod:`pipeline.core.parts`, :func:`pipeline.engines.base.write_progress`);
any engine, any process. A thread in the flow process polls them and updates one progress
artifact, and logs a line each time a part finishes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from pipeline.core.parts import MARKERS, STATS
from pipeline.engines.base import PROGRESS

log = logging.getLogger(__name__)


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


def read_progress(out_dir: Path, parts: list[str]) -> PassProgress:
    """Snapshot of a pass over ``parts`` under ``out_dir`` (missing or half-written files count as zero)."""
    out_dir = Path(out_dir)
    done = read = kept = 0
    for part in parts:
        read += _json_int(out_dir / PROGRESS / f"{part}.json", "docs")
        if (out_dir / MARKERS / f"{part}.done").exists():
            done += 1
            kept += _json_int(out_dir / STATS / f"{part}.json", "docs_out")
    return PassProgress(done=done, total=len(parts), read=read, kept=kept)


def _json_int(path: Path, key: str) -> int:
    try:
        return int(json.loads(path.read_text()).get(key, 0))
    except (OSError, ValueError, AttributeError):
        return 0


class ProgressReporter:
    """While the ``with`` block runs, keep a progress artifact and the run log up to date with a pass."""

    def __init__(
        self,
        title: str,
        out_dir: Path,
        parts: list[str],
        *,
        key: str | None = None,
        interval_s: float = 2.0,
        logger: logging.Logger | logging.LoggerAdapter = log,
    ) -> None:
        self.title = title
        self.out_dir = Path(out_dir)
        self.parts = parts
        self.key = key
        self.interval_s = interval_s
        self.logger = logger
        self.artifact_id: UUID | None = None
        self.last: PassProgress | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressReporter:
        first = read_progress(self.out_dir, self.parts)
        self.artifact_id = create_progress_artifact(first.percent, key=self.key, description=first.describe(self.title))
        self.last = first
        # the copied context carries Prefect's run and settings context into the polling thread
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="pass-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.tick()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> PassProgress:
        """Read the files once; update the artifact if anything moved, log if a part finished."""
        now = read_progress(self.out_dir, self.parts)
        if now == self.last:
            return now
        if self.last is None or now.done != self.last.done:
            self.logger.info(now.describe(self.title))
        self.last = now
        if self.artifact_id is not None:
            try:
                update_progress_artifact(self.artifact_id, now.percent, description=now.describe(self.title))
            except Exception as e:  # the UI falling behind must never fail the pass
                log.warning("could not update the progress artifact: %s", e)
        return now
