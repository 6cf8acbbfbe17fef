"""Local engine: datatrove's executor splits work units over tasks; each task runs in a watched process.

datatrove does what it is good at (task ranks, per-task logs and stats); our one step runs the units of
its rank. With more than one worker each task is a forked process supervised by
:func:`pipeline.core.processes.run_supervised` (a dead worker fails its parts, never hangs the pass); with
one worker the tasks run in this process. Resume is by our per-part markers, finer than datatrove's
per-task completions, so datatrove's own task skipping is off (it would be wrong if the number of tasks
changes between runs).

With the default task count (one per unit) a task does not run a fixed unit: it claims the next unclaimed
one, and goes on claiming until none is left (:class:`UnitClaims`). A worker process thus runs many units
and sets up once what every unit needs (an S3 client costs a forked process about 0.1 s before its first
request), while a slow unit still never holds others back; the tasks started after every unit was claimed
end at once. A task whose process dies fails only the unit it was running; the next task takes its place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from loguru import logger as datatrove_logger
from tqdm.auto import tqdm

from pipeline.core.parts import pass_listing
from pipeline.core.processes import ItemFailed, call_item, run_supervised
from pipeline.core.storage import Location, is_remote, location, scratch_dir
from pipeline.engines.base import PassResult, UnitProcessor, WorkUnit, fail_unfinished, run_pass, run_unit
from pipeline.engines.progress import ProgressReader

if TYPE_CHECKING:
    from pipeline.dedup.config import DedupConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


class SupervisedExecutor(LocalPipelineExecutor):
    """datatrove's local executor with each task in its own process, watched by this one.

    datatrove runs tasks on a ``multiprocess.Pool``, which waits forever for a task whose worker the OS
    killed (SIGBUS on a full disk, the OOM killer, ``kill -9``). Here the parent waits on the workers'
    exit sentinels instead (:func:`pipeline.core.processes.run_supervised`): a worker that dies is seen
    at once, its unfinished units fail with the signal's name (``on_death(rank, why)``), and the other
    tasks go on. Task set-up, logs and stats are datatrove's (``_run_for_rank``).
    """

    def __init__(self, *args: object, on_death: Callable[[int, str], None], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.on_death = on_death

    def run(self) -> None:
        if self.workers == 1:  # in this process (tracebacks, debuggers); no queue-manager process to orphan
            pipeline = self.pipeline
            for rank in range(self.local_tasks):
                self.pipeline = deepcopy(pipeline)  # fresh step stats per task, as datatrove does
                self._run_for_rank(rank, local_rank=0)
            self.pipeline = pipeline
            return

        def run_task(rank: int) -> None:
            self._run_for_rank(rank, local_rank=1)  # datatrove prints only local rank 0's logs: ours say enough

        def check(rank: int, outcome: object) -> None:
            if isinstance(outcome, ItemFailed):
                self.on_death(rank, outcome.error)

        run_supervised(run_task, self.local_tasks, self.workers, on_result=check)


class UnitClaims:
    """Which task runs which unit, decided as tasks become free: a task claims unit ``i`` by creating the
    symlink ``<folder>/i`` -> its rank (atomic, and a task killed at any moment leaves no half-made claim
    and holds no lock)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def claim(self, count: int, rank: int) -> Iterator[int]:
        """Indices this task claims, in order, until every unit is claimed."""
        for index in range(count):
            try:
                os.symlink(str(rank), self.folder / str(index))
            except FileExistsError:
                continue
            yield index

    def claimed_by(self, rank: int, count: int) -> list[int]:
        out = []
        for index in range(count):
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(self.folder / str(index)) == str(rank):
                    out.append(index)
        return out


class UnitsStep(PipelineStep):
    """The datatrove step of a pass: runs the units ``units[rank::world_size]`` (all not done: the pass listed
    the markers just before, under the run lock)."""

    name = "cc-refinery units"
    type = "pass"

    def __init__(
        self,
        units: list[WorkUnit],
        processor: UnitProcessor,
        out_dir: Location,
        quiet: bool,
        claims: UnitClaims | None = None,
    ) -> None:
        super().__init__()
        self.units = units
        self.processor = processor
        self.out_dir = location(out_dir)
        self.quiet = quiet
        self.claims = claims

    def run(self, data: object = None, rank: int = 0, world_size: int = 1) -> None:
        if self.quiet:
            datatrove_logger.disable("datatrove")
        if self.claims is not None:
            indices: Iterable[int] = self.claims.claim(len(self.units), rank)
        else:
            indices = range(rank, len(self.units), world_size)
        for index in indices:
            unit = self.units[index]
            with self.track_time():
                outcome = run_unit(self.processor, unit, self.out_dir, check_done=False)  # todo: just listed
            self.stat_update(outcome)


def default_tasks(num_units: int, workers: int) -> int:
    """One task per unit: the finest split, so a slow WARC file never holds others back."""
    return max(1, num_units) if workers > 1 else 1


