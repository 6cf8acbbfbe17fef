"""A real ``prefect server start`` (SQLite, free port) with the deployments served, driven through its API.

The run is triggered exactly as the UI's Run button does it (``POST /deployments/{id}/create_flow_run`` with
the form's parameters). One server for the whole file: starting one takes 15-20 s. The runs' outputs are served
over HTTP next to it, as ``make ui`` does; the last test starts ``make ui``'s own entry point and stops it.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

pytest.importorskip("prefect", reason="prefect is not installed (pip install 'prefect==3.8.8' 'fastapi<0.155')")

from prefect.client.orchestration import SyncPrefectClient  # noqa: E402
from prefect.exceptions import PrefectHTTPStatusError  # noqa: E402

from flows.artifacts import artifact_key, funnel_rows  # noqa: E402
from flows.deployments import WEEKLY, WEEKLY_CRON  # noqa: E402
from flows.outputs import OutputsSite  # noqa: E402
from flows.ui import PrefectServer, free_port, port_in_use, prefect_env  # noqa: E402
from pipeline.app.config import SAMPLE_DUMP  # noqa: E402
from pipeline.app.passes import run_stats  # noqa: E402
from pipeline.core.parts import read_documents  # noqa: E402
from pipeline.demo.samplecrawl import sample_manifest  # noqa: E402
from tests import prefect_api  # noqa: E402
from tests.outputs import document_pass_dirs  # noqa: E402


@pytest.fixture(scope="module")
def outputs(prefect_ui: prefect_api.LiveUI) -> OutputsSite:
    """The runs' root folder served over HTTP on 127.0.0.1, as ``make ui`` serves ./out."""
    return prefect_ui.outputs


@pytest.fixture(scope="module")
def live(prefect_ui: prefect_api.LiveUI) -> PrefectServer:
    return prefect_ui.server


@pytest.fixture(scope="module")
def client(live: PrefectServer) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(live.api_url) as c:
        yield c


@pytest.fixture(scope="module")
def ui_run(live: PrefectServer, client: SyncPrefectClient, outputs: OutputsSite) -> dict:
    """Run button on the "sample" deployment, with the form edited: output in the served folder, a name, en + de."""
    deployment = client.read_deployment_by_name("refinery/sample")
    params = copy.deepcopy(deployment.parameters)
    params["config"].update({"output_dir": str(outputs.root), "name": "ui-run"})
    params["config"]["langid"]["languages"] = ["en", "de"]
    created = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    run = prefect_api.wait_final(live.api_url, str(created.id))
    return {"run": run, "run_dir": outputs.root / "ui-run", "id": str(created.id)}


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


def test_report_is_linked_over_http_and_opens(ui_run: dict, live: PrefectServer, outputs: OutputsSite) -> None:
    """The UI cannot open file:// links: the report link is an http URL of the outputs server, and it loads."""
    report = ui_run["run_dir"] / "report" / "index.html"
    url = f"{outputs.url}ui-run/report/index.html"
    arts = prefect_api.artifacts(live.api_url, ui_run["id"])
    link = arts[artifact_key("ui-run", "report-link")]
    assert f"({url})" in link["data"] and "file://" not in link["data"], link["data"]
    headline = arts[artifact_key("ui-run", "report")]
    assert headline["type"] == "markdown" and f"[{url}]({url})" in headline["data"]
    assert f"| documents out | {run_stats(document_pass_dirs(ui_run['run_dir'])).docs_out:,} |" in headline["data"]
    resp = requests.get(url, timeout=30)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert resp.content == report.read_bytes()
    prefect_api.wait_for_logs(live.api_url, ui_run["id"], f"report: {url} ({report.resolve()})")


