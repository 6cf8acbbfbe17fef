"""The CLI explains itself and fails clearly on bad input."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.app.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "Turn Common Crawl into LLM pretraining data"),
        (["run"], "resumes"),
        (["stage"], "Run one stage on a few files (local or on a store)"),
        (["sample-crawl"], "Common Crawl's layout"),
        (["serve-crawl"], "Range"),
        (["config"], "YAML"),
        (["report"], "self-contained"),
        (["dedup"], "MinHash near-duplicate"),
        (["validate-shards"], "unigram entropy"),
        (["spark"], "spark-submit"),
        (["spark", "package"], "--py-files"),
    ],
)
def test_every_command_has_help(args: list[str], expected: str) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert expected in " ".join(result.output.split())


def test_config_prints_defaults_that_load_back(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    data = yaml.safe_load(result.output)
    assert data["langid"] == {
        "languages": ["en"],
        "threshold": 0.65,
        "model_path": None,
        "prescreen": True,
        "prescreen_threshold": 0.01,
        "prescreen_min_chars": 200,
    }
    path = tmp_path / "run.yaml"
    path.write_text(result.output)
    assert runner.invoke(app, ["config", "--config", str(path)]).exit_code == 0


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source:\n  dump: latest\nengine:\n  workers: 0\n")
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "source.dump" in result.output and "engine.workers" in result.output
    assert "Traceback" not in result.output


def test_stage_rejects_unknown_stage_and_wrong_input(tmp_path: Path, realdata: Path) -> None:
    warc = realdata / "warc_samples" / "cc-main-2020-34_excerpt.warc.gz"
    result = runner.invoke(app, ["stage", "dedupe", "-i", str(warc), "-o", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 2 and "unknown stage 'dedupe'" in result.output
    result = runner.invoke(app, ["stage", "extract", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "input not found" in result.output


def test_stage_extract_then_langid_on_real_warc(tmp_path: Path, realdata: Path) -> None:
    warc = realdata / "warc_samples" / "wget-sample-0000.warc.gz"
    extracted = tmp_path / "extracted"
    result = runner.invoke(app, ["stage", "extract", "-i", str(warc), "-o", str(extracted), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "extract" in result.output and "documents:" in result.output
    docs = pq.read_table(extracted / "documents")
    assert docs.num_rows > 5
    assert all(t.strip() for t in docs.column("text").to_pylist())
    assert docs.column("language").null_count == docs.num_rows  # not labelled yet

    labelled = tmp_path / "labelled"
    result = runner.invoke(
        app,
        [
            "stage",
            "langid",
            "-i",
            str(extracted / "documents"),
            "-o",
            str(labelled),
            "--languages",
            "all",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    out = pq.read_table(labelled / "documents")
    assert out.num_rows == docs.num_rows  # 'all' keeps everything, but labels it
    assert out.column("language").null_count == 0
    assert sorted(out.column("id").to_pylist()) == sorted(docs.column("id").to_pylist())

    limited = tmp_path / "limited"
    result = runner.invoke(
        app, ["stage", "extract", "-i", str(warc), "-o", str(limited), "--limit", "3", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(limited / "documents").num_rows <= 3


def test_run_on_the_newest_dump_of_a_mirror(tmp_path: Path) -> None:
    from pipeline.demo.samplecrawl import build_sample_crawl

    mirror = tmp_path / "mirror"
    build_sample_crawl(mirror, dump="CC-MAIN-2024-22", num_warcs=1)
    build_sample_crawl(mirror, dump="CC-MAIN-2025-05", num_warcs=1)
    out = tmp_path / "out"
    args = ["run", "--cc-base-url", str(mirror), "--newest-dump", "--output", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "newest dump: CC-MAIN-2025-05" in result.output
    docs = pq.read_table(out / "CC-MAIN-2025-05" / "dedup" / "documents")
    assert docs.num_rows > 0 and set(docs.column("dump").to_pylist()) == {"CC-MAIN-2025-05"}
    assert not (out / "CC-MAIN-2024-22").exists()


def test_spark_conf_must_be_key_value() -> None:
    result = runner.invoke(app, ["run", "--sample", "--spark-conf", "spark.executor.memory"])
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
