"""Spark engine: the same work units as the local engine, one Spark task per unit, through ``mapInArrow``.

A pass is a DataFrame of unit indices with one row per partition (``spark.range(n, numPartitions=n)``);
``mapInArrow`` runs the unit's processor (the very same picklable object the local engine runs) on an
executor and yields one status row. Parts are written by the executors with the shared
:class:`pipeline.core.parts.PartWriter` protocol (complete file published in one step, marker last), so the
output folder has the local engine's layout and schema, a retried task (lost executor, speculation) rewrites
its part atomically, and a rerun skips finished parts. The output is an object-store URL (``s3://...``) that
executors write directly, or a folder on a filesystem every executor mounts. Each task carries the driver's
store settings (:func:`pipeline.core.storage.storage_context`: options and AWS_* variables, inside the
pickled task, never in Spark's configuration or UI). The project's code is not assumed to be on executors:
it is zipped and shipped with ``addPyFile`` (or ``spark-submit --py-files``, see :func:`build_code_archive`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from pipeline.core.processes import ItemFailed, call_item
from pipeline.core.storage import Location, absolute, apply_storage_context, storage_context
from pipeline.engines.base import (
    PassResult,
    UnitProcessor,
    WorkUnit,
    listed_parts,
    record_failure,
    run_pass,
    run_unit,
)
from pipeline.engines.spark_code import ship_code

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipeline.dedup.config import DedupConfig

T = TypeVar("T")

log = logging.getLogger(__name__)

_RESULT_SCHEMA = pa.schema([pa.field("index", pa.int64()), pa.field("result", pa.binary())])


def spark_session(
    master: str | None = None, *, app_name: str = "cc-refinery", conf: dict[str, str] | None = None
) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (default: spark-submit's master, else ``local[*]``).

    Executors run this process's Python unless ``PYSPARK_PYTHON`` (or ``spark.pyspark.python`` under
    spark-submit) says otherwise; on a real cluster point it at the workers' environment.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",  # our own progress bar polls the parts
    }
    # the Python of executors: the driver reads PYSPARK_PYTHON when the context starts (default: python3)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    log_config = Path(__file__).with_name("log4j2.properties")
    settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{log_config}"
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("REFINERY_SPARK_LOG_LEVEL", "WARN"))
    return spark


def _run_indexed(
    fn_bytes: bytes, storage: dict[str, dict[str, Any]]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: run ``fn(i)`` for each index ``i`` of the partition, yield pickled results."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import cloudpickle

        apply_storage_context(storage)
        fn = cloudpickle.loads(fn_bytes)
        for batch in batches:
            for index in batch.column(0).to_pylist():
                result = cloudpickle.dumps(fn(index))
                columns = [pa.array([index], pa.int64()), pa.array([result], pa.binary())]
                yield pa.RecordBatch.from_arrays(columns, schema=_RESULT_SCHEMA)

    return run


class SparkStatusLog:
    """Logs the task counts of running Spark stages while a job runs, and failed attempts as warnings.

    The lines go to this module's logger: to stderr with ``-v``, and into the Prefect run's log when a flow
    drives the engine (our loggers are shipped there), so a cluster job is followed from the UI.
    """

    def __init__(self, spark: SparkSession, description: str, group: str, interval_s: float = 5.0) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.description = description
        self.group = group
        self.interval_s = interval_s
        self._stop = threading.Event()
        # the caller's context (e.g. a Prefect task run) goes with the thread, so its log lines land there too
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="spark-status", daemon=True)
        self._last: dict[int, tuple[int, int, int, int]] = {}
        self._start = 0.0

    def __enter__(self) -> SparkStatusLog:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll(final=True)
        log.info("spark: %s finished in %.1f s", self.description, time.perf_counter() - self._start)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def _poll(self, final: bool = False) -> None:
        """Log stages whose counts changed: the running ones, or at the end every stage of the job group (a job
        shorter than the interval still gets its line)."""
        try:
            if final:
                jobs = [self.tracker.getJobInfo(j) for j in self.tracker.getJobIdsForGroup(self.group)]
                stage_ids = [s for job in jobs if job is not None for s in job.stageIds]
            else:
                stage_ids = self.tracker.getActiveStageIds()
            infos = [self.tracker.getStageInfo(i) for i in stage_ids]
        except Exception as e:  # the context may be stopping; progress lines are best effort
            log.debug("spark status unavailable: %s", e)
            return
        for info in infos:
            if info is None:
                continue
            counts = (info.numTasks, info.numCompletedTasks, info.numActiveTasks, info.numFailedTasks)
            before = self._last.get(info.stageId)
            if counts == before:
                continue
            self._last[info.stageId] = counts
            total, done, running, failed = counts
            stage = f"spark: {self.description}: stage {info.stageId}"
            log.info("%s: %d/%d tasks done, %d running", stage, done, total, running)
            if failed > (before[3] if before else 0):
                log.warning("%s: %d task attempts failed so far; Spark retries them (see the Spark UI)", stage, failed)


@dataclass
class _UnitTask:
    """Runs unit ``i`` of a pass on an executor (picklable: the processor and units travel with it)."""

    processor: UnitProcessor
    units: Sequence[WorkUnit]
    out_dir: Location

    def __call__(self, index: int) -> str:
        return run_unit(self.processor, self.units[index], self.out_dir)


@dataclass
class SparkEngine:
    """Runs a pass's units as Spark tasks; holds the session (``spark``) for the passes that use Spark SQL."""

    spark: SparkSession
    progress: bool = True
    code_cache: Path | None = None
    shipped: Path | None = field(default=None, init=False)

    kind = "spark"

    def __post_init__(self) -> None:
        self.shipped = ship_code(self.spark, self.code_cache)
        context = self.spark.sparkContext
        log.info("spark engine: master %s, %d cores, UI %s", context.master, self.parallelism, context.uiWebUrl)

    @property
    def parallelism(self) -> int:
        return int(self.spark.sparkContext.defaultParallelism)

    def map_items(self, fn: Callable[[int], T], count: int, *, description: str = "tasks") -> list[T | ItemFailed]:
        """``[fn(0), ..., fn(count - 1)]``, each call one Spark task (so one retry unit), in index order; a call
        that raises comes back as :class:`ItemFailed` (Spark retries only lost tasks, not failed items)."""
        from pyspark import cloudpickle

        if count == 0:
            return []
        group = f"cc-refinery-{uuid.uuid4().hex}"
        self.spark.sparkContext.setJobGroup(group, description)
        frame = self.spark.range(count, numPartitions=count).toDF("index")
        run = _run_indexed(cloudpickle.dumps(partial(call_item, fn)), storage_context())
        out = frame.mapInArrow(run, "index long, result binary")
        try:
            with SparkStatusLog(self.spark, description, group):
                rows = out.collect()
        except Exception as e:  # a task failed past Spark's retries (its Python worker died, an executor is lost)
            error = spark_job_error(e)
            log.error("spark: %s failed: %s", description, error)
            return [ItemFailed(error)] * count  # the job's results are lost; work committed on disk stays done
        results: list[Any] = [None] * count
        for row in rows:
            results[row["index"]] = cloudpickle.loads(row["result"])
        return results

    def run_units(
        self, units: list[WorkUnit], processor: UnitProcessor, out_dir: Location | str, *, description: str = "parts"
    ) -> PassResult:
        """Run every unit not yet done, one Spark task each; raise :class:`RunIncomplete` if any failed."""
        from pipeline.engines.local import ProgressMonitor

        out_dir = absolute(out_dir)  # as executors in other working directories see it

        def run_todo(todo: list[WorkUnit]) -> None:
            with ProgressMonitor(out_dir, units, enabled=self.progress, description=description):
                task = _UnitTask(processor, todo, out_dir)
                outcomes = self.map_items(task, len(todo), description=f"cc-refinery: {description}")
            died = [(u, o.error) for u, o in zip(todo, outcomes, strict=True) if isinstance(o, ItemFailed)]
            if died:  # units whose task died record why (each task runs one unit: no "not run" others)
                done, failed = listed_parts(out_dir)  # one listing each, however many died
                for unit, error in died:
                    if unit.part not in done and unit.part not in failed:
                        log.error("part %s (%s) failed: %s", unit.part, ", ".join(unit.inputs), error)
                        record_failure(out_dir, unit, error)

        return run_pass(units, out_dir, run_todo, description)

    def cluster_duplicates(self, output_dir: Location, names: list[str], config: DedupConfig) -> dict:
        """MinHash clustering in Spark SQL: no per-document array reaches the driver."""
        from pipeline.dedup.spark_clustering import cluster_spark

        return cluster_spark(self.spark, output_dir, names, config)


def spark_job_error(error: Exception) -> str:
    """The first meaningful line of a failed Spark job (py4j wraps the executor's error in a Java stack)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in lines if "Error" in line or "Exception" in line), lines[0] if lines else "")
    return f"spark task failed: {cause[:500]}"
