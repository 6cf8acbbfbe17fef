"""Engines run a pass's work units: ``local`` (datatrove's process pool) or ``spark`` (one Spark task per unit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.engines.config import EngineConfig
    from pipeline.engines.base import PassResult, UnitProcessor, WorkUnit


class Engine(Protocol):
    """What every pass needs from an engine."""

    kind: str
    progress: bool

    @property
    def parallelism(self) -> int: ...

    def run_units(
        self, units: list[WorkUnit], processor: UnitProcessor, out_dir: Path, *, description: str = "parts"
    ) -> PassResult: ...


def make_engine(config: EngineConfig, *, progress: bool = True) -> Engine:
    """The engine ``config`` names; a Spark engine joins the active session or starts one on ``config.master``."""
    if config.kind == "spark":
        from pipeline.engines.spark import SparkEngine, spark_session

        return SparkEngine(spark_session(config.master, conf=config.spark_conf), progress=progress)
    from pipeline.engines.local import LocalEngine

    return LocalEngine(workers=config.workers, tasks=config.tasks, progress=progress)
