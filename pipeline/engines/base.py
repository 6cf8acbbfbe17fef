"""What every engine runs: a pass = a list of work units, each turned into one output part.

A unit names its part and its inputs; a ``UnitProcessor`` turns one unit into one committed part
(through :class:`pipeline.shards.PartWriter`). Engines only decide where and in which order units run;
finished parts are skipped by their markers, so any engine can resume any pass.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.shards import is_done

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

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None: ...


class RunIncomplete(RuntimeError):
    """Some units failed; their parts are not written, and a rerun retries exactly those."""

    @classmethod
    def for_parts(cls, result: PassResult, total: int, out_dir: Path) -> RunIncomplete:
        details = "\n".join(f"  {part}: {error}" for part, error in sorted(result.failed.items()))
        return cls(
            f"{len(result.failed)} of {total} parts failed (details in {Path(out_dir) / FAILURES}); "
            f"rerun the same command to retry them:\n{details}"
        )


@dataclass
class PassResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def failure_path(out_dir: Path, part: str) -> Path:
    return Path(out_dir) / FAILURES / f"{part}.json"


def run_unit(processor: UnitProcessor, unit: WorkUnit, out_dir: Path) -> str:
    """Run one unit unless its part is done; record a failure instead of raising, so other units go on.

    Returns ``"skipped"``, ``"done"`` or ``"failed"``.
    """
    out_dir = Path(out_dir)
    if is_done(out_dir, unit.part):
        return "skipped"
    fail_file = failure_path(out_dir, unit.part)
    try:
        processor(unit, out_dir)
    except Exception as e:  # a bad unit must not stop the pass; it is reported and retried on rerun
        log.error("part %s (%s) failed: %s", unit.part, ", ".join(unit.inputs), e)
        fail_file.parent.mkdir(parents=True, exist_ok=True)
        fail_file.write_text(
            json.dumps(
                {
                    "part": unit.part,
                    "inputs": list(unit.inputs),
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                    "pid": os.getpid(),
                },
                indent=1,
            )
        )
        return "failed"
    fail_file.unlink(missing_ok=True)
    return "done"


def collect_result(out_dir: Path, units: list[WorkUnit], skipped: set[str]) -> PassResult:
    """Read back which units are done and which failed, from markers and failure files."""
    result = PassResult()
    for unit in units:
        if is_done(out_dir, unit.part):
            (result.skipped if unit.part in skipped else result.done).append(unit.part)
        else:
            fail_file = failure_path(out_dir, unit.part)
            error = json.loads(fail_file.read_text())["error"] if fail_file.exists() else "did not finish"
            result.failed[unit.part] = error
    return result


def run_pass(units: list[WorkUnit], out_dir: Path, run_todo: Callable[[list[WorkUnit]], None]) -> PassResult:
    """What every engine does around its own scheduling: skip finished parts, ``run_todo`` the others, then
    read back the outcome and raise :class:`RunIncomplete` if any part failed (after all others ran)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = {u.part for u in units if is_done(out_dir, u.part)}
    todo = [u for u in units if u.part not in skipped]
    if skipped:
        log.info("%d of %d parts already done, skipping them", len(skipped), len(units))
    if todo:
        run_todo(todo)
    result = collect_result(out_dir, units, skipped)
    if result.failed:
        raise RunIncomplete.for_parts(result, len(units), out_dir)
    return result


def write_progress(out_dir: Path, part: str, docs: int) -> None:
    """Let a progress bar see a running unit's document count (best effort, one tiny file per part)."""
    path = Path(out_dir) / PROGRESS / f"{part}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"docs": docs, "time": time.time()}))
    tmp.replace(path)
