"""The pipeline submitted with spark-submit to a real standalone cluster (master + worker on 127.0.0.1).

Executors run a Python that has the project's third-party dependencies but not the project itself, as a
fresh cluster node would: the code reaches them only as the zip from ``refinery spark package``. Results are
compared part by part with the session's local-engine run on the same served sample crawl.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.app.config import SAMPLE_DUMP
from pipeline.core.parts import DOCUMENTS, MARKERS, STATS, read_documents
from pipeline.core.storage import location
from pipeline.engines.spark_code import ARCHIVE_PREFIX, CODE_PACKAGES
from tests.outputs import documents_by_part, funnel
from tests.spark_cluster import StandaloneCluster, java_home, spark_home, standalone_cluster

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(java_home() is None, reason="no Java found (JAVA_HOME or java on PATH): Spark needs a JVM"),
]

NUM_PARTS = 4
"""WARC files in the sample crawl: one part (one Spark task) each."""
SUBMIT_TIMEOUT_S = 480.0
NO_DEDUP = {"dedup": {"exact": False, "minhash": {"enabled": False}}}
SMALL_SHUFFLES = {"spark.sql.shuffle.partitions": "4"}
"""A few hundred documents: Spark's default 200 shuffle partitions would only add task overhead to dedup."""
SERIAL_TASKS = {"spark.task.cpus": "2"}
"""Each task takes both worker cores: parts finish one by one, so there is time to kill between two of them."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """One master + one 2-core worker for the module (starting them takes ~10-20 s)."""
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), cores=2, memory="2g") as running:
        yield running


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``refinery spark package``: the code zip (for --py-files) and the entry script."""
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "spark", "package", "--output", str(dist)],
        capture_output=True,
        text=True,
        check=True,
    )
    (archive,) = dist.glob(f"{ARCHIVE_PREFIX}-*.zip")
    entry = dist / "refinery_main.py"
    assert str(archive) in done.stdout and entry.is_file()
    return archive, entry


