"""Read flow runs, task runs, logs and artifacts over Prefect's REST API, as the UI does (for the flow tests)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import requests

if TYPE_CHECKING:
    from flows.outputs import OutputsSite
    from flows.ui import PrefectServer

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 300.0
"""A sample run takes ~30 s alone; on a busy 2-core machine (other tests, other users) several times that."""
LOG_TIMEOUT_S = 60.0
"""Logs reach the API in batches from the run's process; a loaded machine delays them."""


def post(api_url: str, path: str, body: dict[str, Any]) -> Any:
    resp = requests.post(f"{api_url}{path}", json=body, timeout=30)
    resp.raise_for_status()
    return resp.json()


def get(api_url: str, path: str) -> Any:
    resp = requests.get(f"{api_url}{path}", timeout=30)
    resp.raise_for_status()
    return resp.json()


def flow_run(api_url: str, flow_run_id: str) -> dict[str, Any]:
    return get(api_url, f"/flow_runs/{flow_run_id}")


def artifacts(api_url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    """Artifacts of a flow run (its own and its task runs'), by key."""
    found = post(api_url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}})
    return {a["key"]: a for a in found}


def task_runs(api_url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    """Task runs of a flow run, by task run name."""
    found = post(api_url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}})
    return {t["name"]: t for t in found}


def log_messages(api_url: str, flow_run_id: str) -> list[str]:
    found = post(
        api_url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "sort": "TIMESTAMP_ASC"}
    )
    return [entry["message"] for entry in found]


def wait_final(api_url: str, flow_run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """Poll a flow run until it is in a final state; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = flow_run(api_url, flow_run_id)
        if run["state_type"] in FINAL_STATES:
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout_s} s: {run['state_type']}")


def wait_for_logs(api_url: str, flow_run_id: str, *needles: str, timeout_s: float = LOG_TIMEOUT_S) -> list[str]:
    """Log messages of a flow run once every ``needle`` appears in one of them (logs are shipped in batches)."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = log_messages(api_url, flow_run_id)
        missing = [n for n in needles if not any(n in m for m in messages)]
        if not missing:
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"log lines with {missing} not found in {len(messages)} messages: {messages[-10:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def live_prefect(home: Path, workdir: Path, outputs: OutputsSite | None = None) -> Iterator[PrefectServer]:
    """A real ``prefect server start`` on a free port (SQLite under ``home``) with the deployments served.

    The same two processes ``make ui`` starts; the serve process runs flow runs with ``workdir`` as cwd, and
    with ``outputs`` (as ``make ui`` passes it) they link their reports over HTTP.
    """
    from flows.deployments import build_deployments
    from flows.ui import free_port, start_serve, start_server, wait_for_deployments

    # the server logs the SQLite lock errors it answers with 503 (Prefect hides them by default): a UI test that
    # saw "Something went wrong" can then tell why
    with mock.patch.dict(os.environ, {"PREFECT_API_LOG_RETRYABLE_ERRORS": "true"}):
        server = start_server(home, port=free_port(), timeout_s=150)
    serve = None
    try:
        serve = start_serve(server, cwd=workdir, log_path=home / "serve.log", poll_s=1.0, outputs=outputs)
        wait_for_deployments(server.api_url, [f"{d.flow_name}/{d.name}" for d in build_deployments()], serve, 120)
        yield server
    finally:
        if serve is not None:
            serve.stop()
        server.stop()


@dataclass(frozen=True)
class LiveUI:
    """The served UI, the folder its flow runs execute in and the outputs site (``workdir/out`` over HTTP)."""

    server: PrefectServer
    workdir: Path
    outputs: OutputsSite


@contextlib.contextmanager
def live_ui(base: Path) -> Iterator[LiveUI]:
    """What ``make ui`` starts, under ``base``: ``base/cwd/out`` served over HTTP, the server (its home in
    ``base/home``) and the served deployments, whose flow runs execute in ``base/cwd``."""
    from flows.outputs import serve_outputs
    from flows.ui import free_port

    workdir = Path(base) / "cwd"
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        serve_outputs(workdir / "out", port=free_port()) as outputs,
        live_prefect(Path(base) / "home", workdir, outputs) as server,
    ):
        yield LiveUI(server, workdir, outputs)


def deployment_id(api_url: str, name: str) -> str:
    return get(api_url, f"/deployments/name/refinery/{name}")["id"]
