"""Dedup with its output on a real S3 server (SeaweedFS): the same kept documents as on local disk, and every
work file (signatures, band spills, assignments, the Spark clustering's tables) on the store, none on local disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fsspec.config
import pyarrow as pa
import pytest

from pipeline.core import storage
from pipeline.core.parts import DOCUMENTS, REJECTED, read_documents, read_parquet
from pipeline.core.storage import configure_storage, list_names, location
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.dedup_pass import CLUSTER_REPORT, StaleDedupOutput, input_units, run_dedup, sign_parts
from pipeline.dedup.signatures import ASSIGN, CLUSTERS, LINKS, SIGNATURES, WORK
from tests.objectstore import ACCESS_KEY, SECRET_KEY
from tests.test_dedup import planted_corpus, write_input

PARTS = 3
CONFIG = DedupConfig(batch_size=64, top_clusters=5)


def rows(out: Path | str) -> list[tuple[str, str]]:
    """(id, cluster id) of every kept and rejected row of a dedup output, local or on the store."""
    out = location(out)
    kept = read_documents(out, columns=["id", "dup_cluster_id"])
    rejected = [read_parquet(out / REJECTED / n, columns=["id", "dup_cluster_id"]) for n in list_names(out / REJECTED)]
    table = pa.concat_tables([kept, *rejected])
    return sorted(zip(table.column("id").to_pylist(), table.column("dup_cluster_id").to_pylist(), strict=True))


def store_files(fs, url: str) -> set[str]:  # noqa: ANN001 - s3fs.S3FileSystem
    """Every object under ``url``, relative to it."""
    root = url.removeprefix("s3://").rstrip("/")
    return {name.removeprefix(root + "/") for name in fs.find(root)}


@pytest.fixture(scope="module")
def corpus(realdata: Path) -> list[dict]:
    return planted_corpus(realdata, families=16)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict]) -> Path:
    return write_input(tmp_path_factory.mktemp("objectstore-dedup") / "in", corpus, parts=PARTS)


@pytest.fixture(scope="module")
def local_out(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    """The reference: the same dedup with its output on local disk."""
    out = tmp_path_factory.mktemp("objectstore-dedup-local") / "out"
    run_dedup(source, out, CONFIG, keep_rejected=True)
    return out


@pytest.fixture
def quiet_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """An empty working directory and scratch folder; the test checks nothing is left in either."""
    cwd, scratch = tmp_path / "cwd", tmp_path / "scratch"
    cwd.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(storage.SCRATCH_ENV, str(scratch))
    yield cwd, scratch


def assert_nothing_local(cwd: Path, scratch: Path) -> None:
    assert not list(cwd.rglob("*")), "the store run wrote into the working directory"
    # the local engine keeps its workers' logs in scratch; no data file may be left there
    left = [p for p in scratch.rglob("*") if p.is_file() and "refinery-logs" not in p.relative_to(scratch).parts]
    assert not left, f"temporary files were left in scratch: {left}"


def test_dedup_to_the_store_keeps_what_local_dedup_keeps(
    bucket: str,
    source: Path,
    local_out: Path,
    quiet_disk: tuple[Path, Path],
    object_store,  # noqa: ANN001
) -> None:
    out = f"{bucket}/dedup"
    result = run_dedup(source, out, CONFIG, workers=2, keep_rejected=True)
    names = [u.part for u in input_units(source)]
    assert sorted(result.done) == names
    assert rows(out) == rows(local_out)
    fs = object_store.filesystem()
    files = store_files(fs, out)
    for name in names:  # step 1's files, written by the worker processes
        assert {f"{WORK}/{SIGNATURES}/{name}.parquet", f"{WORK}/{SIGNATURES}/{name}.sig.npy"} <= files
        assert f"{WORK}/{CLUSTERS}/{ASSIGN}/{name}.parquet" in files
        assert f"{DOCUMENTS}/{name}.parquet" in files
    assert {f"{WORK}/{CLUSTERS}/pairs-band-{b:03d}.npy" for b in range(CONFIG.minhash.bands)} <= files
    assert {f"{WORK}/fingerprint.json", f"{WORK}/{CLUSTERS}/{LINKS}", f"{WORK}/{CLUSTERS}/done.json"} <= files
    expected = json.loads((local_out / CLUSTER_REPORT).read_text())
    got = json.loads(location(out).joinpath(CLUSTER_REPORT).read_text())
    expected.pop("seconds"), got.pop("seconds")
    assert got == expected
    assert_nothing_local(*quiet_disk)

    again = run_dedup(source, out, CONFIG, workers=2, keep_rejected=True)  # finished: every part is skipped
    assert sorted(again.skipped) == names and not again.done
    assert rows(out) == rows(local_out)


def test_dedup_from_the_store_to_local_disk(
    bucket: str,
    source: Path,
    local_out: Path,
    tmp_path: Path,
    object_store,  # noqa: ANN001
) -> None:
    fs = object_store.filesystem()
    fs.put(str(source), f"{bucket.removeprefix('s3://')}/in", recursive=True)
    remote_in = f"{bucket}/in"
    units = input_units(remote_in)
    assert [u.inputs[0] for u in units] == [f"{remote_in}/{DOCUMENTS}/{u.part}.parquet" for u in units]
    result = run_dedup(remote_in, tmp_path / "out", CONFIG, workers=2, keep_rejected=True)
    assert sorted(result.done) == [u.part for u in units]
    assert rows(tmp_path / "out") == rows(local_out)
    copied = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()}
    assert store_files(fs, remote_in) == copied, "dedup wrote into its input folder"


def test_a_stale_store_folder_is_refused_or_replaced(
    bucket: str,
    tmp_path: Path,
    corpus: list[dict],
    object_store,  # noqa: ANN001
) -> None:
    source = write_input(tmp_path / "in", corpus[:40], parts=2)
    out = f"{bucket}/dedup"
    run_dedup(source, out, DedupConfig())
    write_input(tmp_path / "in", corpus[:60], parts=2)
    with pytest.raises(StaleDedupOutput, match="other input parts or dedup settings"):
        run_dedup(source, out, DedupConfig())
    fs = object_store.filesystem()
    fs.pipe(f"{out.removeprefix('s3://')}/extra/left-over.txt", b"from the old run")
    run_dedup(source, out, DedupConfig(), replace_stale=True)
    files = store_files(fs, out)
    assert "extra/left-over.txt" not in files
    kept = read_documents(out, columns=["id"]).column("id").to_pylist()
    run_dedup(source, tmp_path / "local", DedupConfig())
    assert sorted(kept) == sorted(read_documents(tmp_path / "local", columns=["id"]).column("id").to_pylist())


# ---------------------------------------------------------------- Spark


@pytest.fixture
def store_options(object_store, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The store's endpoint and keys as storage options (a run config's ``storage_options``).

    The session's Spark JVM (and so its Python workers) may have started before the AWS_* variables were
    set: the executors reach the store only through the options shipped with each task.
    """
    monkeypatch.setattr(storage, "_configured", {})
    monkeypatch.setitem(fsspec.config.conf, "s3", dict(fsspec.config.conf.get("s3", {})))
    configure_storage({"s3": {"endpoint_url": object_store.endpoint, "key": ACCESS_KEY, "secret": SECRET_KEY}})


