"""The ``refinery`` flow through Prefect's ephemeral harness (one server for the file: it takes ~15 s to start).

The flow must produce exactly what the CLI pipeline produces (it only orchestrates), publish the
funnel / drop reasons / outputs as artifacts, resume, fail clearly, and reject bad parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.155')")

from prefect.settings import (  # noqa: E402
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows import refinery_flow  # noqa: E402
from flows.artifacts import artifact_key, drop_rows, funnel_rows, report_location, report_markdown  # noqa: E402
from flows.deployments import (  # noqa: E402
    SPARK_CLUSTER,
    WEEKLY,
    WEEKLY_CRON,
    build_deployments,
    deployment_parameters,
)
from flows.outputs import OutputsSite, site_from_env  # noqa: E402
from flows.progress import read_progress  # noqa: E402
from flows.refinery_flow import refinery  # noqa: E402
from pipeline.app.config import COMMON_CRAWL_BASE_URL, SAMPLE_DUMP, RunConfig  # noqa: E402
from pipeline.app.passes import run_stats  # noqa: E402
from pipeline.app.run import sample_conflict  # noqa: E402
from pipeline.core.parts import part_name, read_documents, total_stats  # noqa: E402
from pipeline.demo.mirror import serve_directory  # noqa: E402
from pipeline.demo.samplecrawl import build_sample_crawl, sample_manifest  # noqa: E402
from pipeline.sources.download import DownloadError  # noqa: E402
from pipeline.sources.dumps import collinfo_url_for, newest_dump, newest_of  # noqa: E402
from tests import prefect_api  # noqa: E402
from tests.outputs import document_pass_dirs  # noqa: E402


@pytest.fixture(scope="session")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ephemeral Prefect server (SQLite in a temporary folder) for every flow test."""
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings({PREFECT_HOME: str(home), PREFECT_SERVER_ANALYTICS_ENABLED: False}),
        prefect_test_harness(server_startup_timeout=90),
    ):
        yield str(PREFECT_API_URL.value()).rstrip("/")


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the retry policy, without minutes of backoff."""
    monkeypatch.setattr(refinery_flow, "PASS_RETRIES", 1)
    monkeypatch.setattr(refinery_flow, "PASS_BACKOFF_S", 0.1)


def _run(**params: Any):  # noqa: ANN202 - prefect State
    return refinery(**params, return_state=True)


def _flow_run_id(state) -> str:  # noqa: ANN001
    return str(state.state_details.flow_run_id)


@pytest.fixture(scope="session")
def sample_flow(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The "sample" deployment's parameters, run once through Prefect."""
    out = tmp_path_factory.mktemp("flow-out")
    params = deployment_parameters()["sample"]
    config = RunConfig.model_validate({**params["config"], "output_dir": str(out)})
    state = _run(config=config, sample=True)
    return {"state": state, "config": config, "out": out, "id": _flow_run_id(state)}


def test_sample_flow_writes_what_the_pipeline_writes(sample_flow, sample_run) -> None:  # noqa: ANN001
    state = sample_flow["state"]
    assert state.is_completed(), state.message
    result = state.result()
    run_dir = (sample_flow["out"] / "sample").resolve()
    assert Path(result["run_dir"]) == run_dir
    # the final corpus is the last document pass's (dedup), as with `refinery run`
    assert Path(result["documents_dir"]) == run_dir / "dedup"
    assert sample_run.documents_dir == sample_run.run_dir / "dedup" / "documents"
    assert result["documents"] == [str(run_dir / "dedup" / "documents" / f"{part_name(i)}.parquet") for i in range(4)]
    flow_docs = read_documents(run_dir / "dedup").sort_by("id")
    cli_docs = read_documents(sample_run.documents_dir.parent).sort_by("id")
    assert flow_docs.num_rows == cli_docs.num_rows > 30
    assert flow_docs.column("id").to_pylist() == cli_docs.column("id").to_pylist()
    assert flow_docs.column("text").to_pylist() == cli_docs.column("text").to_pylist()
    assert set(flow_docs.column("dump").to_pylist()) == {SAMPLE_DUMP}
    manifest = json.loads((Path(result["tokens"]) / "manifest.json").read_text())
    cli_manifest = json.loads((sample_run.tokens_dir / "manifest.json").read_text())
    assert manifest["totals"] == cli_manifest["totals"] and manifest["totals"]
    # keep_rejected from the deployment's parameters reached the pipeline
    dropped = sum(sum(s.drops.values()) for s in total_stats(run_dir).stages)
    assert pq.read_table(run_dir / "rejected").num_rows == dropped


