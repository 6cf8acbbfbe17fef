"""Hostile but realistic use: full disks, workers killed by the OS, empty results, bad WARC files among good
ones, two runs on one output, a killed main process, late configuration errors."""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipeline.app.cli import EXIT_COMPLETED_WITH_FAILURES, app
from pipeline.app.config import SAMPLE_DUMP, ConfigError, load_config
from pipeline.app.run import run_pipeline
from pipeline.core.lock import LOCK_FILE, OutputLocked, output_lock
from pipeline.core.parts import PartWriter, read_documents
from pipeline.core.processes import describe_exit
from pipeline.core.stats import PartStats
from pipeline.engines.base import RunIncomplete, WorkUnit
from pipeline.engines.local import run_local
from tests.conftest import REPO
from tests.processes import descendants, is_alive, kill_all, wait_until_gone

runner = CliRunner()
REFINERY = [sys.executable, "-m", "pipeline.app.cli"]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- a full disk, workers killed by the OS


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MB tmpfs: writes beyond it fail with ENOSPC, stores into a memory map with SIGBUS."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def write_documents(out: Path, parts: int, docs_per_part: int) -> Path:
    """A pass folder of ``parts`` parts of distinct documents (about 1 KB of text each)."""
    words = np.random.default_rng(0).integers(0, 5000, size=(parts, docs_per_part, 150))
    for p in range(parts):
        ids = [f"doc-{p}-{i:06d}" for i in range(docs_per_part)]
        texts = [" ".join(f"w{w}" for w in words[p, i]) for i in range(docs_per_part)]
        table = pa.table(
            {"id": ids, "url": [f"https://example.com/{i}" for i in ids], "dump": [SAMPLE_DUMP] * docs_per_part,
             "text": texts}
        )  # fmt: skip
        with PartWriter(out, f"part-{p:05d}") as writer:
            writer.write(table)
            writer.commit(PartStats(part=f"part-{p:05d}"))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_during_dedup_is_a_clear_error_not_a_hang(tmp_path: Path, small_disk: Path, workers: int) -> None:
    documents = write_documents(tmp_path / "in", parts=2, docs_per_part=2500)  # 2 x 1.1 MB of signatures
    start = time.monotonic()
    done = subprocess.run(
        [*REFINERY, "dedup", str(documents), str(small_disk / "out"), "--workers", str(workers), "--no-progress"],
        capture_output=True, text=True, env=cli_env(), timeout=240,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - start < 120
    assert "disk full" in done.stderr and str(small_disk / "out") in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Bus error" not in done.stderr


@dataclass
class DieOn:
    """A unit processor that writes its part, except for ``victim``, where the process dies by ``how``."""

    victim: str
    how: str
    scratch: Path | None = None

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        if unit.part == self.victim:
            faulthandler.disable()  # the test session's handler would print a traceback for SIGSEGV/SIGBUS
            if self.how == "memmap":  # what a full disk does to a store into a memory-mapped file
                assert self.scratch is not None
                array = np.lib.format.open_memmap(self.scratch / "big.npy", mode="w+", dtype=np.uint8, shape=(8 << 20,))
                array[:] = 1
            os.kill(os.getpid(), getattr(signal, self.how))
        with PartWriter(out_dir, unit.part) as writer:
            writer.write(pa.table({"id": [unit.part], "text": ["x"]}))
            writer.commit(PartStats(part=unit.part))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSEGV", "memmap"])
def test_a_worker_killed_by_the_os_fails_its_part_and_the_pass_goes_on(
    tmp_path: Path, request: pytest.FixtureRequest, how: str
) -> None:
    small_disk = request.getfixturevalue("small_disk") if how == "memmap" else None
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(f"in-{i}",)) for i in range(5)]
    out = tmp_path / "out"
    with pytest.raises(RunIncomplete) as raised:
        run_local(units, DieOn("part-00002", how, small_disk), out, workers=2, progress=False)
    signal_name = "SIGBUS" if how == "memmap" else how
    assert raised.value.result.failed == {
        "part-00002": f"worker process {describe_exit(-getattr(signal, signal_name))}"
    }
    assert sorted(raised.value.result.done) == ["part-00000", "part-00001", "part-00003", "part-00004"]
    failure = json.loads((out / "failures" / "part-00002.json").read_text())
    assert signal_name in failure["error"] and failure["inputs"] == ["in-2"]
    # a rerun retries only the failed part
    result = run_local(units, DieOn("none", how), out, workers=2, progress=False)
    assert result.done == ["part-00002"] and len(result.skipped) == 4
    assert not (out / "failures" / "part-00002.json").exists()


