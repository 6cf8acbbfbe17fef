"""The extraction stage: HTML -> main text with trafilatura (FineWeb's settings) or resiliparse (DCLM-Baseline's),
under a per-page time limit.

A page that makes trafilatura slow must not stall a worker, but a process round-trip per page (what
datatrove's extractor sandbox does) costs time on every page. We interrupt the extraction in-process
instead: on the main thread a SIGPROF interval timer raises :class:`ExtractionTimeout` in the
extracting code (the previous handler and timer are restored after the batch); on any other thread
(a thread-pool executor, an embedded interpreter) a watchdog thread raises the same exception in the
extracting thread with ``PyThreadState_SetAsyncExc``. The limit is CPU time (the process's for the
timer, the extracting thread's for the watchdog), not wall-clock time: a page is dropped for what it
costs, not for how busy the machine is, so two runs (or two engines) on a loaded machine keep the
same pages. Both deliver the exception between Python
bytecodes, so one long call into C (a single huge lxml parse) finishes before it is interrupted;
``max_html_bytes`` bounds that case, checked before parsing. ``ExtractionTimeout`` derives from
``BaseException`` so trafilatura's own ``except Exception`` blocks cannot swallow it, and the timer
fires again every ``_REFIRE_S`` until the page is abandoned.

trafilatura's ``deduplicate`` drops text segments already seen more than twice; its default cache is
process-global, we give each batch its own cache, so a batch's output depends on the batch only and
a rerun of a part reproduces it.

``extraction.backend: resiliparse`` is DCLM-Baseline's extractor: resiliparse's rule-based main-content
extraction over its lexbor DOM, with DCLM's settings (:data:`RESILIPARSE_OPTIONS`). It takes the same
``str`` the trafilatura path gets (the WARC reader has decoded the payload with its charset), and the same
size check, time limit, drop reasons and ``min_text_chars`` apply.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from trafilatura.deduplication import LRUCache
from trafilatura.settings import LRU_SIZE, Extractor

from pipeline.core.stage import with_drop_reasons
from pipeline.stages import fast_trafilatura
from pipeline.stages.config import ExtractionConfig

log = logging.getLogger(__name__)

_REFIRE_S = 0.25
"""After a timeout fired, fire again this often in case the extracting code swallowed the first one."""


class ExtractionTimeout(BaseException):  # noqa: N818 - a signal-like interruption, not an error
    """Raised inside the extracting code when a page exceeds its time limit."""


def extract_text(html: str, options: Extractor) -> str | None:
    """One page through trafilatura's extraction, by :mod:`pipeline.stages.fast_trafilatura` (the same output in
    about half the CPU time; plain trafilatura on another version); module-level so tests can replace it."""
    return fast_trafilatura.extract(html, options)


RESILIPARSE_OPTIONS: dict[str, bool] = {
    "preserve_formatting": True,
    "main_content": True,
    "list_bullets": True,
    "alt_texts": False,
    "links": False,
    "form_fields": False,
    "noscript": False,
}
"""DCLM-Baseline's ``extract_plain_text`` settings: main content only, image alt texts left out, the rest
resiliparse's defaults (paragraph breaks kept, list bullets, no link targets, form fields or noscript text)."""


def extract_text_resiliparse(html: str) -> str:
    """One page through resiliparse with DCLM-Baseline's settings (module-level so tests can replace it)."""
    return extract_plain_text(HTMLTree.parse(html), **RESILIPARSE_OPTIONS).strip()


_TIMER = signal.ITIMER_PROF
_SIGNAL = signal.SIGPROF
"""CPU-time interval timer (user + system time of the process) and the signal it sends."""


