"""Live progress of a pass in the Prefect UI, read from the same files the CLI progress bar polls.

Workers write ``progress/<part>.json`` (documents read so far), ``stats/<part>.json`` and
``markers/<part>.done`` (see :mod:`pipeline.core.parts`, :func:`pipeline.engines.base.write_progress`);
any engine, any process. A thread in the flow process polls them and updates one progress
artifact, and logs a line each time a part finishes.

The pass folder may be on an object store, so a poll costs two folder listings (markers, progress) plus a
read of each progress file that changed since the last poll; a finished part's stats are read once. A poll
never asks about each part in turn.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from pipeline.core.storage import Location, location
from pipeline.engines.progress import PassProgress, ProgressReader, read_progress

__all__ = ["PassProgress", "ProgressReader", "ProgressReporter", "read_progress"]

log = logging.getLogger(__name__)


class ProgressReporter:
    """While the ``with`` block runs, keep a progress artifact and the run log up to date with a pass."""

    def __init__(
        self,
        title: str,
        out_dir: Location | str,
        parts: list[str],
        *,
        key: str | None = None,
        interval_s: float = 2.0,
        logger: logging.Logger | logging.LoggerAdapter = log,
    ) -> None:
        self.title = title
        self.out_dir = location(out_dir)
        self.parts = parts
        self.reader = ProgressReader(self.out_dir, parts)
        self.key = key
        self.interval_s = interval_s
        self.logger = logger
        self.artifact_id: UUID | None = None
        self.last: PassProgress | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressReporter:
        try:
            first = self.reader.read()
        except Exception as e:  # as in tick: the pass runs even when its progress cannot be read
            log.warning("could not read the progress of %s: %s", self.out_dir, e)
            first = PassProgress(done=0, total=len(self.parts), read=0, kept=0)
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
        try:
            now = self.reader.read()
        except Exception as e:  # a store hiccup must not fail the pass the progress is about
            log.warning("could not read the progress of %s: %s", self.out_dir, e)
            return self.last or PassProgress(done=0, total=len(self.parts), read=0, kept=0)
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
