"""The commands on a real S3 server (SeaweedFS): ``refinery dedup IN OUT`` with the credentials in ``~/.aws``
only (store to store, the same kept documents as a local dedup, bad locations or credentials refused in one line
with exit 2 and nothing written), ``refinery stage`` store to store, ``refinery config --config s3://...``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.parts import read_documents
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.dedup_pass import run_dedup
from tests.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedServer, client_env, store_env
from tests.test_dedup import planted_corpus, write_input

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _home_env(server: SeaweedServer, home: Path, secret: str, scratch: Path) -> dict[str, str]:
    """No AWS_* credential variables: the keys are in ``HOME/.aws/credentials``, the endpoint in AWS_ENDPOINT_URL."""
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        HOME=str(home), AWS_ENDPOINT_URL=server.endpoint, AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(REPO), REFINERY_SCRATCH=str(scratch),
    )  # fmt: skip
    return env


def _dedup(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.app.cli", "dedup", *args, "--workers", "2", "--no-progress"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_dedup_command_store_to_store_with_credentials_from_the_aws_folder(
    object_store: SeaweedServer, bucket: str, realdata: Path, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "in", planted_corpus(realdata, families=6), parts=2)
    object_store.filesystem().put(f"{source}/", f"{bucket.removeprefix('s3://')}/in", recursive=True)
    run_dedup(source, tmp_path / "local", DedupConfig())
    expected = sorted(read_documents(tmp_path / "local", columns=["id"]).column("id").to_pylist())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = _home_env(object_store, tmp_path / "home", SECRET_KEY, tmp_path / "scratch")

    done = _dedup(env, cwd, f"{bucket}/in", f"{bucket}/out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{bucket}/out/documents" in done.stdout and SECRET_KEY not in done.stdout + done.stderr
    with store_env(object_store):
        kept = read_documents(f"{bucket}/out", columns=["id"]).column("id").to_pylist()
    assert sorted(kept) == expected
    assert list(cwd.iterdir()) == [], "the command wrote into its working directory"

    # a missing bucket, and keys in ~/.aws the store refuses: one line naming the location, exit 2, nothing written
    missing = _dedup(env, cwd, f"{bucket}/in", "s3://no-such-bucket-cli-9d2e/out")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "error: s3://no-such-bucket-cli-9d2e/out: the bucket does not exist (create it, or fix the URL)"
    ]
    wrong = _home_env(object_store, tmp_path / "wrong-home", "not-the-SECRET-5b1", tmp_path / "scratch")
    refused = _dedup(wrong, cwd, f"{bucket}/in", f"{bucket}/refused")
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bucket}/in: access denied"), refused.stderr
    assert "not-the-SECRET" not in refused.stderr and "Traceback" not in refused.stderr
    assert not object_store.filesystem().exists(f"{bucket.removeprefix('s3://')}/refused")


def _funnel(stdout: str) -> list[str]:
    """The funnel ``refinery stage`` prints, without its last column (seconds)."""
    table = stdout.split("\ndocuments:")[0].splitlines()
    return [line.rsplit(None, 1)[0] if line[:1].isalnum() and line[-1:].isdigit() else line for line in table]


def test_stage_command_store_to_store_equals_the_same_command_on_disk(
    object_store: SeaweedServer, bucket: str, realdata: Path, tmp_path: Path
) -> None:
    docs = planted_corpus(realdata, families=4)
    dropped = ["Lorem ipsum dolor sit amet, said the page.", "var config = { debug: true };"]
    for i, doc in enumerate(docs[::5]):
        doc["text"] += "\n" + dropped[i % 2]  # documents C4 drops, beside ones it keeps whole or cleans
    source = write_input(tmp_path / "in", docs, parts=2)
    object_store.filesystem().put(f"{source}/", f"{bucket.removeprefix('s3://')}/in", recursive=True)
    cwd, scratch = tmp_path / "cwd", tmp_path / "scratch"
    cwd.mkdir()
    env = client_env(object_store, PYTHONPATH=str(REPO), REFINERY_SCRATCH=str(scratch))

    def stage(inputs: str, output: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pipeline.app.cli", "stage", "c4", "-i", inputs, "-o", output,
                   "--keep-rejected", "--workers", "1", "--no-progress"]  # fmt: skip
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    on_store = stage(f"{bucket}/in/documents/", f"{bucket}/c4")
    assert on_store.returncode == 0, on_store.stderr[-3000:]
    on_disk = stage(str(source / "documents"), str(tmp_path / "c4"))
    assert on_disk.returncode == 0, on_disk.stderr[-3000:]
    assert f"documents: {bucket}/c4/documents" in on_store.stdout
    assert _funnel(on_store.stdout) == _funnel(on_disk.stdout) and "c4:lorem_ipsum" in on_store.stdout
    fs = object_store.filesystem()
    for folder in ("documents", "rejected"):
        remote = pq.read_table(f"{bucket.removeprefix('s3://')}/c4/{folder}", filesystem=fs).sort_by("id")
        local = pq.read_table(tmp_path / "c4" / folder).sort_by("id")
        assert remote.num_rows > 0 and remote.equals(local), folder
    assert list(cwd.iterdir()) == [], "the command wrote into its working directory"
    assert [p.name for p in scratch.iterdir()] == ["refinery-logs"], "temporary files left in scratch"


def test_a_config_file_on_the_store_through_the_cli(bucket: str, s3_env: SeaweedServer) -> None:
    from typer.testing import CliRunner

    from pipeline.app.cli import app

    url = f"{bucket}/configs/run.yaml"
    s3_env.filesystem().pipe_file(url.removeprefix("s3://"), b"name: from-the-store\nengine: {workers: 3}\n")
    result = CliRunner().invoke(app, ["config", "--config", url])
    assert result.exit_code == 0, result.output
    assert "name: from-the-store" in result.output and "workers: 3" in result.output
    result = CliRunner().invoke(app, ["config", "--config", f"{bucket}/configs/missing.yaml"])
    assert result.exit_code == 2 and f"config file not found: {bucket}/configs/missing.yaml" in result.output


def test_the_test_store_stops_with_no_process_or_socket_left(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "store").start()
    assert server.process is not None
    pid, root = server.process.pid, str(tmp_path / "store")
    server.stop()
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if root in cmdline or proc.name == str(pid):
                left.append((proc.name, cmdline))
    assert left == [], "a weed process outlived stop()"
    ports = (server.master_port, server.volume_port, server.filer_port, server.s3_port)
    assert not [s for p in ports for s in Path("/tmp").glob(f"seaweedfs-*-{p}.sock")]
