"""Whole runs on a real S3-compatible store (SeaweedFS on 127.0.0.1): same output as on local disk, resume after
kill -9, the Spark engine with no shared filesystem, a store that goes away, bad locations, no leaked secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipeline.core.parts import done_parts, read_documents
from pipeline.core.storage import location
from tests.objectstore import READER_KEY, READER_SECRET, SECRET_KEY, SeaweedServer, store_env

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)


def _run_command(output: str, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.app.cli", "run", "--sample", "--output", output, "--name", name,
        "--workers", "2", "--no-progress", *extra,
    ]  # fmt: skip


def _env(server: SeaweedServer, scratch: Path, **overrides: str) -> dict[str, str]:
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO), "REFINERY_SCRATCH": str(scratch)}
    env.update(overrides)
    return env


def _rows(run_dir: object) -> list[tuple[str, str]]:
    table = read_documents(location(str(run_dir)), columns=["id", "text"])
    return sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))


def _shard_hashes(tokens_dir: object) -> list[tuple[str, str]]:
    manifest = json.loads((location(str(tokens_dir)) / "manifest.json").read_text())
    return [(s["name"], s["sha256"]) for s in manifest["shards"]]


def _wait_for(condition: callable, proc: subprocess.Popen, timeout: float = 300) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the moment the test waits for")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the run never reached the moment the test waits for")
        time.sleep(0.05)


def _all_objects(server: SeaweedServer, bucket: str) -> dict[str, bytes]:
    fs = server.filesystem()
    return {key: fs.cat_file(key) for key in fs.find(bucket.removeprefix("s3://"))}


@pytest.fixture(scope="module")
def s3_sample_run(object_store: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`refinery run --sample --workers 2 --output s3://...`, once for the module, from an empty working dir."""
    bucket = f"s3://{object_store.create_bucket('run')}"
    work = tmp_path_factory.mktemp("s3-run")
    cwd, scratch = work / "cwd", work / "scratch"
    cwd.mkdir()
    done = subprocess.run(
        _run_command(f"{bucket}/out", "s3"), cwd=cwd, env=_env(object_store, scratch), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"bucket": bucket, "run_dir": f"{bucket}/out/s3", "done": done, "cwd": cwd, "scratch": scratch}


def test_sample_run_to_s3_equals_a_local_run(s3_sample_run: dict, s3_env: SeaweedServer, sample_run) -> None:  # noqa: ANN001
    run_dir = s3_sample_run["run_dir"]
    assert _rows(run_dir) == _rows(sample_run.run_dir)
    assert _rows(f"{run_dir}/dedup") == _rows(sample_run.run_dir / "dedup")
    assert _shard_hashes(f"{run_dir}/tokens") == _shard_hashes(sample_run.tokens_dir)
    assert (location(run_dir) / "report" / "index.html").exists()
    assert (location(run_dir) / "report" / "report.json").exists()
    assert "s3://" in s3_sample_run["done"].stdout  # the summary names the store locations
    assert list(s3_sample_run["cwd"].iterdir()) == [], "the run wrote into its local working directory"
    assert not (location(run_dir) / ".refinery.lock").exists(), "the run's lease was not released"


def test_no_secret_in_outputs_or_logs(s3_sample_run: dict, object_store: SeaweedServer) -> None:
    done = s3_sample_run["done"]
    assert SECRET_KEY not in done.stdout + done.stderr
    leaked = [
        key for key, data in _all_objects(object_store, s3_sample_run["bucket"]).items() if SECRET_KEY.encode() in data
    ]
    assert leaked == []
    local = [p for p in s3_sample_run["scratch"].rglob("*") if p.is_file() and SECRET_KEY.encode() in p.read_bytes()]
    assert local == []