def test_sample_flow_publishes_funnel_drops_outputs_and_progress(sample_flow, api_url: str) -> None:  # noqa: ANN001
    run_dir = (sample_flow["out"] / "sample").resolve()
    stats = run_stats(document_pass_dirs(run_dir))
    warc = total_stats(run_dir)
    arts = prefect_api.artifacts(api_url, sample_flow["id"])
    funnel = arts[artifact_key("sample", "funnel")]
    assert funnel["type"] == "table"
    rows = _table(funnel)
    assert [r["stage"] for r in rows] == [s.name for s in stats.stages]
    assert [r["stage"] for r in rows][:4] == ["url_filter", "prescreen", "extract", "langid"]
    assert "minhash_dedup" in [r["stage"] for r in rows]
    assert rows == funnel_rows(stats)
    assert rows[-1]["docs out"] == stats.docs_out == read_documents(run_dir / "dedup").num_rows
    drops = _table(arts[artifact_key("sample", "drop-reasons")])
    by_rule = {r["rule"]: r for r in drops}
    assert by_rule["langid:language"]["dropped"] == stats.stage("langid").drops["langid:language"]
    planted = sample_manifest(sample_flow["out"] / "sample-crawl")["planted"]
    blocked = set(planted["blocklist:domain"]) | set(planted["blocklist:banned_word"])
    url_rules = [r for r in drops if r["stage"] == "url_filter"]
    assert url_rules and all(r["example"] in blocked for r in url_rules)
    assert drops == drop_rows(stats)
    outputs = arts[artifact_key("sample", "outputs")]
    assert outputs["type"] == "markdown"
    assert str(run_dir / "dedup" / "documents") in outputs["data"] and str(run_dir / "tokens") in outputs["data"]
    assert f"{stats.docs_out:,} documents" in outputs["data"]
    source = {r["counter"]: r["records"] for r in _table(arts[artifact_key("sample", "source")])}
    assert source["responses"] == stats.source["responses"]
    progress = arts[artifact_key("sample", "warc-progress")]
    assert progress["type"] == "progress" and float(progress["data"]) == 100.0
    assert progress["task_run_id"], "the progress artifact belongs to the pass's task run"
    expected = f"warc pass: 4/4 parts done, {warc.source['documents']:,} documents read, {warc.docs_out:,} kept"
    assert progress["description"] == expected
    assert float(arts[artifact_key("sample", "dedup-progress")]["data"]) == 100.0
    report = run_dir / "report" / "index.html"
    assert report.is_file() and "<html" in report.read_text()[:2000].lower()
    assert sample_flow["state"].result()["report"] == str(report)
    # no outputs server here (ephemeral Prefect): the report is named by its path, never by a file:// link
    assert not any("file://" in str(a["data"]) for a in arts.values())
    assert artifact_key("sample", "report-link") not in arts
    headline = arts[artifact_key("sample", "report")]
    assert headline["type"] == "markdown"
    where = f"Report: `{report}` (open it on the machine that holds the output; no outputs server runs)"
    assert where in headline["data"], headline["data"]
    report_json = json.loads((report.parent / "report.json").read_text())
    manifest = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    top = report_json["drops"][0]
    assert top["count"] == drop_rows(stats)[0]["dropped"] > 0
    for line in (
        f"| documents in | {report_json['funnel']['docs_in']:,} |",
        f"| documents out | {stats.docs_out:,} |",
        f"| tokens | {manifest['totals']['num_tokens']:,} (in the token shards) |",
        f"| {top['key']} | {top['count']:,} | {100 * top['share_of_stage_input']:.1f} |",
    ):
        assert line in headline["data"], (line, headline["data"])
    assert "verdict" not in headline["data"], "no validation ran, so there is no verdict"
    messages = prefect_api.wait_for_logs(
        api_url, sample_flow["id"], "warc pass started: 4 inputs", "warc pass finished: 4/4 parts done", "langid"
    )
    assert any("serving the sample crawl (4 WARC files)" in m for m in messages)
    tasks = prefect_api.task_runs(api_url, sample_flow["id"])
    assert set(tasks) == {"plan", "warc pass", "dedup pass", "tokenize pass", "report pass"}
    assert all(t["state_type"] == "COMPLETED" and t["run_count"] == 1 for t in tasks.values())


