"""A real Spark standalone cluster (one master, one worker) on 127.0.0.1, started from the pyspark wheel for tests.

The daemons are the same ``spark-class`` entry points an operator runs (see infra/), so a test that submits to
it exercises the real path: ``spark-submit`` -> master -> worker -> executor JVMs -> Python workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.ui import free_port

log = logging.getLogger(__name__)

START_TIMEOUT_S = 90.0


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark wheel (holds bin/spark-class, bin/spark-submit, jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def java_home() -> str | None:
    """JAVA_HOME if set, else the JDK behind ``java`` on PATH; None when there is no Java at all."""
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return str(Path(java).resolve().parent.parent)


def spark_env(tmp_dir: Path) -> dict[str, str]:
    """Environment for Spark daemons and spark-submit: loopback only, scratch space under ``tmp_dir``."""
    # nothing of an enclosing Spark session (gateway, submit args, Python choice) leaks into these processes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_", "_PYSPARK_", "AWS_"))}
    env["SPARK_HOME"] = str(spark_home())
    env["SPARK_LOCAL_IP"] = "127.0.0.1"  # never bind or advertise another interface
    env["SPARK_LOCAL_DIRS"] = str(tmp_dir / "local")
    env["SPARK_LOG_DIR"] = str(tmp_dir / "logs")
    env["SPARK_PID_DIR"] = str(tmp_dir / "pids")
    home = java_home()
    if home is not None:
        env["JAVA_HOME"] = home
    for key in ("SPARK_LOCAL_DIRS", "SPARK_LOG_DIR", "SPARK_PID_DIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class StandaloneCluster:
    """A running master + worker; ``master_url`` is what spark-submit's ``--master`` takes."""

    master_url: str
    ui_url: str
    work_dir: Path
    log_dir: Path
    env: dict[str, str]
    master: subprocess.Popen
    worker: subprocess.Popen

    def state(self) -> dict:
        """The master's JSON view: workers, active and completed applications."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=10) as response:
            return json.loads(response.read())

    @property
    def worker_log(self) -> Path:
        return self.log_dir / "worker.log"

    @property
    def master_log(self) -> Path:
        return self.log_dir / "master.log"

    def executor_dirs(self) -> list[Path]:
        """Executor working directories (``<work_dir>/app-*/<executor id>``), one per executor ever launched."""
        return sorted(p for p in self.work_dir.glob("app-*/*") if p.is_dir())


def _start(cmd: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
    """Start a daemon in its own process group (so its executors and Python workers can be stopped together)."""
    with open(log_file, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, name: str) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left after a grace period, and reap it."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop on %s", name, proc.pid, sig.name)
    # the group may outlive its leader (executor JVMs, Python daemons): make sure nothing of it is left
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _alive_workers(ui_url: str, master_url: str) -> list[dict]:
    """ALIVE workers of the master at ``master_url``, as its web UI lists them (none while it is starting)."""
    try:
        with urllib.request.urlopen(f"{ui_url}/json/", timeout=5) as response:
            state = json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return []
    if state.get("url") != master_url:  # another master on that port: not ours
        return []
    return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]


@contextlib.contextmanager
def standalone_cluster(
    tmp_dir: Path, cores: int = 2, memory: str = "2g", attempts: int = 3
) -> Iterator[StandaloneCluster]:
    """Start a standalone master and one worker on 127.0.0.1; wait until the worker is ALIVE; stop both on exit.

    Ports are picked free; if one was taken meanwhile, a daemon exits and the start is retried with new ports.
    Raises RuntimeError (with the daemons' log tails) if the cluster does not come up.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env = spark_env(tmp_dir)
    daemon_env = dict(env)
    # a taken port must fail the start (then retried with new ones), not silently move to the next port
    for key in ("SPARK_MASTER_OPTS", "SPARK_WORKER_OPTS"):
        daemon_env[key] = f"{env.get(key, '')} -Dspark.port.maxRetries=0".strip()
    log_dir = Path(env["SPARK_LOG_DIR"])
    work_dir = tmp_dir / "work"
    work_dir.mkdir(exist_ok=True)
    for attempt in range(1, attempts + 1):
        daemons: list[tuple[subprocess.Popen, str]] = []
        try:
            master_url, ui_url = _launch(daemon_env, log_dir, work_dir, cores, memory, daemons)
        except _DaemonExited as e:
            _stop_all(daemons)
            if attempt == attempts:
                raise RuntimeError(str(e)) from None
            log.warning("Spark daemon exited while starting (attempt %d, a port was probably taken): retrying", attempt)
            continue
        except BaseException:
            _stop_all(daemons)
            raise
        try:
            (master, _), (worker, _) = daemons
            log.info("standalone cluster up: %s (UI %s)", master_url, ui_url)
            yield StandaloneCluster(master_url, ui_url, work_dir, log_dir, env, master, worker)
        finally:
            _stop_all(daemons)
        return


class _DaemonExited(RuntimeError):
    """A master or worker exited while starting."""


def _launch(
    env: dict[str, str],
    log_dir: Path,
    work_dir: Path,
    cores: int,
    memory: str,
    daemons: list[tuple[subprocess.Popen, str]],
) -> tuple[str, str]:
    """Start master then worker (appended to ``daemons`` as they start); return (master URL, UI URL) once ALIVE."""
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    ui_url = f"http://127.0.0.1:{ui_port}"
    master_cmd = [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                  "--webui-port", str(ui_port)]  # fmt: skip
    worker_cmd = [spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
                  "--cores", str(cores), "--memory", memory, "--work-dir", str(work_dir),
                  "--webui-port", str(worker_ui_port)]  # fmt: skip
    daemons.append((_start(master_cmd, env, log_dir / "master.log"), "master"))
    daemons.append((_start(worker_cmd, env, log_dir / "worker.log"), "worker"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _alive_workers(ui_url, master_url):
        for proc, name in daemons:
            if proc.poll() is not None:
                raise _DaemonExited(f"Spark {name} exited with {proc.returncode}:\n{_tail(log_dir / f'{name}.log')}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no ALIVE worker at {ui_url} after {START_TIMEOUT_S:.0f} s:\n"
                f"{_tail(log_dir / 'master.log')}\n{_tail(log_dir / 'worker.log')}"
            )
        time.sleep(0.5)
    return master_url, ui_url


def _stop_all(daemons: list[tuple[subprocess.Popen, str]]) -> None:
    """Stop the worker first (it takes its executors down), then the master."""
    for proc, name in reversed(daemons):
        _stop(proc, name)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
