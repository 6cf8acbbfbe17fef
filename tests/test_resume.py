"""kill -9 at any moment, rerun: every document is in the output exactly once, as in an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.app.config import SAMPLE_DUMP
from pipeline.core.parts import done_parts, read_documents

REPO = Path(__file__).resolve().parents[1]


def _command(mirror_url: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.app.cli", "run",
        "--cc-base-url", mirror_url, "--dump", SAMPLE_DUMP,
        "--output", str(out), "--name", "resumed", "--no-progress",
    ]  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready: callable, timeout: float = 240) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"run finished before it could be killed (exit {proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("run never reached the kill point")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: its process and any helper it started
    proc.wait()


def _rows(run_dir: Path) -> list[tuple[str, str]]:
    table = read_documents(run_dir, columns=["id", "text"])
    return sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))


def test_sigkill_mid_part_then_rerun_equals_uninterrupted_run(tmp_path: Path, mirror_url: str, sample_run) -> None:  # noqa: ANN001
    run_dir = tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        _command(mirror_url, tmp_path), cwd=REPO, env=env, stderr=subprocess.DEVNULL, start_new_session=True
    )

    def mid_second_part() -> bool:
        # one part committed and the next one half-written: the worst moment to die
        return len(done_parts(run_dir)) >= 1 and any((run_dir / "documents").glob(".part-*.tmp"))

    _kill_when(proc, mid_second_part)
    survivors = done_parts(run_dir)
    assert 1 <= len(survivors) < len(sample_run.result.done)
    assert list((run_dir / "documents").glob(".part-*.tmp")), "the kill should leave a half-written part"
    partial = _rows(run_dir)
    assert len(partial) == len({i for i, _ in partial})

    rerun = subprocess.run(_command(mirror_url, tmp_path), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list((run_dir / "documents").glob(".*")), "leftovers of the killed attempt remain"
    rows = _rows(run_dir)
    ids = [i for i, _ in rows]
    assert len(ids) == len(set(ids)), "a document is duplicated after resume"
    assert set(partial) <= set(rows), "a document that survived the kill was lost"
    assert rows == _rows(sample_run.run_dir), "resumed output differs from an uninterrupted run"
    assert "documents:" in rerun.stdout


def test_rerun_of_a_finished_run_does_nothing(tmp_path: Path, mirror_url: str, sample_run) -> None:  # noqa: ANN001
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = sample_run.run_dir.parent
    before = {p: p.stat().st_mtime_ns for p in (sample_run.run_dir / "documents").glob("*.parquet")}
    cmd = _command(mirror_url, out)
    cmd[cmd.index("resumed")] = sample_run.run_dir.name
    result = subprocess.run([*cmd, "--keep-rejected"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    after = {p: p.stat().st_mtime_ns for p in (sample_run.run_dir / "documents").glob("*.parquet")}
    assert before == after