def _table(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(artifact["data"])


@pytest.fixture()
def local_crawl(tmp_path: Path):  # noqa: ANN201 - SampleCrawl
    """A private sample crawl used as a local mirror folder (so a test may break it)."""
    return build_sample_crawl(tmp_path / "mirror")


def test_failed_part_fails_the_run_clearly_then_resumes(api_url: str, local_crawl, tmp_path: Path) -> None:  # noqa: ANN001
    """On the newest dump of a mirror (the flow resolves it): a missing WARC file fails its part and the run;
    the rerun redoes that part only."""
    root = local_crawl.root  # holds SAMPLE_DUMP (CC-MAIN-2024-22)
    newer = build_sample_crawl(root, dump="CC-MAIN-2024-26")
    (root / "crawl-data" / "CC-MAIN-2025-01").mkdir()  # no warc.paths.gz: not a dump (yet)
    victim = newer.warc_files[1]
    hidden = victim.with_name(victim.name + ".away")
    victim.rename(hidden)
    config = RunConfig.model_validate(
        {
            "output_dir": str(tmp_path / "out"),
            "name": "broken",
            "source": {"cc_base_url": str(root), "limit_warcs": 2},
            # two processes: forked engine workers must stop cleanly inside a Prefect flow process
            "engine": {"workers": 2},
            "tokenize": False,
            "report": False,
        }
    )
    state = _run(config=config, newest_dump=True)
    assert state.is_failed()
    assert "1 of 2 parts failed" in state.message and "part-00001" in state.message, state.message
    assert "rerun" in state.message and "CC-MAIN-2024-26" in state.message
    run_dir = tmp_path / "out" / "broken"
    assert sorted(p.name for p in (run_dir / "markers").iterdir()) == ["part-00000.done"]
    assert not (run_dir / "documents" / "part-00001.parquet").exists(), "a failed part left output behind"
    tasks = prefect_api.task_runs(api_url, _flow_run_id(state))
    assert tasks["newest dump"]["state_type"] == "COMPLETED"
    assert tasks["warc pass"]["state_type"] == "FAILED"
    assert tasks["warc pass"]["run_count"] == 2, "the pass was not retried"
    assert "report pass" not in tasks, "a failed pass must stop the run"
    done = {p.name: p.stat().st_mtime_ns for p in (run_dir / "documents").glob("*.parquet")}

    hidden.rename(victim)
    state = _run(config=config, newest_dump=True)
    assert state.is_completed(), state.message
    after = {p.name: p.stat().st_mtime_ns for p in (run_dir / "documents").glob("*.parquet")}
    assert set(after) == {"part-00000.parquet", "part-00001.parquet"}
    assert all(after[name] == mtime for name, mtime in done.items()), "finished parts were redone"
    assert Path(state.result()["documents_dir"]) == (run_dir / "dedup").resolve()
    assert set(read_documents(run_dir / "dedup").column("dump").to_pylist()) == {"CC-MAIN-2024-26"}
    assert set(prefect_api.task_runs(api_url, _flow_run_id(state))) == {
        "newest dump",
        "plan",
        "warc pass",
        "dedup pass",
    }


def test_unknown_dump_fails_fast_without_retrying(api_url: str, local_crawl, tmp_path: Path) -> None:  # noqa: ANN001
    config = RunConfig.model_validate(
        {"output_dir": str(tmp_path), "source": {"cc_base_url": str(local_crawl.root), "dump": "CC-MAIN-2099-01"}}
    )
    state = _run(config=config)
    assert state.is_failed()
    assert "CC-MAIN-2099-01" in state.message and "not found" in state.message, state.message
    tasks = prefect_api.task_runs(api_url, _flow_run_id(state))
    assert tasks["plan"]["state_type"] == "FAILED" and tasks["plan"]["run_count"] == 1
    assert "warc pass" not in tasks


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"config": {"source": {"dump": "2024-22"}}}, "config.source.dump: Value error, dump must look like CC-MAIN"),
        ({"config": {"langid": {"threshold": 1.5}}}, "config.langid.threshold: Input should be less than or equal"),
        ({"config": {"engine": {"workers": 0}}}, "greater than or equal to 1"),
        ({"config": {"no_such_field": 1}}, "config.no_such_field: Extra inputs are not permitted"),
        ({"sample": "perhaps"}, "sample: Input should be a valid boolean"),
    ],
)
def test_bad_parameters_fail_before_any_work_and_say_why_in_the_log(api_url: str, params: dict, message: str) -> None:
    """The reason is in the run's log (the Logs tab), not only in the state message under Details."""
    state = _run(**params)
    assert state.is_failed()
    assert "invalid parameters" in state.message and message in state.message, state.message
    assert prefect_api.task_runs(api_url, _flow_run_id(state)) == {}
    messages = prefect_api.wait_for_logs(api_url, _flow_run_id(state), message)
    assert any(m.startswith("nothing was run: ") and message in m for m in messages), messages


