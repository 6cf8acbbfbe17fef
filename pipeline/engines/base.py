"""What every engine runs: a pass = a list of work units, each turned into one output part.

A unit names its part and its inputs; a ``UnitProcessor`` turns one unit into one committed part
(through :class:`pipeline.core.parts.PartWriter`). Engines only decide where and in which order units run;
finished parts are skipped by their markers, so any engine can resume any pass.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from pipeline.core.parts import MARKERS, marker_path
from pipeline.core.processes import ItemFailed
from pipeline.core.storage import (
    Location,
    StorageError,
    describe_storage_error,
    is_remote,
    list_names,
    location,
    read_files,
    remove,
    write_bytes_atomic,
)

if TYPE_CHECKING:
    from pipeline.dedup.config import DedupConfig

__all__ = ["Engine", "ItemFailed", "PassResult", "RunIncomplete", "UnitProcessor", "WorkUnit"]
T = TypeVar("T")

log = logging.getLogger(__name__)

FAILURES = "failures"
PROGRESS = "progress"


@dataclass(frozen=True)
class WorkUnit:
    """One part of a pass: ``part`` is written from ``inputs`` (WARC paths or Parquet files)."""

    part: str
    inputs: tuple[str, ...]


class UnitProcessor(Protocol):
    """Turns one unit into one committed part under ``out_dir``; must be picklable."""

    def __call__(self, unit: WorkUnit, out_dir: Location) -> None: ...


class Engine(Protocol):
    """Everything a pass may ask of an engine. Passes never look at which engine they have.

    - ``run_units``: turn each work unit into its committed part (skipping done parts, recording failures).
    - ``map_items``: ``[fn(0), ..., fn(n - 1)]`` in order, spread over workers or cluster tasks; an item whose
      call raised or whose worker died comes back as :class:`ItemFailed` (tokenization uses it).
    - ``cluster_duplicates``: the one global step of dedup (MinHash band buckets -> verified pairs ->
      connected components) over the signature parts, with the engine's own machinery; every engine must
      make the same decisions (:mod:`pipeline.dedup.local_clustering` is the reference, any engine may call it).
    """

    kind: str
    progress: bool

    @property
    def parallelism(self) -> int: ...

    def run_units(
        self, units: list[WorkUnit], processor: UnitProcessor, out_dir: Location, *, description: str = "parts"
    ) -> PassResult: ...

    def map_items(self, fn: Callable[[int], T], count: int, *, description: str = "tasks") -> list[T | ItemFailed]: ...

    def cluster_duplicates(self, output_dir: Location, names: list[str], config: DedupConfig) -> dict: ...


class RunIncomplete(RuntimeError):
    """Some units failed; their parts are not written, and a rerun retries exactly those."""

    def __init__(self, message: str, result: PassResult | None = None) -> None:
        super().__init__(message)
        self.result = result or PassResult()

    @classmethod
    def for_parts(
        cls, result: PassResult, units: list[WorkUnit], out_dir: Location, description: str = "parts"
    ) -> RunIncomplete:
        inputs = {u.part: ", ".join(u.inputs) for u in units}
        details = "\n".join(
            f"  {part} ({inputs.get(part, '?')}): {error}" for part, error in sorted(result.failed.items())
        )
        return cls(
            f"{description}: {len(result.failed)} of {len(units)} parts failed "
            f"(details in {location(out_dir) / FAILURES}); rerun the same command to retry them:\n{details}",
            result,
        )


@dataclass
class PassResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def failure_path(out_dir: Location | str, part: str) -> Location:
    return location(out_dir) / FAILURES / f"{part}.json"


def run_unit(processor: UnitProcessor, unit: WorkUnit, out_dir: Location, *, check_done: bool = True) -> str:
    """Run one unit unless its part is done; record a failure instead of raising, so other units go on.

    ``check_done=False`` when the caller knows the part is not done (:func:`run_pass` listed the markers just
    before, under the run lock): on a store that check is a request per part. Keep it where a unit may run
    again after it finished (a retried Spark task). Returns ``"skipped"``, ``"done"`` or ``"failed"``.
    """
    out_dir = location(out_dir)
    if check_done and part_done(out_dir, unit.part):
        return "skipped"
    try:
        processor(unit, out_dir)
    except Exception as e:  # a bad unit must not stop the pass; it is reported and retried on rerun
        error = describe_error(e, out_dir)
        log.error("part %s (%s) failed: %s", unit.part, ", ".join(unit.inputs), error)
        log.info("part %s traceback:\n%s", unit.part, traceback.format_exc())
        record_failure(out_dir, unit, error, traceback.format_exc())
        return "failed"
    return "done"


def part_done(out_dir: Location, part: str) -> bool:
    """Whether ``part``'s marker exists: on a store one GET (a failed HEAD would be followed by a LIST)."""
    if not is_remote(out_dir):
        return marker_path(out_dir, part).exists()
    found = read_files([marker_path(out_dir, part)])[0]
    if isinstance(found, FileNotFoundError):
        return False
    if isinstance(found, Exception):
        raise found
    return True


