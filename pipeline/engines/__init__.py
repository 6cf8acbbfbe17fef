"""Engines run a pass's work units: ``local`` (watched processes on this machine) or ``spark`` (a Spark task each).

What an engine offers is all in :class:`pipeline.engines.base.Engine`; a new engine (Ray, say) implements that
protocol and a branch in :func:`make_engine`, and every pass runs on it unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.engines.base import Engine

if TYPE_CHECKING:
    from pipeline.engines.config import EngineConfig

__all__ = ["Engine", "make_engine"]


def make_engine(config: EngineConfig, *, progress: bool = True) -> Engine:
    """The engine ``config`` names; a Spark engine joins the active session or starts one on ``config.master``."""
    if config.kind == "spark":
        from pipeline.engines.spark import SparkEngine, spark_session

        return SparkEngine(spark_session(config.master, conf=config.spark_conf), progress=progress)
    from pipeline.engines.local import LocalEngine

    return LocalEngine(workers=config.workers, tasks=config.tasks, progress=progress)
