"""``make ui``: a local Prefect server (SQLite) on 127.0.0.1, the deployments served, the URL printed.

Two child processes: ``prefect server start`` (API + UI, its database in a project-local
``PREFECT_HOME``) and ``python -m flows.deployments serve`` (registers the deployments and runs
their flow runs). A thread of this process serves the runs' outputs read-only over HTTP (the UI
cannot open ``file://`` links to the reports). Ctrl-C stops all three. The tests start the same
pieces through these functions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

from flows.outputs import DEFAULT_OUTPUTS_PORT, OutputsSite, serve_outputs

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO / ".prefect"
DEFAULT_PORT = 4200
DEFAULT_OUTPUTS = REPO / "out"
"""Where runs write with the form's default output_dir ("out"): served runs execute in REPO."""
SERVER_START_TIMEOUT_S = 120.0


class StartupError(RuntimeError):
    """A child process did not come up; the message holds the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) == 0


def prefect_env(home: Path, api_url: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Prefect processes of this project: own home and SQLite database, no analytics."""
    env = dict(os.environ if base is None else base)
    home = Path(home).resolve()
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline,filters,tokenization",
        }
    )
    env.pop("PREFECT_PROFILE", None)
    if api_url is None:
        env.pop("PREFECT_API_URL", None)
    else:
        env["PREFECT_API_URL"] = api_url
    return env


@dataclass
class Child:
    """A child process in its own process group, so it and its children stop together."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (a clean shutdown), then SIGTERM, then SIGKILL, to the whole process group."""
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on %s", self.name, sig.name)
        if self._log is not None:
            self._log.close()


def _spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path | None) -> Child:
    log_file = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed by Child.stop
    with _sigint_not_ignored():
        process = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT if log_file else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Child(name, process, log_path, log_file)


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """Children inherit an ignored SIGINT (nohup, background jobs, some CI); then Child.stop could not stop them
    cleanly. A Python-level handler in the parent becomes the default action in the exec'd child."""
    try:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        ignored = False
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class PrefectServer:
    """A running ``prefect server start``."""

    home: Path
    host: str
    port: int
    child: Child

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def stop(self) -> None:
        self.child.stop()


def start_server(
    home: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout_s: float = SERVER_START_TIMEOUT_S
) -> PrefectServer:
    """Start the Prefect server (API + UI) and return once ``/api/health`` answers; its log is ``<home>/server.log``."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if port_in_use(host, port):
        raise StartupError(f"port {port} on {host} is already in use; pick another with --port")
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    env = prefect_env(home)
    # the UI asks the API at PREFECT_UI_API_URL, which does not follow --port; a browser elsewhere needs it set
    env.update({"PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port)})
    env.setdefault("PREFECT_UI_API_URL", f"http://{host}:{port}/api")
    child = _spawn("prefect server", cmd, env, REPO, home / "server.log")
    server = PrefectServer(home, host, port, child)
    try:
        wait_healthy(server, timeout_s)
    except BaseException:
        child.stop()
        raise
    return server


def wait_healthy(server: PrefectServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.child.alive():
            code = server.child.process.returncode
            raise StartupError(f"prefect server exited with {code}:\n{server.child.log_tail()}")
        try:
            if requests.get(f"{server.api_url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise StartupError(f"prefect server not healthy after {timeout_s:.0f} s:\n{server.child.log_tail()}")


def start_serve(
    server: PrefectServer,
    *,
    cwd: Path = REPO,
    log_path: Path | None = None,
    limit: int = 1,
    poll_s: float = 2.0,
    outputs: OutputsSite | None = None,
) -> Child:
    """Start ``python -m flows.deployments serve`` against ``server``: it registers and executes the deployments.

    With ``outputs``, its flow runs link their reports over HTTP there.
    """
    cmd = [sys.executable, "-m", "flows.deployments", "serve", "--limit", str(limit), "--poll", str(poll_s)]
    env = prefect_env(server.home, server.api_url)
    if outputs is not None:
        env.update(outputs.env())
    return _spawn("deployments", cmd, env, cwd, log_path)


def deployment_names(api_url: str) -> list[str]:
    """``flow/deployment`` names registered with the API at ``api_url``."""
    resp = requests.post(f"{api_url}/deployments/filter", json={"limit": 200}, timeout=10)
    resp.raise_for_status()
    flows = requests.post(f"{api_url}/flows/filter", json={"limit": 200}, timeout=10).json()
    flow_names = {f["id"]: f["name"] for f in flows}
    return sorted(f"{flow_names.get(d['flow_id'], '?')}/{d['name']}" for d in resp.json())


def wait_for_deployments(api_url: str, names: Iterable[str], child: Child, timeout_s: float = 60.0) -> None:
    """Wait until every ``flow/deployment`` in ``names`` is registered (the serve process is up)."""
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        try:
            if wanted <= set(deployment_names(api_url)):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise StartupError(f"deployments {sorted(wanted)} not registered after {timeout_s:.0f} s:\n{child.log_tail()}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from flows.deployments import build_deployments  # the names to wait for; cheap, no server needed

    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME: database, logs (.prefect)")
    parser.add_argument("--limit", type=int, default=1, help="flow runs at the same time (default 1)")
    parser.add_argument(
        "--outputs", type=Path, default=DEFAULT_OUTPUTS, help="runs' root folder to serve over HTTP (./out)"
    )
    parser.add_argument(
        "--outputs-port", type=int, default=DEFAULT_OUTPUTS_PORT, help=f"its port (default {DEFAULT_OUTPUTS_PORT})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)

    names = [f"{d.flow_name}/{d.name}" for d in build_deployments()]
    # children run in their own sessions (Ctrl-C reaches only us); stop them on kill and hang-up too. SIGINT is
    # set explicitly: started in the background it would be ignored, here and (inherited) in the children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    if port_in_use("127.0.0.1", args.outputs_port):
        log.error("port %d on 127.0.0.1 is already in use; pick another with --outputs-port", args.outputs_port)
        return 1
    log.info("starting the Prefect server (database and logs in %s) ...", args.home)
    try:
        with serve_outputs(args.outputs, port=args.outputs_port) as outputs:
            server = start_server(args.home, host=args.host, port=args.port)
            try:
                return _serve_until_stopped(server, outputs, names, args.limit)
            finally:
                server.stop()
    except StartupError as e:
        log.error("%s", e)
        return 1


def _serve_until_stopped(server: PrefectServer, outputs: OutputsSite, names: list[str], limit: int) -> int:
    """Serve the deployments against ``server`` until Ctrl-C (0) or until a child process dies (1)."""
    serve = start_serve(server, limit=limit, outputs=outputs)
    try:
        wait_for_deployments(server.api_url, names, serve)
        log.info(
            "\nPrefect UI: %s\nRun outputs (reports): %s (%s)\n\nDeployments: %s\n"
            "Open Deployments, pick one, press Run (Custom run to edit the form).\n"
            "Server log: %s. Ctrl-C stops the server, the outputs server and the runs.\n",
            server.url,
            outputs.url,
            outputs.root,
            ", ".join(names),
            server.home / "server.log",
        )
        while serve.alive() and server.child.alive():
            time.sleep(1.0)
        log.error("a child process stopped unexpectedly; see %s", server.home / "server.log")
        return 1
    except KeyboardInterrupt:
        log.info("stopping ...")
        return 0
    finally:
        serve.stop()


if __name__ == "__main__":
    raise SystemExit(main())