@pytest.fixture(scope="module")
def node_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python like a cluster node's: this environment's third-party packages, but not the project.

    A virtualenv whose site-packages points (one .pth line) at a folder of links to every installed
    distribution except the project's packages and its editable-install hooks; so ``import pipeline``
    only works from the shipped zip, whether the project is installed editable or not.
    """
    root = tmp_path_factory.mktemp("node-env")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root / "env")
    deps = root / "deps"
    deps.mkdir()
    hidden = {*CODE_PACKAGES, "flows"}
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if name in hidden or name.startswith(("__editable__", "cc_refinery")) or name.endswith(".pth"):
            continue
        (deps / name).symlink_to(entry)
    (site_packages,) = (root / "env").glob("lib/python*/site-packages")
    (site_packages / "cluster-node-deps.pth").write_text(f"{deps}\n")
    python = root / "env" / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import pyarrow, pyspark, trafilatura, datatrove; import pipeline"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    # the dependencies import; the project does not (else the zip check below would prove nothing)
    assert "No module named 'pipeline'" in probe.stderr, probe.stderr
    return python


def submit_command(
    cluster: StandaloneCluster, package: tuple[Path, Path], run_args: list[str], conf: dict[str, str] | None = None
) -> list[str]:
    """``spark-submit --master <cluster> --py-files <zip> refinery_main.py run ...``."""
    archive, entry = package
    confs = [arg for key, value in (conf or {}).items() for arg in ("--conf", f"{key}={value}")]
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        cluster.master_url,
        *confs,
        "--py-files",
        str(archive),
        str(entry),
        "run",  # no --engine: under spark-submit the Spark engine is the default
        *run_args,
    ]


def submit_env(cluster: StandaloneCluster, node_python: Path) -> dict[str, str]:
    """Driver and executors both run the node Python: nothing of the project is importable but the zip."""
    env = dict(cluster.env, PYSPARK_PYTHON=str(node_python), PYSPARK_DRIVER_PYTHON=str(node_python))
    env.pop("PYTHONPATH", None)
    return env


def app_ids(cluster: StandaloneCluster) -> set[str]:
    state = cluster.state()
    return {app["id"] for app in state["activeapps"] + state["completedapps"]}


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_spark_submit_on_standalone_cluster(
    cluster: StandaloneCluster,
    package: tuple[Path, Path],
    node_python: Path,
    mirror_url: str,
    sample_run,  # noqa: ANN001 - RunSummary of the local engine on the same crawl
    tmp_path: Path,
) -> None:
    """The default run (WARC pass, dedup with MinHash clustering in Spark SQL, tokens, report) from spark-submit."""
    out = tmp_path / "out"
    cwd = tmp_path / "submit-cwd"  # not the repository: nothing importable from the working directory
    cwd.mkdir()
    before = app_ids(cluster)
    # --sample: the driver builds the sample crawl from the package data inside the zip and serves it
    args = ["--sample", "--name", "cluster", "--output", str(out), "--keep-rejected", "--no-progress"]
    done = subprocess.run(
        submit_command(cluster, package, args, SMALL_SHUFFLES),
        env=submit_env(cluster, node_python),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBMIT_TIMEOUT_S,
    )
    # spark-submit passes the Python driver's stderr (tracebacks, logs) to its own stdout
    assert done.returncode == 0, f"{done.stdout[-5000:]}\n{done.stderr[-3000:]}"
    assert "documents:" in done.stdout

    # the application ran on this cluster, on its worker's executors, and finished
    state = cluster.state()
    (app,) = [a for a in state["completedapps"] if a["id"] not in before]
    assert app["name"] == "cc-refinery" and app["state"] == "FINISHED"
    executors = sorted((cluster.work_dir / app["id"]).iterdir())
    assert executors, f"no executor ran for {app['id']}"
    # executors got the project only as the shipped zip (node_python cannot import it otherwise)
    archive = package[0]
    for executor in executors:
        assert (executor / archive.name).read_bytes() == archive.read_bytes()
        assert "No module named" not in (executor / "stderr").read_text(errors="replace")

    # same parts, documents (ids and texts, in order) and funnel as the local engine on the same crawl
    run_dir = out / "cluster"
    local_dir = sample_run.run_dir
    expected = documents_by_part(local_dir)
    assert len(expected) == NUM_PARTS and sum(map(len, expected.values())) > 20
    assert documents_by_part(run_dir) == expected
    assert funnel(run_dir) == funnel(local_dir)
    assert documents_by_part(run_dir / "dedup") == documents_by_part(local_dir / "dedup")
    assert funnel(run_dir / "dedup") == funnel(local_dir / "dedup")
    clusters = json.loads((run_dir / "dedup" / "dedup_clusters.json").read_text())
    local_clusters = json.loads((local_dir / "dedup" / "dedup_clusters.json").read_text())
    for key in ("documents", "kept", "exact_duplicates", "near_duplicates", "size_histogram"):
        assert clusters[key] == local_clusters[key], key
    assert clusters["near_duplicates"] > 0  # the sample crawl plants near-duplicates
    manifest = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    local_manifest = json.loads((local_dir / "tokens" / "manifest.json").read_text())
    # --sample also keeps a small val shard (8,192 tokens), so compare what the shards hold, not how they split
    for key in ("num_tokens", "num_documents"):
        assert manifest["totals"][key] == local_manifest["totals"][key] > 0, key
    assert (run_dir / "report" / "index.html").stat().st_size > 10_000


def test_spark_submit_to_an_object_store_with_no_shared_filesystem(
    cluster: StandaloneCluster,
    package: tuple[Path, Path],
    node_python: Path,
    object_store,  # noqa: ANN001 - tests.objectstore.SeaweedServer
    sample_run,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Output on s3://: the driver has the store's AWS_* variables, the worker was started without them; the
    executors (in the worker's own working directories) read and write the store with what their tasks carry."""
    from tests.objectstore import SECRET_KEY, store_env

    assert not any(name.startswith("AWS_") for name in cluster.env), "the worker must not know the store"
    bucket = object_store.create_bucket("cluster")
    cwd = tmp_path / "submit-cwd"
    cwd.mkdir()
    before = app_ids(cluster)
    args = ["--sample", "--name", "cluster", "--output", f"s3://{bucket}/out", "--no-progress"]
    env = {**submit_env(cluster, node_python), **object_store.env(), "REFINERY_SCRATCH": str(tmp_path / "scratch")}
    done = subprocess.run(
        submit_command(cluster, package, args, SMALL_SHUFFLES),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBMIT_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{done.stdout[-5000:]}\n{done.stderr[-3000:]}"
    assert SECRET_KEY not in done.stdout + done.stderr
    state = cluster.state()
    (app,) = [a for a in state["completedapps"] if a["id"] not in before]
    executors = sorted((cluster.work_dir / app["id"]).iterdir())
    assert executors
    for executor in executors:
        assert SECRET_KEY not in (executor / "stderr").read_text(errors="replace")
        assert not list(executor.rglob("*.parquet")), "an executor wrote parts to its local disk"
    assert list(cwd.iterdir()) == []

    with store_env(object_store):
        run_dir = location(f"s3://{bucket}/out/cluster")
        for folder in (run_dir, run_dir / "dedup"):
            table = read_documents(folder, columns=["id", "text"])
            reference = read_documents(sample_run.run_dir / folder.name if folder != run_dir else sample_run.run_dir,
                                       columns=["id", "text"])  # fmt: skip
            assert sorted(table.column("id").to_pylist()) == sorted(reference.column("id").to_pylist())
        assert (run_dir / "tokens" / "manifest.json").exists()
        assert (run_dir / "report" / "index.html").exists()


def executor_pids(cluster: StandaloneCluster, app_id: str) -> dict[int, str]:
    """PID -> executor id of the worker's executor JVMs for ``app_id`` (children of the worker process)."""
    pids = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == cluster.worker.pid and b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmdline:
            args = [a.decode() for a in cmdline]
            if args[args.index("--app-id") + 1] == app_id:
                pids[int(proc.name)] = args[args.index("--executor-id") + 1]
    return pids


def done_parts(run_dir: Path) -> list[str]:
    markers = run_dir / MARKERS
    return sorted(p.name.removesuffix(".done") for p in markers.glob("part-*.done")) if markers.is_dir() else []


def parts_being_written(run_dir: Path) -> list[str]:
    """Parts with a temporary documents file (``.part-NNNNN.parquet.<pid>.tmp``) and no marker yet."""
    documents = run_dir / DOCUMENTS
    if not documents.is_dir():
        return []
    writing = {p.name[1:].split(".", 1)[0] for p in documents.glob(".part-*.parquet.*.tmp")}
    return sorted(writing - set(done_parts(run_dir)))


def test_executor_killed_mid_job_loses_nothing(
    cluster: StandaloneCluster,
    package: tuple[Path, Path],
    node_python: Path,
    mirror_url: str,
    sample_run,  # noqa: ANN001 - RunSummary of the local engine on the same crawl
    tmp_path: Path,
) -> None:
    """SIGKILL the executor JVM while parts are being written; Spark reruns its tasks on a new executor."""
    # the WARC pass alone: that is where the executor dies
    config = write_config(tmp_path / "run.yaml", {**NO_DEDUP, "tokenize": False, "report": False})
    out = tmp_path / "out"
    run_dir = out / "killed"
    cwd = tmp_path / "submit-cwd"
    cwd.mkdir()
    before = app_ids(cluster)
    args = ["--cc-base-url", mirror_url, "--dump", SAMPLE_DUMP, "--name", "killed", "--output", str(out),
            "--no-progress", "-c", str(config)]  # fmt: skip
    stdout_path, stderr_path = tmp_path / "submit.stdout", tmp_path / "submit.stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        submit = subprocess.Popen(
            submit_command(cluster, package, args, SERIAL_TASKS),
            env=submit_env(cluster, node_python),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SUBMIT_TIMEOUT_S

        def still_running() -> None:
            early = submit.poll()
            if early is not None:
                tail = stdout_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"job ended (exit {early}) before a part was caught mid-write:\n{tail}")
            assert time.monotonic() < deadline, "timed out waiting for the job"
            time.sleep(0.05)

        executors: dict[int, str] = {}
        while not executors:  # the application registers, and the worker starts its executor JVM
            new_apps = app_ids(cluster) - before
            executors = executor_pids(cluster, next(iter(new_apps))) if new_apps else {}
            if not executors:
                still_running()
        (app_id,) = new_apps
        ((victim, victim_id),) = executors.items()
        # then a finished part, and the next one half-written (its temporary file open, no marker)
        while not (done_parts(run_dir) and parts_being_written(run_dir)):
            still_running()
        os.kill(victim, signal.SIGKILL)
        done_at_kill, writing_at_kill = done_parts(run_dir), parts_being_written(run_dir)
        returncode = submit.wait(timeout=SUBMIT_TIMEOUT_S)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait()
    driver_log = stderr_path.read_text(errors="replace")  # the driver JVM's log (scheduler events)
    assert returncode == 0, f"{stdout_path.read_text(errors='replace')[-5000:]}\n{driver_log[-3000:]}"

    # the kill hit mid-job: parts were unfinished, the worker saw its executor die, and a new one took over
    assert 1 <= len(done_at_kill) < NUM_PARTS, done_at_kill
    assert writing_at_kill and not set(writing_at_kill) & set(done_at_kill), writing_at_kill
    worker_log = cluster.worker_log.read_text(errors="replace")
    killed = re.findall(rf"Executor {re.escape(app_id)}/(\d+) finished with state (\w+).*?exitStatus (\d+)", worker_log)
    assert (victim_id, "EXITED", str(128 + signal.SIGKILL)) in killed, killed
    launched = sorted(p.name for p in (cluster.work_dir / app_id).iterdir())
    assert len(launched) >= 2, launched  # the master relaunched an executor for the lost tasks
    assert f"Lost executor {victim_id}" in driver_log
    assert f"ExecutorLostFailure (executor {victim_id} exited" in driver_log  # a running task was lost and retried

    # nothing lost, nothing duplicated: exactly the local engine's documents, each id once, one file per part
    expected = documents_by_part(sample_run.run_dir)
    got = documents_by_part(run_dir)
    ids = Counter(doc_id for docs in got.values() for doc_id, _ in docs)
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(ids) == {doc_id for docs in expected.values() for doc_id, _ in docs}
    assert got == expected
    parts = [f"part-{i:05d}" for i in range(NUM_PARTS)]
    # the killed attempt's temporary file is gone (the retry cleared it), nothing else is there
    assert sorted(os.listdir(run_dir / DOCUMENTS)) == [f"{p}.parquet" for p in parts]
    assert sorted(os.listdir(run_dir / MARKERS)) == [f"{p}.done" for p in parts]
    assert sorted(os.listdir(run_dir / STATS)) == [f"{p}.json" for p in parts]
    assert not (run_dir / "failures").exists() or not any((run_dir / "failures").iterdir())
    assert funnel(run_dir) == funnel(sample_run.run_dir)