@pytest.mark.timeout(240)
def test_a_dead_worker_with_several_units_fails_the_rest_of_its_task(tmp_path: Path) -> None:
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(f"in-{i}",)) for i in range(6)]
    with pytest.raises(RunIncomplete) as raised:
        run_local(units, DieOn("part-00001", "SIGKILL"), tmp_path / "out", workers=2, tasks=2, progress=False)
    failed = raised.value.result.failed  # task 1 runs parts 1, 3, 5: it dies on 1, so 3 and 5 never run
    assert set(failed) == {"part-00001", "part-00003", "part-00005"}
    assert failed["part-00001"].startswith("worker process killed by SIGKILL")
    assert (
        failed["part-00003"].startswith("not run: worker process killed by SIGKILL")
        and "part-00001" in failed["part-00003"]
    )


# ---------------------------------------------------------------- a run that keeps nothing


def test_a_run_that_keeps_no_document_finishes_with_a_warning(tmp_path: Path, mirror_url: str) -> None:
    overrides = {
        "source.cc_base_url": mirror_url,
        "output_dir": str(tmp_path),
        "name": "none",
        "langid.languages": ["vo"],
    }
    config = load_config(overrides=overrides)
    for attempt in range(2):  # and its rerun
        summary = run_pipeline(config, progress=False)
        assert summary.stats.docs_out == 0, attempt
        assert summary.warnings and "no document was kept" in summary.warnings[0]
        assert "prescreen:langid" in summary.warnings[0]  # no page is in Volapuk: the pre-screen skips most
    assert read_documents(tmp_path / "none" / "dedup").num_rows == 0
    manifest = json.loads((tmp_path / "none" / "tokens" / "manifest.json").read_text())
    assert manifest["shards"] == [] and manifest["totals"]["num_tokens"] == 0
    report = json.loads((tmp_path / "none" / "report" / "report.json").read_text())
    assert report["funnel"]["docs_out"] == 0
    assert any("no document was kept" in w and "prescreen:langid" in w for w in report["warnings"])
    assert "no document was kept" in (tmp_path / "none" / "report" / "index.html").read_text()

    result = runner.invoke(app, ["run", "--cc-base-url", mirror_url, "-o", str(tmp_path), "--name", "none",
                                 "--languages", "vo", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: no document was kept" in result.output


def test_dedup_of_an_empty_pass(tmp_path: Path) -> None:
    with PartWriter(tmp_path / "in", "part-00000") as writer:
        writer.commit(PartStats(part="part-00000"))
    result = runner.invoke(app, ["dedup", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_documents(tmp_path / "out").num_rows == 0
    assert json.loads((tmp_path / "out" / "dedup_clusters.json").read_text())["documents"] == 0


def test_dedup_flags_change_only_what_they_name_in_the_configs_dedup_section(tmp_path: Path) -> None:
    """``--threshold`` sets bands x rows and the verification; the config's shingle size, seed and scope stay, and
    a recipe's missing classifier model is no error here. Without ``--config``: FineWeb's (dump, 5-grams, 14 x 8)."""
    with PartWriter(tmp_path / "in", "part-00000") as writer:
        writer.commit(PartStats(part="part-00000"))
    config = "recipe: fineweb-edu-like\ndedup: {scope: run, minhash: {ngram_size: 3, seed: 7}}\n"
    (tmp_path / "run.yaml").write_text(config)  # the recipe's classifier model is not needed to dedup

    def dedup(out: str, *flags: str) -> dict:
        result = runner.invoke(app, ["dedup", str(tmp_path / "in"), str(tmp_path / out), "--no-progress", *flags])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / out / "dedup_clusters.json").read_text())
        return {"scope": report["scope"], **{k: report["minhash"][k] for k in ("ngram_size", "seed", "bands", "rows")}}

    assert dedup("a", "--config", str(tmp_path / "run.yaml"), "--threshold", "0.7") == {
        "scope": "run", "ngram_size": 3, "seed": 7, "bands": 12, "rows": 9,
    }  # fmt: skip
    assert dedup("b") == {"scope": "dump", "ngram_size": 5, "seed": 1, "bands": 14, "rows": 8}


# ---------------------------------------------------------------- one bad WARC file among good ones


@pytest.fixture
def crawl_with_a_missing_file(tmp_path: Path, sample_crawl) -> tuple[Path, Path]:  # noqa: ANN001
    """A copy of the sample mirror (a local folder) whose second listed WARC file is gone: a 404."""
    root = tmp_path / "mirror"
    shutil.copytree(sample_crawl.root, root)
    missing = root / sample_crawl.warc_paths[1]
    hidden = tmp_path / "hidden.warc.gz"
    missing.rename(hidden)
    return root, hidden


def test_max_failed_parts_lets_the_later_passes_run(tmp_path: Path, crawl_with_a_missing_file, sample_crawl) -> None:  # noqa: ANN001
    root, hidden = crawl_with_a_missing_file
    bad = sample_crawl.warc_paths[1]
    args = ["run", "--cc-base-url", str(root), "-o", str(tmp_path / "out"), "--name", "r", "--no-progress"]

    refused = runner.invoke(
        app, args
    )  # the default: a failed file stops the run after the WARC pass, naming the option
    assert refused.exit_code == 1
    assert bad in refused.output and "--max-failed-parts" in refused.output
    assert not (tmp_path / "out" / "r" / "dedup").exists()

    partial = runner.invoke(app, [*args, "--max-failed-parts", "1"])
    assert partial.exit_code == EXIT_COMPLETED_WITH_FAILURES, partial.output
    assert "completed with failures" in partial.output and bad in partial.output
    report = json.loads((tmp_path / "out" / "r" / "report" / "report.json").read_text())
    assert [f["inputs"] for f in report["run"]["failures"]] == [[bad]]
    kept = read_documents(tmp_path / "out" / "r" / "dedup").num_rows
    assert kept > 0 and (tmp_path / "out" / "r" / "tokens" / "manifest.json").exists()

    hidden.rename(root / bad)  # the file is back: a rerun fetches it and redoes dedup over every part
    whole = runner.invoke(app, [*args, "--max-failed-parts", "1"])
    assert whole.exit_code == 0, whole.output
    assert read_documents(tmp_path / "out" / "r" / "dedup").num_rows > kept
    report = json.loads((tmp_path / "out" / "r" / "report" / "report.json").read_text())
    assert report["run"]["failures"] == []


# ---------------------------------------------------------------- one run per output


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.core.lock import output_lock
with output_lock(Path(sys.argv[1]), "run"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    run_dir = tmp_path / "out" / "r"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env=cli_env())  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc, run_dir
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(
    tmp_path: Path, lock_holder, mirror_url: str
) -> None:  # noqa: ANN001
    proc, run_dir = lock_holder
    start = time.monotonic()
    done = subprocess.run(
        [*REFINERY, "run", "--cc-base-url", mirror_url, "-o", str(run_dir.parent), "--name", "r", "--no-progress"],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert time.monotonic() - start < 60
    assert "in use by another run" in done.stderr and f"pid {proc.pid}" in done.stderr, done.stderr
    assert not (run_dir / "markers").exists(), "the refused run must not touch the output"

    proc.kill()  # the holder dies without releasing: its lock is taken over, with a warning
    proc.wait()
    with output_lock(run_dir):  # read from another process: closing a descriptor here would drop our lock
        holder = subprocess.run([sys.executable, "-c", f"print(open({str(run_dir / LOCK_FILE)!r}).read())"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert json.loads(holder)["pid"] == os.getpid()
    assert not (run_dir / LOCK_FILE).exists(), "a clean release leaves no lock file behind"


def test_lock_is_exclusive_within_a_process_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0, "command": "old"}))
    with output_lock(tmp_path, "run"):
        inner = output_lock(tmp_path, "dedup")
        with pytest.raises(OutputLocked, match="already in use by this process"):
            inner.__enter__()
    assert "no longer alive" in caplog.text and "old" in caplog.text


# ---------------------------------------------------------------- no orphans


@pytest.mark.timeout(300)
def test_killing_the_main_process_takes_its_workers_with_it(tmp_path: Path, mirror_url: str) -> None:
    proc = subprocess.Popen(
        [*REFINERY, "run", "--cc-base-url", mirror_url, "-o", str(tmp_path), "--name", "k", "--workers", "2",
         "--no-progress"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while len(workers := descendants(proc.pid)) < 2:  # the two worker processes of the WARC pass
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started its workers"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as an OOM killer or a scheduler would
        proc.wait()
        left = wait_until_gone(workers, 30)
        assert not left, f"workers outlived their parent: {left}"
    finally:
        kill_all([p for p in descendants(proc.pid) if is_alive(p)])
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- early, clear errors


@pytest.mark.parametrize("languages", ["xx", "en,english"])
def test_unknown_language_codes_are_refused_at_load(languages: str) -> None:
    result = runner.invoke(app, ["run", "--sample", "--languages", languages, "--no-progress"])
    assert result.exit_code == 2
    bad = [code for code in languages.split(",") if code != "en"]
    assert all(repr(code) in result.output for code in bad) and "predicts af, als, am" in result.output


def test_misspelt_filter_name_fails_refinery_config(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("quality:\n  filters: [gopher_repetiton, c4]\n")
    result = runner.invoke(app, ["config", "--config", str(path)])
    assert result.exit_code == 2
    assert "'gopher_repetiton'" in result.output and "registered: gopher_repetition, gopher_quality" in result.output
    with pytest.raises(ConfigError):
        load_config(path)


def test_verbose_shows_the_traceback_of_a_failed_run(tmp_path: Path) -> None:
    args = ["run", "--cc-base-url", str(tmp_path / "no-mirror"), "-o", str(tmp_path / "out"), "--no-progress"]
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 1
    assert "Traceback" not in quiet.output and "-v shows the traceback" in quiet.output
    verbose = runner.invoke(app, [*args, "-v"])
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.output
