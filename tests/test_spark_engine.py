"""The Spark engine runs the local engine's units unchanged: same parts, same documents, same stats, same resume."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.app.passes import DEDUP_DIR
from pipeline.app.run import run_pipeline
from pipeline.app.warc import run_warc_pass as warc_pass
from pipeline.core.parts import MARKERS, STATS, load_stats
from pipeline.dedup.dedup_pass import run_dedup
from pipeline.engines.base import RunIncomplete, WorkUnit
from pipeline.engines.local import LocalEngine
from pipeline.engines.spark import SparkEngine
from pipeline.engines.spark_code import build_code_archive
from tests.outputs import documents_by_part, funnel
from tests.samples import realdata_config, sample_config

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def spark_engine(spark) -> SparkEngine:  # noqa: ANN001
    return SparkEngine(spark, progress=False)


REAL_WARCS = [
    "archive-org-2008_heritrix.warc.gz",
    "bl-gov-uk-2014_heritrix-a.warc.gz",
    "cc-main-2020-34_excerpt.warc.gz",
    "edge-case_clipped-record.warc.gz",
    "iana-org_liveweb.warc.gz",
    "wget-sample-0000.warc.gz",
]


def test_warc_pass_on_real_warcs_same_parts_and_stats_on_both_engines(
    realdata: Path, tmp_path: Path, spark_engine: SparkEngine
) -> None:
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(name,)) for i, name in enumerate(REAL_WARCS)]
    local = realdata_config(realdata, tmp_path, "local")
    spark = realdata_config(realdata, tmp_path, "spark")
    # the clipped file is salvaged the same way by both: its records before the cut, counted as truncated
    warc_pass(local, units, LocalEngine(workers=2, progress=False))
    warc_pass(spark, units, spark_engine)
    assert sorted(p.name for p in (spark.run_dir / MARKERS).iterdir()) == [f"{u.part}.done" for u in units]
    clipped = {s.part: s.source for s in load_stats(spark.run_dir)}["part-00003"]
    assert clipped["truncated_file"] == 1 and clipped["documents"] >= 1, clipped
    expected = documents_by_part(local.run_dir)
    assert sum(len(docs) for docs in expected.values()) >= 30  # real pages of all languages survive the chain
    assert documents_by_part(spark.run_dir) == expected
    assert funnel(spark.run_dir) == funnel(local.run_dir)
    for folder in ("rejected", MARKERS, STATS):
        assert sorted(p.name for p in (spark.run_dir / folder).iterdir()) == sorted(
            p.name for p in (local.run_dir / folder).iterdir()
        )
    # same schema, byte for byte in what readers see
    name = next(iter(expected))
    assert pq.read_schema(spark.run_dir / "documents" / name) == pq.read_schema(local.run_dir / "documents" / name)

    # dedup of the finished parts: the same documents survive (exact + MinHash clustered with Spark SQL)
    local_dedup, spark_dedup = local.run_dir / DEDUP_DIR, spark.run_dir / DEDUP_DIR
    run_dedup(local.run_dir, local_dedup, local.dedup, engine=LocalEngine(workers=2, progress=False))
    run_dedup(spark.run_dir, spark_dedup, spark.dedup, engine=spark_engine)
    assert documents_by_part(spark_dedup) == documents_by_part(local_dedup)
    assert funnel(spark_dedup) == funnel(local_dedup)


def test_whole_run_on_the_sample_crawl_matches_the_local_engine(
    mirror_url: str,
    sample_run,
    tmp_path: Path,
    spark_engine: SparkEngine,  # noqa: ANN001
) -> None:
    """WARC pass, dedup (MinHash clustered with Spark SQL), tokens and report, against the session's local run."""
    local_dir = sample_run.run_dir
    local_manifest = json.loads((local_dir / "tokens" / "manifest.json").read_text())
    # the val shard size the local run's tokens were last written with (a test may rerun that run from the CLI)
    overrides = {
        "keep_rejected": True,
        "engine.kind": "spark",
        "tokenizer.val_shard_tokens": local_manifest["val_shard_tokens"],
    }
    config = sample_config(mirror_url, tmp_path, "spark", overrides)
    summary = run_pipeline(config, progress=False, engine=spark_engine)

    assert documents_by_part(summary.run_dir) == documents_by_part(local_dir)
    assert documents_by_part(summary.run_dir / "dedup") == documents_by_part(local_dir / "dedup")
    assert funnel(summary.run_dir / "dedup") == funnel(local_dir / "dedup")
    assert summary.stats.docs_out == sample_run.stats.docs_out
    local_clusters = json.loads((local_dir / "dedup" / "dedup_clusters.json").read_text())
    spark_clusters = json.loads((summary.run_dir / "dedup" / "dedup_clusters.json").read_text())
    for key in ("documents", "kept", "exact_duplicates", "near_duplicates", "size_histogram", "top_clusters"):
        assert spark_clusters[key] == local_clusters[key], key
    assert spark_clusters["near_duplicates"] > 0  # the sample crawl plants near-duplicates
    spark_manifest = json.loads((summary.run_dir / "tokens" / "manifest.json").read_text())
    assert [s["sha256"] for s in spark_manifest["shards"]] == [s["sha256"] for s in local_manifest["shards"]]
    assert summary.report_path is not None and summary.report_path.stat().st_size > 10_000


