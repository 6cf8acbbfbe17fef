"""The launch files in infra/ work: the standalone scripts start and stop a real cluster, templates parse,
and the Slurm launcher builds datatrove's job array for a real run config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.ui import free_port
from pipeline.app.config import SAMPLE_DUMP
from pipeline.engines.spark_code import CODE_PACKAGES

INFRA = Path(__file__).resolve().parents[1] / "infra"
SCRIPTS = sorted([*INFRA.glob("**/*.sh"), *INFRA.glob("**/*.sbatch")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(INFRA)))
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kubernetes_manifests_parse() -> None:
    app = yaml.safe_load((INFRA / "k8s" / "sparkapplication.yaml").read_text())
    assert app["kind"] == "SparkApplication"
    assert app["spec"]["mainApplicationFile"].endswith("refinery_main.py")
    assert "run" in app["spec"]["arguments"] and "spark" in app["spec"]["arguments"]
    kinds = {d["kind"] for d in yaml.safe_load_all((INFRA / "k8s" / "namespace.yaml").read_text()) if d}
    assert {"Namespace", "ServiceAccount", "PersistentVolumeClaim"} <= kinds


def test_the_image_holds_every_package_executors_import() -> None:
    dockerfile = (INFRA / "k8s" / "Dockerfile").read_text()
    assert all(f"COPY {package} ./{package}" in dockerfile for package in CODE_PACKAGES), CODE_PACKAGES


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="Spark needs Java 17+")
def test_standalone_scripts_start_a_cluster_and_stop_it(tmp_path: Path) -> None:
    port, ui = free_port(), free_port()
    state = tmp_path / "state"
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    start = subprocess.run(
        [str(INFRA / "spark" / "start-standalone.sh"), "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui), "--workers", "1", "--worker-cores", "1", "--worker-memory", "1g",
         "--state-dir", str(state)],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        assert f"spark://127.0.0.1:{port}" in start.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=10) as response:
            master = json.load(response)
        assert master["status"] == "ALIVE" and master["aliveworkers"] == 1
    finally:
        stop = subprocess.run(
            [str(INFRA / "spark" / "stop-standalone.sh"), "--state-dir", str(state)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert stop.returncode == 0, stop.stderr[-3000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5)


def test_slurm_launcher_builds_a_job_array_for_the_run(mirror_url: str, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {"source": {"cc_base_url": mirror_url, "dump": SAMPLE_DUMP}, "output_dir": str(tmp_path / "out")}
        )
    )
    done = subprocess.run(
        [sys.executable, str(INFRA / "slurm" / "datatrove-local-engine.py"), "--config", str(config),
         "--partition", "cpu", "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--array=0-3" in done.stdout  # one task per WARC file of the sample crawl
    assert "#SBATCH --partition=cpu" in done.stdout