def test_sample_run_refuses_a_source_it_would_ignore(api_url: str, tmp_path: Path) -> None:
    """A sample run used to complete on CC-MAIN-2024-22 whatever dump the form said; now it fails and says why."""
    params = deployment_parameters()["sample"]
    config = RunConfig.model_validate({**params["config"], "output_dir": str(tmp_path)})
    config.source.dump = "CC-MAIN-1999-99"
    state = _run(config=config, sample=True)
    assert state.is_failed()
    assert "'CC-MAIN-1999-99'" in state.message and "sample" in state.message, state.message
    run_id = _flow_run_id(state)
    messages = prefect_api.wait_for_logs(api_url, run_id, "nothing was run: a sample run reads the embedded sample")
    assert any("source.dump 'CC-MAIN-1999-99' (must stay 'CC-MAIN-2024-22')" in m for m in messages), messages
    assert prefect_api.task_runs(api_url, run_id) == {}
    assert list(tmp_path.iterdir()) == [], "a refused run wrote output"


def test_sample_conflict_names_what_a_sample_run_would_ignore() -> None:
    sample = RunConfig.model_validate(deployment_parameters()["sample"]["config"])
    assert sample_conflict(sample, newest_dump=False) is None
    other_dump = sample.model_copy(update={"source": sample.source.model_copy(update={"dump": "CC-MAIN-2023-50"})})
    assert "source.dump 'CC-MAIN-2023-50'" in (sample_conflict(other_dump, newest_dump=False) or "")
    assert sample_conflict(other_dump, newest_dump=True) is None, "newest_dump replaces the dump by design"
    mirror = sample.model_copy(update={"source": sample.source.model_copy(update={"cc_base_url": "/srv/cc/"})})
    problem = sample_conflict(mirror, newest_dump=True) or ""
    assert f"source.cc_base_url '/srv/cc/' (must stay '{COMMON_CRAWL_BASE_URL}')" in problem
    assert "source.dump" not in problem


# --- the pieces, without a flow run ----------------------------------------------------------------------------------


def test_newest_dump_from_collinfo_json(tmp_path: Path) -> None:
    # the shape Common Crawl publishes at index.commoncrawl.org/collinfo.json (newest first; order not relied on)
    (tmp_path / "collinfo.json").write_text(
        '[{"id": "CC-MAIN-2024-18", "name": "April 2024 Index", "timegate": "x", "cdx-api": "x"},'
        ' {"id": "CC-MAIN-2024-22", "name": "May 2024 Index", "timegate": "x", "cdx-api": "x"},'
        ' {"id": "CC-MAIN-2013-20", "name": "Summer 2013 Index"}, {"id": "CC-MAIN-2012"}]'
    )
    (tmp_path / "broken.json").write_text("<html>not json</html>")
    with serve_directory(tmp_path) as url:
        assert newest_dump(url) == "CC-MAIN-2024-22"  # a mirror's own collinfo.json
        assert newest_dump("https://data.commoncrawl.org/", collinfo_url=url + "collinfo.json") == "CC-MAIN-2024-22"
        with pytest.raises(DownloadError, match="not JSON"):
            newest_dump(url, collinfo_url=url + "broken.json")
        with pytest.raises(DownloadError, match="HTTP 404"):
            newest_dump(url, collinfo_url=url + "missing.json")
    assert collinfo_url_for("https://data.commoncrawl.org/") == "https://index.commoncrawl.org/collinfo.json"
    assert collinfo_url_for("http://127.0.0.1:8765/") == "http://127.0.0.1:8765/collinfo.json"
    assert newest_of(["CC-MAIN-2023-50", "CC-MAIN-2024-09", "CC-MAIN-2023-06"]) == "CC-MAIN-2024-09"
    with pytest.raises(ValueError, match="no dump ids"):
        newest_of(["CC-MAIN-2012", "latest"])
    with pytest.raises(FileNotFoundError, match="not a Common Crawl mirror folder"):
        newest_dump(str(tmp_path))


def test_progress_is_read_from_the_part_files(sample_run) -> None:  # noqa: ANN001
    parts = [part_name(i) for i in range(4)]
    progress = read_progress(sample_run.run_dir, parts)
    assert (progress.done, progress.total, progress.percent) == (4, 4, 100.0)
    warc = sample_run.pass_stats[0]
    assert progress.read == warc.source["documents"] and progress.kept == warc.docs_out
    assert read_progress(sample_run.run_dir, [*parts, part_name(4)]).percent == 80.0


