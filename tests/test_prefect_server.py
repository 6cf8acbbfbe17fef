"""A real ``prefect server start`` (SQLite, free port) with the deployments served, driven through its API.

The run is triggered exactly as the UI's Run button does it (``POST /deployments/{id}/create_flow_run`` with
the form's parameters). One server for the whole file: starting one takes 15-20 s.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.155')")

from prefect.client.orchestration import SyncPrefectClient  # noqa: E402
from prefect.exceptions import PrefectHTTPStatusError  # noqa: E402

from flows.artifacts import artifact_key, funnel_rows  # noqa: E402
from flows.deployments import WEEKLY, WEEKLY_CRON  # noqa: E402
from flows.passes import document_pass_dirs, run_stats  # noqa: E402
from flows.ui import PrefectServer, prefect_env  # noqa: E402
from pipeline.config import SAMPLE_DUMP  # noqa: E402
from pipeline.shards import read_documents  # noqa: E402
from pipeline.sources.samplecrawl import sample_manifest  # noqa: E402
from tests import prefect_api  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    with prefect_api.live_prefect(home, tmp_path_factory.mktemp("prefect-server-cwd")) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: PrefectServer) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(live.api_url) as c:
        yield c


@pytest.fixture(scope="module")
def ui_run(live: PrefectServer, client: SyncPrefectClient, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run button on the "sample" deployment, with the form edited: own output folder and name, en + de."""
    deployment = client.read_deployment_by_name("refinery/sample")
    params = copy.deepcopy(deployment.parameters)
    out = tmp_path_factory.mktemp("ui-run-out")
    params["config"].update({"output_dir": str(out), "name": "ui-run"})
    params["config"]["langid"]["languages"] = ["en", "de"]
    created = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    run = prefect_api.wait_final(live.api_url, str(created.id), timeout_s=150)
    return {"run": run, "run_dir": out / "ui-run", "id": str(created.id)}


def test_run_button_runs_the_pipeline_with_the_form_values(ui_run: dict) -> None:
    run = ui_run["run"]
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["parameters"]["config"]["langid"]["languages"] == ["en", "de"]
    docs = read_documents(document_pass_dirs(ui_run["run_dir"])[-1]).to_pylist()  # the final (deduplicated) corpus
    assert {d["language"] for d in docs} == {"en", "de"}
    assert {d["dump"] for d in docs} == {SAMPLE_DUMP}
    # German pages planted in the sample crawl were kept, as the edited form asked
    planted = sample_manifest(ui_run["run_dir"].parent / "sample-crawl")["planted"]
    german = {d["url"] for d in docs if d["language"] == "de"}
    assert german & set(planted["language:de"]), german
    assert not german & set(planted["language:fr"])


def test_finished_run_has_its_artifacts_and_pipeline_logs(ui_run: dict, live: PrefectServer) -> None:
    stats = run_stats(document_pass_dirs(ui_run["run_dir"]))
    arts = prefect_api.artifacts(live.api_url, ui_run["id"])
    assert json.loads(arts[artifact_key("ui-run", "funnel")]["data"]) == funnel_rows(stats)
    drops = {r["rule"]: r["dropped"] for r in json.loads(arts[artifact_key("ui-run", "drop-reasons")]["data"])}
    assert drops["langid:language"] == stats.stage("langid").drops["langid:language"]
    assert float(arts[artifact_key("ui-run", "warc-progress")]["data"]) == 100.0
    assert str(ui_run["run_dir"].resolve()) in arts[artifact_key("ui-run", "outputs")]["data"]
    # these lines come from pipeline and tokenization loggers, not from the flow: our loggers reach the UI
    prefect_api.wait_for_logs(live.api_url, ui_run["id"], "tokenizing 4 parts", "stopped serving")


def test_parameters_outside_the_schema_are_rejected_by_the_server(client: SyncPrefectClient) -> None:
    deployment = client.read_deployment_by_name("refinery/sample")
    params = copy.deepcopy(deployment.parameters)
    params["config"]["langid"]["threshold"] = 1.5
    with pytest.raises(PrefectHTTPStatusError) as err:
        client.create_flow_run_from_deployment(deployment.id, parameters=params)
    assert err.value.response.status_code in (409, 422)
    assert "1.5" in err.value.response.text and "threshold" in err.value.response.text


def test_invalid_values_fail_the_run_before_any_work(client: SyncPrefectClient, live: PrefectServer) -> None:
    deployment = client.read_deployment_by_name("refinery/local")
    params = copy.deepcopy(deployment.parameters)
    params["config"]["source"]["dump"] = "2024-22"  # a string, as the schema allows; the model does not
    start = time.monotonic()
    created = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    run = prefect_api.wait_final(live.api_url, str(created.id), timeout_s=90)
    assert run["state_type"] == "FAILED"
    assert "dump must look like CC-MAIN-YYYY-WW" in run["state"]["message"], run["state"]["message"]
    assert prefect_api.task_runs(live.api_url, str(created.id)) == {}
    assert time.monotonic() - start < 60


def test_weekly_deployment_is_scheduled(live: PrefectServer) -> None:
    deployment = prefect_api.get(live.api_url, f"/deployments/name/refinery/{WEEKLY}")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [WEEKLY_CRON]
    assert all(s["active"] for s in deployment["schedules"]) and not deployment["paused"]
    deadline = time.monotonic() + 60
    while True:
        runs = prefect_api.post(
            live.api_url,
            "/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}},
        )
        if runs or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert runs, "the scheduler created no runs for the weekly deployment"
    for run in runs:
        when = datetime.fromisoformat(run["expected_start_time"]).astimezone(UTC)
        assert (when.weekday(), when.hour, when.minute) == (0, 3, 0)
        assert run["parameters"]["newest_dump"] is True


def test_deployments_register_on_a_process_work_pool(live: PrefectServer) -> None:
    """The team install path (infra/prefect): the same deployments, executed by ``prefect worker`` processes."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    pool = {"name": "cc-refinery", "type": "process", "base_job_template": template}
    prefect_api.post(live.api_url, "/work_pools/", pool)
    done = subprocess.run(
        [sys.executable, "-m", "flows.deployments", "deploy", "--work-pool", "cc-refinery", "--working-dir", "/srv/x"],
        env=prefect_env(live.home, live.api_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("local", "sample", WEEKLY, "spark-cluster"):
        deployment = prefect_api.get(live.api_url, f"/deployments/name/refinery/{name}")
        assert deployment["work_pool_name"] == "cc-refinery"
        assert deployment["entrypoint"] == "flows.refinery_flow.refinery"
        assert deployment["job_variables"] == {"working_dir": "/srv/x"}
        assert deployment["parameters"]["config"]["source"]["dump"] == SAMPLE_DUMP


def test_server_database_is_in_the_given_home(live: PrefectServer) -> None:
    assert (live.home / "prefect.db").is_file() and (live.home / "server.log").is_file()