def test_rerun_redoes_only_the_unfinished_part_and_failures_are_reported(
    realdata: Path, tmp_path: Path, spark_engine: SparkEngine
) -> None:
    config = realdata_config(realdata, tmp_path, "resume")
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(name,)) for i, name in enumerate(REAL_WARCS[:3])]
    warc_pass(config, units, spark_engine)
    run_dir = config.run_dir
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "documents").iterdir()}
    reference = documents_by_part(run_dir)
    (run_dir / MARKERS / "part-00001.done").unlink()  # as if its task died before the marker

    missing = WorkUnit(part="part-00003", inputs=("no-such-file.warc.gz",))
    with pytest.raises(RunIncomplete, match="1 of 4 parts failed"):
        warc_pass(config, [*units, missing], spark_engine)

    after = {p.name: p.stat().st_mtime_ns for p in (run_dir / "documents").iterdir()}
    assert after["part-00000.parquet"] == before["part-00000.parquet"]
    assert after["part-00002.parquet"] == before["part-00002.parquet"]
    assert after["part-00001.parquet"] != before["part-00001.parquet"]
    assert documents_by_part(run_dir) == reference
    failure = json.loads((run_dir / "failures" / "part-00003.json").read_text())
    assert "no-such-file" in failure["error"] + failure["traceback"]


def test_map_items_keeps_order_and_runs_each_item_as_its_own_task(spark_engine: SparkEngine) -> None:
    results = spark_engine.map_items(_square_with_partition, 7)
    assert [value for value, _ in results] == [i * i for i in range(7)]
    assert sorted(partition for _, partition in results) == list(range(7))


def test_a_python_worker_killed_mid_task_fails_its_parts_not_the_pass(
    spark_engine: SparkEngine, tmp_path: Path
) -> None:
    """A dead worker ends Spark's job (local mode does not retry); the parts it held are failed with the reason,
    parts committed before it stay done, and a rerun finishes the rest."""
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(f"in-{i}",)) for i in range(3)]
    out = tmp_path / "out"
    with pytest.raises(RunIncomplete) as raised:
        spark_engine.run_units(units, KillWorkerOn("part-00001"), out)
    failed = raised.value.result.failed
    assert "part-00001" in failed and failed["part-00001"].startswith("spark task failed"), failed
    assert set(raised.value.result.done) | set(failed) == {u.part for u in units}
    result = spark_engine.run_units(units, KillWorkerOn("none"), out)
    assert sorted(result.done + result.skipped) == [u.part for u in units]


@dataclass
class KillWorkerOn:
    """Commits a tiny part, except for ``victim``, whose Python worker is killed."""

    victim: str

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        import os
        import signal

        import pyarrow as pa

        from pipeline.core.parts import PartWriter
        from pipeline.core.stats import PartStats

        if unit.part == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        with PartWriter(out_dir, unit.part) as writer:
            writer.write(pa.table({"id": [unit.part], "text": ["x"]}))
            writer.commit(PartStats(part=unit.part))


def _square_with_partition(i: int) -> tuple[int, int]:
    from pyspark import TaskContext

    return i * i, TaskContext.get().partitionId()


def test_code_archive_holds_the_packages_and_is_reproducible(tmp_path: Path) -> None:
    first = build_code_archive(tmp_path / "a")
    second = build_code_archive(tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    for needed in ("pipeline/app/run.py", "pipeline/engines/spark.py", "filters/registry.py", "tokenization/shards.py"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("flows/") or n.startswith("tests/")]