def logs_dir(out_dir: Location) -> Path:
    """datatrove's per-task logs: beside the parts on disk; in local scratch for a folder on a store."""
    if not is_remote(out_dir):
        return Path(out_dir) / "logs"
    return scratch_dir() / "refinery-logs" / hashlib.sha1(str(out_dir).encode()).hexdigest()[:16]


def run_local(
    units: list[WorkUnit],
    processor: UnitProcessor,
    out_dir: Location | str,
    *,
    workers: int = 1,
    tasks: int | None = None,
    progress: bool = True,
    description: str = "parts",
) -> PassResult:
    """Run every unit not yet done; raise :class:`RunIncomplete` if any failed (after all others ran)."""
    out_dir = location(out_dir)

    def run_todo(todo: list[WorkUnit]) -> None:
        n_tasks = tasks or default_tasks(len(todo), workers)
        with contextlib.ExitStack() as stack:
            # each unit runs once in this pass, under the run lock: a part the listing shows without files needs
            # no clearing (on a store that saves about 4 DELETEs per part); not for units that write no parts
            if getattr(processor, "writes_parts", True):
                stack.enter_context(pass_listing(out_dir))
            claims = None
            if tasks is None and n_tasks > 1:  # tasks claim units as they become free (see the module)
                claims = UnitClaims(Path(stack.enter_context(tempfile.TemporaryDirectory(dir=scratch_dir()))))
            run_tasks(todo, n_tasks, claims)

    def run_tasks(todo: list[WorkUnit], n_tasks: int, claims: UnitClaims | None) -> None:
        def on_death(rank: int, why: str) -> None:
            if claims is not None:  # the unit it was running; the other tasks run the rest
                fail_unfinished([todo[i] for i in claims.claimed_by(rank, len(todo))], out_dir, why)
            else:
                fail_unfinished(todo[rank::n_tasks], out_dir, why)

        executor = SupervisedExecutor(
            pipeline=[UnitsStep(todo, processor, out_dir, quiet=True, claims=claims)],
            tasks=n_tasks,
            workers=min(workers, n_tasks),
            logging_dir=str(logs_dir(out_dir)),
            skip_completed=False,
            # fork: workers inherit the quiet log setup and need no __main__ guard; they never touch tqdm
            start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else "forkserver",
            on_death=on_death,
        )
        datatrove_logger.disable("datatrove")  # its per-task banners; our funnel and logs say what happened
        with ProgressMonitor(out_dir, units, enabled=progress, description=description):
            executor.run()

    return run_pass(units, out_dir, run_todo, description)


@dataclass
class LocalEngine:
    """One machine: ``workers`` watched processes at once (one: in this process)."""

    workers: int = 1
    tasks: int | None = None
    progress: bool = True

    kind = "local"

    @property
    def parallelism(self) -> int:
        return self.workers

    def run_units(
        self, units: list[WorkUnit], processor: UnitProcessor, out_dir: Location, *, description: str = "parts"
    ) -> PassResult:
        return run_local(
            units, processor, out_dir, workers=self.workers, tasks=self.tasks, progress=self.progress,
            description=description,
        )  # fmt: skip

    def map_items(self, fn: Callable[[int], T], count: int, *, description: str = "tasks") -> list[T | ItemFailed]:
        """``fn(i)`` for every item: in this process with one worker, else each in its own watched process."""
        bar = tqdm(total=count, desc=description, unit="item", dynamic_ncols=True) if self.progress and count else None

        def advance(index: int, outcome: object) -> None:
            if bar is not None:
                bar.update(1)

        try:
            if self.workers <= 1 or count <= 1:
                results = []
                for index in range(count):
                    results.append(call_item(fn, index))
                    advance(index, results[-1])
                return results
            return run_supervised(fn, count, self.workers, on_result=advance)
        finally:
            if bar is not None:
                bar.close()

    def cluster_duplicates(self, output_dir: Location, names: list[str], config: DedupConfig) -> dict:
        """MinHash clustering in this process with numpy (band buckets spill to disk past the memory budget)."""
        from pipeline.dedup.local_clustering import cluster

        return cluster(output_dir, names, config)


class ProgressMonitor:
    """A progress bar over parts, fed by polling markers and live counters (works for any worker, any store)."""

    def __init__(self, out_dir: Location, units: list[WorkUnit], enabled: bool, description: str) -> None:
        self.reader = ProgressReader(out_dir, [u.part for u in units])
        self.enabled = enabled
        self.description = description
        self.interval_s = 2.0 if is_remote(out_dir) else 0.5
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: tqdm | None = None

    def __enter__(self) -> ProgressMonitor:
        if self.enabled:
            self._bar = tqdm(total=len(self.reader.parts), desc=self.description, unit="part", dynamic_ncols=True)
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._refresh()
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._refresh()

    def _refresh(self) -> None:
        assert self._bar is not None
        try:
            progress = self.reader.read()
        except Exception as e:  # a progress bar must never stop a pass (e.g. a store hiccup)
            log.debug("progress poll failed: %s", e)
            return
        self._bar.n = progress.done
        self._bar.set_postfix_str(f"docs read {progress.read:,}, kept {progress.kept:,}", refresh=False)
        self._bar.refresh()