def test_results_read_with_no_project_code(s3_sample_run: dict, s3_env: SeaweedServer) -> None:
    """What the README shows: pyarrow.dataset, DuckDB and Hugging Face datasets on the store."""
    import duckdb
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=os.environ["AWS_ACCESS_KEY_ID"],
                           secret=os.environ["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    prefix = s3_sample_run["run_dir"].removeprefix("s3://") + "/dedup/documents"
    expected = len(_rows(f"{s3_sample_run['run_dir']}/dedup"))

    table = ds.dataset(prefix, filesystem=fs, format="parquet").to_table(columns=["id", "text"])
    assert table.num_rows == expected

    con = duckdb.connect()
    con.register_filesystem(fs)
    ((count,),) = con.sql(f"SELECT count(*) FROM read_parquet('s3://{prefix}/*.parquet')").fetchall()
    assert count == expected

    from datasets import load_dataset

    options = {"key": os.environ["AWS_ACCESS_KEY_ID"], "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
               "client_kwargs": {"endpoint_url": s3_env.endpoint}}  # fmt: skip
    data = load_dataset("parquet", data_files=f"s3://{prefix}/*.parquet", storage_options=options, split="train",
                        cache_dir=str(s3_sample_run["scratch"] / "hf"))  # fmt: skip
    assert data.num_rows == expected


def test_kill_9_mid_pass_then_rerun_has_every_document_once(
    object_store: SeaweedServer,
    bucket: str,
    tmp_path: Path,
    sample_run,  # noqa: ANN001
) -> None:
    run_dir = f"{bucket}/out/resumed"
    env = _env(object_store, tmp_path / "scratch")
    command = _run_command(f"{bucket}/out", "resumed")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    total = len(sample_run.result.done)
    _wait_for(lambda: 1 <= len(done_parts(run_dir)) < total, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: its process and its workers
    proc.wait()
    partial = _rows(run_dir)
    assert len(partial) == len({i for i, _ in partial})

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = _rows(run_dir)
    assert len(rows) == len({i for i, _ in rows}), "a document is duplicated after resume"
    assert set(partial) <= set(rows), "a document that survived the kill was lost"
    assert rows == _rows(sample_run.run_dir), "resumed output differs from an uninterrupted run"
    assert _rows(f"{run_dir}/dedup") == _rows(sample_run.run_dir / "dedup")


def test_store_going_away_mid_run_fails_clearly_and_the_rerun_finishes(tmp_path: Path, sample_run) -> None:  # noqa: ANN001
    server = SeaweedServer(tmp_path / "store").start()
    try:
        bucket = f"s3://{server.create_bucket('flaky')}"
        run_dir = f"{bucket}/out/flaky"
        # fewer client retries (botocore's default: 5 attempts with backoff) only make the failure come sooner
        env = _env(server, tmp_path / "scratch", AWS_MAX_ATTEMPTS="2")
        command = _run_command(f"{bucket}/out", "flaky")
        with open(tmp_path / "stderr.txt", "w") as err:
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=err, text=True, start_new_session=True)
            with store_env(server):
                _wait_for(lambda: len(done_parts(run_dir)) >= 1, proc)
            server.stop()
            try:
                code = proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        stderr = (tmp_path / "stderr.txt").read_text()
        assert code != 0, "the run cannot have finished without its store"
        assert "Traceback" not in stderr
        named = [line for line in stderr.splitlines() if run_dir in line and not line.startswith("20")]  # not logs
        assert any("unreachable" in line or "the store failed" in line for line in named), stderr[-3000:]

        server.start()  # the same ports and data: the store is back
        rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        with store_env(server):
            rows = _rows(run_dir)
        assert rows == _rows(sample_run.run_dir)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("output", "env_overrides", "expected"),
    [
        ("foo://somewhere/out", {}, "no storage backend for scheme 'foo'"),
        ("s3://no-such-bucket-refinery/out", {}, "the bucket does not exist"),
        ("{bucket}/out", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "access denied"),
        ("{bucket}/out", {"AWS_ACCESS_KEY_ID": READER_KEY, "AWS_SECRET_ACCESS_KEY": READER_SECRET}, "access denied"),
    ],
    ids=["unknown-scheme", "missing-bucket", "wrong-credentials", "read-only"],
)
def test_unusable_locations_fail_in_one_line_with_exit_2(
    object_store: SeaweedServer, bucket: str, tmp_path: Path, output: str, env_overrides: dict, expected: str
) -> None:
    output = output.format(bucket=bucket)
    env = _env(object_store, tmp_path / "scratch", **env_overrides)
    done = subprocess.run(_run_command(output, "bad"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and expected in errors[0] and output.split("/out")[0] in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    for secret in (SECRET_KEY, READER_SECRET, "not-the-secret"):
        assert secret not in done.stdout + done.stderr
    assert object_store.filesystem().find(bucket.removeprefix("s3://")) == [], "something was written"


def test_spark_engine_local_writes_the_store_directly(
    bucket: str,
    tmp_path: Path,
    mirror_url: str,
    sample_run,
    request: pytest.FixtureRequest,  # noqa: ANN001
) -> None:
    """local[2]: executors get the store settings from their tasks (their JVM started before the store env)."""
    pytest.importorskip("pyspark")
    spark = request.getfixturevalue("spark")
    _spark_run(spark, bucket, mirror_url, sample_run)


def _spark_run(spark, bucket: str, mirror_url: str, sample_run) -> None:  # noqa: ANN001
    from pipeline.app.run import SAMPLE_VAL_SHARD_TOKENS, run_pipeline
    from pipeline.engines.spark import SparkEngine
    from tests.samples import sample_config

    overrides = {"engine.kind": "spark", "tokenizer.val_shard_tokens": SAMPLE_VAL_SHARD_TOKENS}  # as sample_run
    config = sample_config(mirror_url, f"{bucket}/out", "spark", overrides)  # type: ignore[arg-type]
    summary = run_pipeline(config, progress=False, engine=SparkEngine(spark, progress=False))
    assert str(summary.run_dir).startswith("s3://")
    assert _rows(summary.run_dir) == _rows(sample_run.run_dir)
    assert _rows(f"{summary.run_dir}/dedup") == _rows(sample_run.run_dir / "dedup")
    assert _shard_hashes(summary.tokens_dir) == _shard_hashes(sample_run.tokens_dir)
