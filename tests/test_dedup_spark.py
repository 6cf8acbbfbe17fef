"""Dedup clustering on Spark against the local clustering: same decisions, files and report on real text."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.parts import DOCUMENTS, PartWriter, part_name
from pipeline.core.stats import PartStats
from pipeline.dedup.clustering import connected_components as union_find
from pipeline.dedup.config import DedupConfig, MinHashConfig
from pipeline.dedup.dedup_pass import input_units, run_dedup, sign_parts
from pipeline.dedup.local_clustering import cluster
from pipeline.dedup.signatures import ASSIGN, CLUSTER_REPORT, CLUSTERS, LINKS, SIGNATURES, WORK
from pipeline.dedup.spark_clustering import cluster_spark, connected_components
from tests.test_dedup import planted_corpus, write_input

DUMPS = ("CC-MAIN-2024-10", "CC-MAIN-2024-22")
PARTS = 4


@pytest.fixture(scope="module", autouse=True)
def _code_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The project's zip for the executors goes to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CC_REFINERY_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _documents(realdata: Path) -> list[dict]:
    """Planted near-duplicate families of real articles over two dumps, plus the awkward cases."""
    rng = random.Random(11)
    docs = planted_corpus(realdata, families=24)
    for doc in docs:
        doc["dump"] = rng.choice(DUMPS)  # families straddle dumps: scope dump and run differ
    base = next(d for d in docs if d["kind"] == "base")
    docs += [
        {"id": "e-null-text", "url": "https://e.example/1", "text": None, "dump": DUMPS[0]},
        {"id": "e-empty", "url": "https://e.example/2", "text": "", "dump": DUMPS[0]},
        {"id": "e-dots", "url": "https://e.example/3", "text": "...", "dump": DUMPS[0]},
        {"id": "e-short-1", "url": "https://e.example/4", "text": "too short", "dump": DUMPS[1]},
        {"id": "e-short-2", "url": None, "text": "Too short!", "dump": DUMPS[1]},
        {"id": "", "url": "https://e.example/6", "text": base["text"], "dump": base["dump"]},
        {"id": "e-no-dump", "url": "https://e.example/7", "text": base["text"] + " the end", "dump": None},
        {"id": "e-unicode-é", "url": "https://e.example/8", "text": base["text"].upper(), "dump": base["dump"]},
    ]
    # ids whose UTF-8 byte order differs from their UTF-16 order (U+FF01 < U+1F600 in bytes, not in UTF-16)
    docs += [
        {"id": f"e-{c}", "url": f"https://e.example/10/{c}", "text": base["text"] + " twice", "dump": DUMPS[0]}
        for c in ("\U0001f600", "\uff01")
    ]
    # one record three times (a WARC read twice): equal ids, so the part and row decide which is kept
    docs += [
        {"id": "e-same-id", "url": f"https://e.example/9/{i}", "text": base["text"] + " again", "dump": DUMPS[1]}
        for i in range(3)
    ]
    return docs


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, realdata: Path) -> Path:
    """A WARC-pass-like input: four parts in shuffled order and one empty part."""
    directory = write_input(tmp_path_factory.mktemp("spark-dedup") / "in", _documents(realdata), parts=PARTS)
    with PartWriter(directory, part_name(PARTS)) as writer:
        writer.commit(PartStats(part=part_name(PARTS)))
    return directory


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, source: Path) -> dict[bool, Path]:
    """Step 1 once per MinHash setting (the only setting signatures depend on): output folders with signatures."""
    out = {}
    for enabled in (True, False):
        folder = tmp_path_factory.mktemp(f"signed-{enabled}")
        sign_parts(input_units(source), folder, DedupConfig(minhash=MinHashConfig(enabled=enabled)))
        out[enabled] = folder
    return out


def _names(source: Path) -> list[str]:
    return [unit.part for unit in input_units(source)]


def _with_signatures(signed: Path, target: Path) -> Path:
    shutil.copytree(signed / WORK / SIGNATURES, target / WORK / SIGNATURES)
    return target


def _links(path: Path) -> list[tuple]:
    """Link rows, NaN similarities (no verification) compared as None."""
    if not path.exists():
        return []
    rows = pq.read_table(path).to_pylist()
    return sorted(
        (r["id"], r["linked_id"], None if math.isnan(r["estimated_jaccard"]) else r["estimated_jaccard"]) for r in rows
    )


def assert_same_clustering(local: Path, spark_out: Path, names: list[str]) -> dict:
    """Assign files, links, report and summary of the two engines are identical; returns the report."""
    for name in names:
        expected = pq.read_table(local / WORK / CLUSTERS / ASSIGN / f"{name}.parquet")
        got = pq.read_table(spark_out / WORK / CLUSTERS / ASSIGN / f"{name}.parquet")
        assert got.schema == expected.schema
        assert got.equals(expected), f"{name}: assignments differ"
    assert (local / WORK / CLUSTERS / LINKS).exists() == (spark_out / WORK / CLUSTERS / LINKS).exists()
    assert _links(spark_out / WORK / CLUSTERS / LINKS) == _links(local / WORK / CLUSTERS / LINKS)
    expected = json.loads((local / CLUSTER_REPORT).read_text())
    got = json.loads((spark_out / CLUSTER_REPORT).read_text())
    assert got.pop("engine") == "spark"
    expected.pop("seconds"), got.pop("seconds")
    assert got == expected
    done = WORK + "/" + CLUSTERS + "/done.json"
    assert json.loads((spark_out / done).read_text()) == json.loads((local / done).read_text())
    assert not (spark_out / WORK / "spark").exists(), "intermediate tables are removed"
    return expected


CONFIGS = {  # scope "dump" with every step on: test_run_dedup_on_spark_keeps_the_same_documents
    "scope-run-unverified": DedupConfig(scope="run", minhash=MinHashConfig(verify_threshold=None)),
    "exact-off": DedupConfig(exact=False),
    "minhash-off": DedupConfig(minhash=MinHashConfig(enabled=False)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cluster_spark_matches_local(
    spark,  # noqa: ANN001 - SparkSession
    tmp_path: Path,
    source: Path,
    signed: dict[bool, Path],
    name: str,
) -> None:
    config = CONFIGS[name]
    names = _names(source)
    local = _with_signatures(signed[config.minhash.enabled], tmp_path / "local")
    spark_out = _with_signatures(signed[config.minhash.enabled], tmp_path / "spark")
    summary = cluster(local, names, config)
    assert cluster_spark(spark, spark_out, names, config) == summary
    report = assert_same_clustering(local, spark_out, names)
    rows = [pq.ParquetFile(source / DOCUMENTS / f"{n}.parquet").metadata.num_rows for n in names]
    assert report["documents"] == sum(rows) and rows[-1] == 0
    if config.exact:
        # a copy and a light change per family, some of them in the other dump
        assert report["exact_duplicates"] > (2 * 24 if config.scope == "run" else 24)
    if config.minhash.enabled:
        assert report["near_duplicates"] > 24 and report["pairs"]["linked"] > 0
    if config.minhash.verify_threshold is None:
        assert report["pairs"]["linked"] == report["pairs"]["candidates"]


def test_connected_components_match_union_find(spark, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    n = 12_000
    chain = np.arange(2_000)  # in order: one long hook chain
    shuffled = rng.permutation(np.arange(2_000, 4_000))  # a path through random numbers
    a = [chain[:-1], shuffled[:-1]]
    b = [chain[1:], shuffled[1:]]
    for s in range(20):  # stars whose centre is not their smallest node
        leaves = np.arange(4_000 + s * 30, 4_000 + (s + 1) * 30)
        a.append(np.full(29, leaves[17]))
        b.append(np.delete(leaves, 17))
    nodes = rng.permutation(np.arange(4_600, 10_000))  # a random forest: each node under an earlier one
    parents = (rng.random(len(nodes)) * np.arange(len(nodes))).astype(np.int64)
    roots = rng.random(len(nodes)) < 0.02
    a.append(nodes[1:][~roots[1:]])
    b.append(nodes[parents][1:][~roots[1:]])
    extra = rng.integers(10_000, n, size=(2, 1_500))  # a sparse random graph with cycles
    a += [extra[0], b[0][:50], np.array([7, 7])]  # reversed duplicates of chain edges, a self-loop
    b += [extra[1], a[0][:50], np.array([7, 8])]
    a, b = np.concatenate(a), np.concatenate(b)
    ids = np.sort(rng.choice(2**62, size=n, replace=False))  # sparse int64 document numbers, same order
    edges = spark.createDataFrame(pa.table({"a": ids[a], "b": ids[b]}))
    got = connected_components(spark, edges, tmp_path / "cc").toArrow()
    expected = union_find(n, a, b)
    linked = np.unique(np.concatenate([a[a != b], b[a != b]]))
    assert sorted(got.column("node").to_pylist()) == ids[linked].tolist()
    labels = dict(zip(got.column("node").to_pylist(), got.column("label").to_pylist(), strict=True))
    assert [labels[ids[i]] for i in linked] == ids[expected[linked]].tolist()
    assert labels[ids[1_999]] == ids[0] and labels[ids[shuffled[0]]] == ids[2_000]

    empty = spark.createDataFrame(pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.int64())}))
    assert connected_components(spark, empty, tmp_path / "none").count() == 0


def test_run_dedup_on_spark_keeps_the_same_documents(
    spark,  # noqa: ANN001 - SparkSession
    tmp_path: Path,
    source: Path,
) -> None:
    from pipeline.engines.spark import SparkEngine

    config = DedupConfig(batch_size=64, top_clusters=5)
    names = _names(source)
    local = run_dedup(source, tmp_path / "local", config)
    engine = SparkEngine(spark, progress=False, code_cache=tmp_path / "code")
    on_spark = run_dedup(source, tmp_path / "spark", config, engine=engine)
    assert sorted(on_spark.done) == sorted(local.done) == names
    # the clustering (scope dump, exact and verified MinHash) decided exactly as the local one
    report = assert_same_clustering(tmp_path / "local", tmp_path / "spark", names)
    assert report["exact_duplicates"] > 24 and report["near_duplicates"] > 24
    assert len(report["per_scope"]) == 3 and len(report["top_clusters"]) == 5
    kept = 0
    for name in names:
        expected = pq.read_table(tmp_path / "local" / DOCUMENTS / f"{name}.parquet")
        got = pq.read_table(tmp_path / "spark" / DOCUMENTS / f"{name}.parquet")
        assert got.select(["id", "text"]).equals(expected.select(["id", "text"])), name
        assert got.equals(expected), name
        kept += got.num_rows
    assert kept == report["kept"]
    # finished: clustering again returns the summary without reading anything
    shutil.rmtree(tmp_path / "spark" / WORK / SIGNATURES)
    summary = json.loads((tmp_path / "local" / WORK / CLUSTERS / "done.json").read_text())
    assert cluster_spark(spark, tmp_path / "spark", names, config) == summary