def test_outputs_server_is_read_only_and_stays_in_its_folder(outputs: OutputsSite) -> None:
    secret = outputs.root.parent / "secret.txt"
    secret.write_text("not for the web")
    (outputs.root / "escape").symlink_to(secret)
    (outputs.root / "a-run").mkdir(exist_ok=True)
    (outputs.root / "a-run" / "kept.txt").write_text("served")
    assert requests.get(f"{outputs.url}a-run/kept.txt", timeout=10).text == "served"
    for method in ("PUT", "POST", "DELETE"):
        resp = requests.request(method, f"{outputs.url}a-run/kept.txt", data=b"overwritten", timeout=10)
        assert resp.status_code == 501, (method, resp.status_code)
    assert (outputs.root / "a-run" / "kept.txt").read_text() == "served"
    host, port = outputs.url.removeprefix("http://").rstrip("/").split(":")
    for path in ("/../secret.txt", "/a-run/../../secret.txt", "/%2e%2e/secret.txt", "/escape", "/a-run/"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)  # sends the path as written
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (403, 404) and b"not for the web" not in body, (path, resp.status)


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
    created = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    run = prefect_api.wait_final(live.api_url, str(created.id))
    assert run["state_type"] == "FAILED"
    assert "dump must look like CC-MAIN-YYYY-WW" in run["state"]["message"], run["state"]["message"]
    assert prefect_api.task_runs(live.api_url, str(created.id)) == {}
    # the Logs tab says why, not only Details -> State message
    prefect_api.wait_for_logs(live.api_url, str(created.id), "nothing was run", "dump must look like CC-MAIN-YYYY-WW")


def test_sample_deployment_refuses_a_dump_it_would_ignore(client: SyncPrefectClient, live: PrefectServer) -> None:
    """The sample form offers source.dump; a run with another dump used to complete on CC-MAIN-2024-22."""
    deployment = client.read_deployment_by_name("refinery/sample")
    params = copy.deepcopy(deployment.parameters)
    params["config"]["source"]["dump"] = "CC-MAIN-1999-99"
    created = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    run = prefect_api.wait_final(live.api_url, str(created.id))
    assert run["state_type"] == "FAILED" and "CC-MAIN-1999-99" in run["state"]["message"], run["state"]
    assert prefect_api.task_runs(live.api_url, str(created.id)) == {}
    prefect_api.wait_for_logs(
        live.api_url, str(created.id), "a sample run reads the embedded sample crawl", "source.dump 'CC-MAIN-1999-99'"
    )


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


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc), so a teardown can stop children in their own sessions."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@pytest.fixture()
def make_ui(tmp_path: Path) -> Iterator[dict]:
    """``python -m flows.ui`` (what ``make ui`` runs) on free ports; stopped, with its children, in teardown."""
    ports = {"port": free_port(), "outputs_port": free_port()}
    log_path = tmp_path / "ui.log"
    cmd = [sys.executable, "-m", "flows.ui", "--home", str(tmp_path / "home"), "--port", str(ports["port"])]
    cmd += ["--outputs", str(tmp_path / "out"), "--outputs-port", str(ports["outputs_port"])]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    children: list[int] = []
    try:
        yield {"process": proc, "log": log_path, "out": tmp_path / "out", "children": children, **ports}
    finally:
        if proc.poll() is None:
            children += _children(proc.pid)
            os.kill(proc.pid, signal.SIGINT)  # its own clean shutdown first
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for pid in children:  # each leads its own session
            if Path(f"/proc/{pid}").exists():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        assert proc.poll() is None, f"flows.ui exited with {proc.returncode}:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"{needle!r} not logged after {timeout_s} s:\n{text[-3000:]}"
        time.sleep(0.5)


def test_make_ui_serves_the_outputs_and_stops_them_with_the_ui(make_ui: dict) -> None:
    proc, ports = make_ui["process"], make_ui
    url = f"http://127.0.0.1:{ports['outputs_port']}/"
    text = _wait_for_line(make_ui["log"], "Run outputs (reports): ", proc, timeout_s=300)
    assert f"Run outputs (reports): {url} ({make_ui['out'].resolve()})" in text
    make_ui["children"] += _children(proc.pid)
    assert len(make_ui["children"]) == 2, "expected the Prefect server and the serve process"
    (make_ui["out"] / "run").mkdir()
    (make_ui["out"] / "run" / "index.html").write_text("<html>report</html>")
    assert requests.get(f"{url}run/index.html", timeout=10).text == "<html>report</html>"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=120) == 0
    assert not port_in_use("127.0.0.1", ports["outputs_port"]), "the outputs server outlived the UI"
    assert not port_in_use("127.0.0.1", ports["port"]), "the Prefect server outlived the UI"
    assert not [pid for pid in make_ui["children"] if Path(f"/proc/{pid}").exists()], "a child outlived the UI"