def describe_error(e: BaseException, where: Location) -> str:
    """One line for a failed unit; a full disk says so, and where (OSError often names no file)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        name = f" ({e.filename})" if e.filename else ""
        return f"disk full: no space left on device writing under {where}{name}"
    if is_remote(where) and not isinstance(e, StorageError | ValueError):
        return describe_storage_error(e, where)
    return f"{type(e).__name__}: {e}"


def record_failure(out_dir: Location, unit: WorkUnit, error: str, details: str = "") -> None:
    """The failure file of ``unit``: what went wrong, read back by :func:`collect_result` and the report."""
    info = {"part": unit.part, "inputs": list(unit.inputs), "error": error, "traceback": details, "pid": os.getpid()}
    try:
        write_bytes_atomic(failure_path(out_dir, unit.part), json.dumps(info, indent=1).encode())
    except OSError as e:  # e.g. the disk is full: the pass still reports the part as failed ("did not finish")
        log.error("could not record the failure of part %s: %s", unit.part, e)


def fail_unfinished(units: list[WorkUnit], out_dir: Location, error: str) -> None:
    """The process running ``units`` in order ended with ``error`` (e.g. "worker process killed by SIGBUS"): the
    first unfinished unit is the one it was running, the ones after it never ran. Each gets a failure file."""
    culprit = None
    done, failed = listed_parts(out_dir)
    for unit in units:
        if unit.part in done or unit.part in failed:
            continue
        if culprit is None:
            culprit, message = unit.part, error
        else:
            message = f"not run: {error} on part {culprit}"
        log.error("part %s (%s) failed: %s", unit.part, ", ".join(unit.inputs), message)
        record_failure(out_dir, unit, message)


def collect_result(out_dir: Location, units: list[WorkUnit], skipped: set[str]) -> PassResult:
    """Read back which units are done and which failed, from markers and failure files."""
    result = PassResult()
    done, failed = listed_parts(out_dir)
    for unit in units:
        if unit.part in done:
            (result.skipped if unit.part in skipped else result.done).append(unit.part)
        else:
            error = "did not finish"
            if unit.part in failed:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    error = json.loads(failure_path(out_dir, unit.part).read_text())["error"]
            result.failed[unit.part] = error
    return result


def listed_parts(out_dir: Location | str) -> tuple[set[str], set[str]]:
    """Finished and failed parts, from one listing each (not one request per part: stores charge per request)."""
    out_dir = location(out_dir)
    done = {n.removesuffix(".done") for n in list_names(out_dir / MARKERS, ".done")}
    failed = {n.removesuffix(".json") for n in list_names(out_dir / FAILURES, ".json")}
    return done, failed


def run_pass(
    units: list[WorkUnit], out_dir: Location, run_todo: Callable[[list[WorkUnit]], None], description: str = "parts"
) -> PassResult:
    """What every engine does around its own scheduling: skip finished parts, ``run_todo`` the others, then
    read back the outcome and raise :class:`RunIncomplete` if any part failed (after all others ran)."""
    out_dir = location(out_dir)
    if not is_remote(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    done, failed = listed_parts(out_dir)
    skipped = {u.part for u in units if u.part in done}
    todo = [u for u in units if u.part not in skipped]
    for unit in todo:  # failures of earlier attempts: this attempt writes its own
        if unit.part in failed:
            remove(failure_path(out_dir, unit.part))
    if skipped:
        log.info("%d of %d parts already done, skipping them", len(skipped), len(units))
    if todo:
        run_todo(todo)
    result = collect_result(out_dir, units, skipped)
    if result.failed:
        raise RunIncomplete.for_parts(result, units, out_dir, description)
    return result


REMOTE_PROGRESS_EVERY_S = 5.0
"""On a store each progress update is a request: at most one per part this often, the first after a part has
run this long (a part done sooner shows as done by its marker; most dedup parts take well under a second)."""
_last_progress: dict[str, float] = {}


def write_progress(out_dir: Location | str, part: str, docs: int) -> None:
    """Let a progress bar see a running unit's document count (best effort, one tiny file per part)."""
    path = location(out_dir) / PROGRESS / f"{part}.json"
    now = time.monotonic()
    if is_remote(path):
        if now - _last_progress.setdefault(str(path), now) < REMOTE_PROGRESS_EVERY_S:
            return
        _last_progress[str(path)] = now
    try:
        write_bytes_atomic(path, json.dumps({"docs": docs, "time": time.time()}).encode())
    except OSError as e:  # a progress bar is not worth failing a part over
        log.debug("could not write progress of %s: %s", part, e)