class _AlarmGuard:
    """Per-call CPU-time limit with SIGPROF (main thread only); restores the previous handler and timer on exit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._previous_handler: Any = None
        self._previous_timer: tuple[float, float] = (0.0, 0.0)
        self._entered_at = 0.0
        self._armed = False

    def __enter__(self) -> _AlarmGuard:
        self._previous_timer = signal.setitimer(_TIMER, 0)
        self._entered_at = time.process_time()
        self._previous_handler = signal.signal(_SIGNAL, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(_TIMER, 0)
        signal.signal(_SIGNAL, self._previous_handler)
        remaining, interval = self._previous_timer
        if remaining > 0:
            left = remaining - (time.process_time() - self._entered_at)
            signal.setitimer(_TIMER, max(left, 1e-3), interval)

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:  # a signal handled just after disarm() must not escape into the caller
            raise ExtractionTimeout

    def arm(self) -> None:
        self._armed = True
        signal.setitimer(_TIMER, self.seconds, _REFIRE_S)

    def disarm(self) -> None:
        self._armed = False
        signal.setitimer(_TIMER, 0)


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``thread_id`` at its next bytecode; ``None`` cancels a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class _WatchdogGuard:
    """Per-call CPU-time limit for threads other than the main one: a watchdog thread raises in the caller."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._target = threading.get_ident()
        self._clock = time.pthread_getcpuclockid(self._target)
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._fired = False
        self._stop = False
        self._thread = threading.Thread(target=self._watch, name="extract-watchdog", daemon=True)

    def __enter__(self) -> _WatchdogGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()
        self.disarm()

    def _watch(self) -> None:
        with self._cond:
            while not self._stop:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - self._cpu()
                if remaining > 0:
                    self._cond.wait(remaining)  # a thread's CPU time grows no faster than wall-clock time
                    continue
                _async_raise(self._target, ExtractionTimeout)
                self._fired = True
                self._deadline = self._cpu() + _REFIRE_S

    def _cpu(self) -> float:
        return time.clock_gettime(self._clock)

    def arm(self) -> None:
        with self._cond:
            self._fired = False
            self._deadline = self._cpu() + self.seconds
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None
            if self._fired:
                _async_raise(self._target, None)  # drop an exception that was not delivered yet
                self._fired = False


def _guard(seconds: float) -> _AlarmGuard | _WatchdogGuard:
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGPROF"):
        return _AlarmGuard(seconds)
    return _WatchdogGuard(seconds)


@dataclass
class ExtractStage:
    """HTML -> ``text`` with the configured backend; drops ``too_large``, ``timeout``, ``error`` and ``empty`` pages.

    Input is a ``RAW_SCHEMA`` batch; output has the same columns minus ``html``, plus ``text`` and
    ``drop_reason``. Picklable and stateless between calls, so engines can ship it to workers.
    """

    config: ExtractionConfig = field(default_factory=ExtractionConfig)
    name: ClassVar[str] = "extract"

    def options(self) -> Extractor:
        """trafilatura options for one batch (with a fresh deduplication cache)."""
        cfg = self.config
        return Extractor(
            output_format="txt",
            fast=cfg.fast,
            precision=cfg.favor_precision,
            comments=cfg.include_comments,
            tables=cfg.include_tables,
            dedup=LRUCache(maxsize=LRU_SIZE) if cfg.deduplicate else False,
        )

    def extractor(self) -> Callable[[str], str | None]:
        """page -> text for one batch, with the configured backend."""
        if self.config.backend == "resiliparse":
            return lambda page: extract_text_resiliparse(page)
        options = self.options()
        return lambda page: extract_text(page, options)

    def __call__(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        html = table.column("html")
        sizes = pc.binary_length(html).to_pylist()
        texts: list[str | None] = []
        reasons: list[str | None] = []
        extract = self.extractor()
        errors = 0
        with _guard(cfg.timeout_s) as guard:
            for i, size in enumerate(sizes):
                if size is not None and size > cfg.max_html_bytes:
                    texts.append(None)
                    reasons.append("too_large")
                    continue
                page = html[i].as_py() if size else None
                text, reason = (None, "empty") if not page else _extract_one(page, extract, guard)
                if reason is None and (text is None or len(text) < max(cfg.min_text_chars, 1)):
                    text, reason = None, "empty"
                if reason == "error":
                    errors += 1
                texts.append(text)
                reasons.append(reason)
        if errors:
            log.warning("%s failed on %d of %d pages", cfg.backend, errors, table.num_rows)
        out = table.drop_columns(["html"])
        out = out.append_column(pa.field("text", pa.large_string()), pa.array(texts, pa.large_string()))
        return with_drop_reasons(out, reasons)


def _extract_one(
    page: str, extract: Callable[[str], str | None], guard: _AlarmGuard | _WatchdogGuard
) -> tuple[str | None, str | None]:
    """Extract one page under the deadline: ``(text, None)`` or ``(None, reason)``."""
    try:
        guard.arm()
        try:
            return extract(page), None
        finally:
            guard.disarm()
    except ExtractionTimeout:
        guard.disarm()  # the timer may have fired inside the finally above, before it disarmed
        return None, "timeout"
    except Exception as err:
        log.debug("extraction raised %r", err)
        return None, "error"
