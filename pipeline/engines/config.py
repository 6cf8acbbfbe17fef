"""Settings of the engine that runs a run's passes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.settings import Settings


class EngineConfig(Settings):
    """Which engine runs the stages and how wide."""

    kind: Literal["local", "spark"] = Field(
        "local", description="Execution engine: local (one machine, processes) or spark (a Spark cluster)."
    )
    tasks: int | None = Field(None, ge=1, description="Local engine: number of tasks (default: one per WARC file).")
    workers: int = Field(1, ge=1, description="Local engine: tasks run at the same time (processes).")
    batch_size: int = Field(500, ge=1, description="Documents per Arrow batch inside a task.")
    batch_bytes: int = Field(
        32 << 20,
        ge=1 << 20,
        description="WARC pass: end a batch early at this much decoded HTML (bytes of Python strings). Every "
        "stage's working memory grows with the batch: this bounds a worker's memory (about 0.75 GB peak at the "
        "default), whatever the page sizes.",
    )
    master: str | None = Field(
        None,
        description="Spark master URL, e.g. spark://host:7077, k8s://https://host:443 or local[4] "
        "(default: the one spark-submit passes, else local[*]).",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.executor.memory: 8g."
    )