@pytest.fixture
def spark_code_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's zip for the executors goes to a temporary cache, not the user's."""
    cache = tmp_path / "code-cache"
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(cache))
    return cache


def test_spark_clustering_on_the_store_matches_local(
    spark,  # noqa: ANN001 - SparkSession
    bucket: str,
    source: Path,
    local_out: Path,
    store_options: None,
    spark_code_cache: Path,
    quiet_disk: tuple[Path, Path],
    object_store,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("pyspark")
    from pipeline.dedup import spark_clustering

    out = f"{bucket}/spark"
    units = input_units(source)
    names = [u.part for u in units]
    sign_parts(units, out, CONFIG)
    fs = object_store.filesystem()
    written: dict[str, list[str]] = {}
    real_write = spark_clustering.write_objects

    def write_and_check(frame, folder, options):  # noqa: ANN001, ANN202
        objects = real_write(frame, folder, options)
        for name in objects:  # each one is on the store as soon as its task reported it
            assert name.startswith(f"{out}/{WORK}/") and fs.exists(name.removeprefix("s3://")), name
        written[str(folder).removeprefix(f"{out}/{WORK}/")] = objects
        return objects

    monkeypatch.setattr(spark_clustering, "write_objects", write_and_check)
    summary = spark_clustering.cluster_spark(spark, out, names, CONFIG)
    assert summary == json.loads((local_out / WORK / CLUSTERS / "done.json").read_text())
    assert {"spark/docs", "spark/candidates", "spark/linked", f"{CLUSTERS}/{LINKS}"} <= set(written)
    assert any(folder.startswith("spark/components/f-") for folder in written), "no FastSV round on the store"
    files = store_files(fs, out)
    assert not any(f.startswith(f"{WORK}/spark/") for f in files), "intermediate tables are removed when done"
    for name in names:
        path = f"{WORK}/{CLUSTERS}/{ASSIGN}/{name}.parquet"
        assert read_parquet(f"{out}/{path}").equals(read_parquet(local_out / path)), name
    link_columns = ["id", "linked_id", "estimated_jaccard"]
    got_links = read_parquet(f"{out}/{WORK}/{CLUSTERS}/{LINKS}", columns=link_columns).sort_by("id")
    expected_links = read_parquet(local_out / WORK / CLUSTERS / LINKS, columns=link_columns).sort_by("id")
    assert sorted(got_links.to_pylist(), key=str) == sorted(expected_links.to_pylist(), key=str)
    assert sorted(written[f"{CLUSTERS}/{LINKS}"]) == sorted(
        f"{out}/{WORK}/{CLUSTERS}/{LINKS}/{n}" for n in list_names(location(out) / WORK / CLUSTERS / LINKS)
    ), "the links folder holds exactly the objects of the successful tasks"
    report = json.loads(location(out).joinpath(CLUSTER_REPORT).read_text())
    expected = json.loads((local_out / CLUSTER_REPORT).read_text())
    assert report.pop("engine") == "spark"
    report.pop("seconds"), expected.pop("seconds")
    assert report == expected
    assert_nothing_local(*quiet_disk)


def test_run_dedup_on_spark_to_the_store(
    spark,  # noqa: ANN001 - SparkSession
    bucket: str,
    source: Path,
    local_out: Path,
    store_options: None,
    spark_code_cache: Path,
    quiet_disk: tuple[Path, Path],
    object_store,  # noqa: ANN001
) -> None:
    pytest.importorskip("pyspark")
    from pipeline.engines.spark import SparkEngine

    engine = SparkEngine(spark, progress=False, code_cache=spark_code_cache)
    out = f"{bucket}/dedup"
    result = run_dedup(source, out, CONFIG, engine=engine, keep_rejected=True)
    names = [u.part for u in input_units(source)]
    assert sorted(result.done) == names
    assert rows(out) == rows(local_out)
    files = store_files(object_store.filesystem(), out)
    assert {f"{WORK}/{SIGNATURES}/{n}.sig.npy" for n in names} <= files  # signed by Spark tasks
    assert f"{WORK}/{CLUSTERS}/done.json" in files
    assert json.loads(location(out).joinpath(CLUSTER_REPORT).read_text())["engine"] == "spark"
    assert_nothing_local(*quiet_disk)


def test_dedup_command_takes_credentials_and_settings_from_a_run_config(
    bucket: str,
    source: Path,
    local_out: Path,
    tmp_path: Path,
    object_store,  # noqa: ANN001
) -> None:
    """``refinery dedup --config run.yaml``: no AWS variables, no ~/.aws; the store's endpoint and keys come from
    the run config's storage_options and the dedup settings from its dedup section; no secret is printed."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.objectstore import store_env

    config = tmp_path / "run.yaml"
    options = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": object_store.endpoint}}
    config.write_text(yaml.safe_dump({"storage_options": options, "dedup": {"batch_size": 64, "top_clusters": 5}}))
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path / "home"), AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]), REFINERY_SCRATCH=str(tmp_path / "scratch"),
    )  # fmt: skip
    out = f"{bucket}/dedup-by-config"
    command = [sys.executable, "-m", "pipeline.app.cli", "dedup", "--config", str(config), str(source), out,
               "--keep-rejected", "--workers", "2", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET_KEY not in done.stdout + done.stderr
    with store_env(object_store):
        assert rows(out) == rows(local_out)
        got = json.loads(location(out).joinpath(CLUSTER_REPORT).read_text())
    expected = json.loads((local_out / CLUSTER_REPORT).read_text())
    expected.pop("seconds"), got.pop("seconds")
    assert got == expected  # top_clusters: 5 from the config's dedup section, as the reference's
    without = subprocess.run(command[:4] + command[6:], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=240)  # fmt: skip
    assert without.returncode == 2, without.stderr  # no credentials anywhere: one line, exit 2
    assert len(without.stderr.strip().splitlines()) == 1 and out in without.stderr, without.stderr