def test_deployments_are_defined_with_full_valid_parameters() -> None:
    deployments = {d.name: d for d in build_deployments() if d.flow_name == "refinery"}  # ablate: test_ablate_flow
    assert set(deployments) == {"local", "sample", WEEKLY, SPARK_CLUSTER}
    for d in deployments.values():
        assert d.entrypoint == "flows.refinery_flow.refinery"
        assert d.enforce_parameter_schema
        RunConfig.model_validate(d.parameters["config"])  # a complete, valid config: the form opens filled in
    assert deployments["sample"].parameters["sample"] is True
    weekly = deployments[WEEKLY]
    assert weekly.parameters["newest_dump"] is True
    assert weekly.parameters["config"]["source"]["limit_warcs"] >= 1
    assert [s.schedule.cron for s in weekly.schedules] == [WEEKLY_CRON]
    assert not deployments["local"].schedules and not deployments["sample"].schedules
    assert deployments[SPARK_CLUSTER].parameters["config"]["engine"]["kind"] == "spark"
    assert deployments["local"].parameters["config"] == RunConfig().model_dump(mode="json")
    schema = deployments["local"]._parameter_openapi_schema.model_dump()
    assert schema["definitions"]["RunConfig"]["properties"]["source"] == {"$ref": "#/definitions/SourceConfig"}


def test_report_headline_shows_the_verdict_and_links_only_over_http(tmp_path: Path) -> None:
    report = {
        "funnel": {"docs_in": 1200, "docs_out": 345, "tokens_out": 99_000},
        "tokens": None,
        "validation": {"verdict": "fail", "reason": "val loss 9.1 >= unigram entropy 7.2"},
        "drops": [
            {"key": f"quality:rule{i}", "count": 100 - i, "share_of_stage_input": 0.5 - i / 100} for i in range(7)
        ],
    }
    html = tmp_path / "out" / "run" / "report" / "index.html"
    text = report_markdown("run", report, report_location(html, None))
    assert "| documents in | 1,200 |" in text and "| documents out | 345 |" in text
    assert "| tokens | ~99,000 (estimated, not tokenized) |" in text
    assert "| validation verdict | fail (val loss 9.1 >= unigram entropy 7.2) |" in text
    assert "| quality:rule0 | 100 | 50.0 |" in text and "quality:rule4" in text and "quality:rule5" not in text
    assert f"`{html}`" in text and "file://" not in text
    site = OutputsSite(root=(tmp_path / "out").resolve(), url="http://127.0.0.1:4201/")
    assert report_location(html, site) == (
        "[http://127.0.0.1:4201/run/report/index.html](http://127.0.0.1:4201/run/report/index.html)"
    )
    assert site.url_for(tmp_path / "out" / "a run" / "x.html") == "http://127.0.0.1:4201/a%20run/x.html"
    elsewhere = tmp_path / "elsewhere" / "index.html"
    assert site.url_for(elsewhere) is None and site.url_for(tmp_path / "out" / ".." / "x") is None
    assert f"`{elsewhere}`" in report_location(elsewhere, site) and "outside the folder" in report_location(
        elsewhere, site
    )
    assert site_from_env(site.env()) == site and site_from_env({}) is None


def test_artifact_keys_are_valid_prefect_keys() -> None:
    assert artifact_key("CC-MAIN-2024-22", "funnel") == "cc-main-2024-22-funnel"
    assert artifact_key("My run_1 (test)", "drop-reasons") == "my-run-1-test-drop-reasons"
    assert artifact_key("***", "outputs") == "run-outputs"


def test_spark_cluster_deployment_runs_on_spark_and_logs_its_progress(
    api_url: str,
    spark,
    sample_run,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """The spark-cluster deployment's parameters on the sample crawl: the flow drives Spark (the test session's
    local[2] master), writes what the local engine writes, and Spark's progress reaches the run's log."""
    params = deployment_parameters()[SPARK_CLUSTER]
    config = RunConfig.model_validate({**params["config"], "output_dir": str(tmp_path), "name": "spark-flow"})
    assert config.engine.kind == "spark"
    state = _run(config=config, sample=True)
    assert state.is_completed(), state.message
    run_dir = tmp_path / "spark-flow"
    flow_docs = read_documents(run_dir / "dedup").sort_by("id")
    cli_docs = read_documents(sample_run.documents_dir.parent).sort_by("id")
    assert flow_docs.column("id").to_pylist() == cli_docs.column("id").to_pylist()
    assert flow_docs.column("text").to_pylist() == cli_docs.column("text").to_pylist()
    messages = prefect_api.wait_for_logs(
        api_url, _flow_run_id(state), "spark engine: master local[2]", "spark: cc-refinery: WARC files: stage"
    )
    assert any("spark: cc-refinery: dedup: write parts finished" in m for m in messages)
