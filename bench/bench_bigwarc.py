"""A real-size WARC file: WARC pass speed, memory per worker, time lost to a kill, and one file split over workers.

Run: ``.venv/bin/python -m bench.bench_bigwarc [--pages 36000] [--checkpoint-every 1000] [--workers 2]``; writes
``bench/results/bigwarc.md``.

The file is built from the real pages in ``shared/realdata`` (``tests.bigwarc``: Common Crawl's layout, one gzip
member per record, every page made unique), ``--pages`` HTML responses; 38,000 pages make a file of about 1.03 GB,
the size of a Common Crawl WARC file. It is built once into ``--workdir`` (not checked in) and served over HTTP on
127.0.0.1 (``pipeline.demo.mirror``), so the run streams it by byte ranges as it would Common Crawl. Each run is
``refinery run`` with the WARC pass only (no dedup, tokens or report), in its own process:

1. unsplit, one worker: docs/s (HTML pages into the chain per second), peak RSS;
2. ``--split-warcs W`` with ``W`` workers: the speed-up over 1 (goal >= 1.8x with 2), peak RSS per worker;
3. run 1 killed (SIGKILL to the whole process group) half a checkpoint interval after half of the pages are
   committed (in mid-chunk), then rerun: the time lost is the work since the last checkpoint before the kill
   plus the rerun's start-up (both from the markers' times, so a change of load between runs does not enter),
   against one checkpoint interval (the median seconds of a chunk in run 1); (killed run + rerun) -
   uninterrupted run is printed too. The rerun's stats must read every record once in total.

Peak RSS is sampled from /proc every 0.2 s for every process of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import REPO, machine_info, markdown_table, write_result

DUMP = "CC-MAIN-2024-22"


def build_crawl(workdir: Path, pages: int) -> tuple[Path, Path]:
    """The mirror root and the WARC file (built once per page count)."""
    import gzip

    sys.path.insert(0, str(REPO))
    from tests.bigwarc import build_warc

    root = workdir / f"mirror-{pages}"
    rel = f"crawl-data/{DUMP}/segments/1717000000000.0/warc/CC-MAIN-bench-{pages:06d}.warc.gz"
    warc = root / rel
    if not warc.exists():
        started = time.perf_counter()
        tmp = warc.with_name(warc.name + ".tmp")
        build_warc(tmp, pages, seed=7)
        tmp.rename(warc)
        print(f"built {warc} ({warc.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress(f"{rel}\n".encode()))
    return root, warc


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Run:
    wall_s: float
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    killed: bool = False
    started_at: float = 0.0
    """Epoch seconds at start and (if killed) at the kill, to compare with the markers' modification times."""
    killed_at: float = 0.0

    @property
    def max_rss_mb(self) -> float:
        return max(self.peak_rss_mb.values(), default=0.0)


def run(cmd: list[str], kill_when: object = None) -> Run:
    """``cmd`` in its own process group; peak RSS per process; killed (SIGKILL, whole group) once ``kill_when()``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = Run(0.0, started_at=time.time())
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)  # fmt: skip
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            result.peak_rss_mb[pid] = max(result.peak_rss_mb.get(pid, 0.0), _rss_mb(pid))
        if callable(kill_when) and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            result.killed_at = time.time()
            proc.wait()
            result.killed = True
            break
        time.sleep(0.2)
    stderr = proc.stderr.read() if proc.stderr else ""
    result.wall_s = time.perf_counter() - started
    if not result.killed and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return result


def timeline_loss(run_dir: Path, killed: Run, rerun: Run) -> tuple[float, float]:
    """Seconds of work the kill threw away (since the last chunk committed before it) and the rerun's start-up
    (from its start to its first commit, minus that chunk's own processing seconds), from the markers' times."""
    markers = sorted((p.stat().st_mtime, p.name.removesuffix(".done")) for p in (run_dir / "markers").glob("*.done"))
    before = [t for t, _ in markers if t <= killed.killed_at]
    after = [(t, name) for t, name in markers if t >= rerun.started_at]
    uncommitted = killed.killed_at - (before[-1] if before else killed.started_at)
    if not after:
        return uncommitted, float("nan")
    first_t, first = after[0]
    seconds = json.loads((run_dir / "stats" / f"{first}.json").read_text())["seconds"]
    return uncommitted, first_t - rerun.started_at - seconds


def stats_of(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "stats").glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=38_000, help="HTML pages in the WARC file (38,000 ~ 1.03 GB)")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="workers (and ranges) for the split run")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cc-refinery-bigwarc"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pipeline.demo.mirror import serve_directory

    args.workdir.mkdir(parents=True, exist_ok=True)
    root, warc = build_crawl(args.workdir, args.pages)
    size = warc.stat().st_size
    out = args.workdir / "runs"
    config = args.workdir / "warc-only.yaml"
    config.write_text("dedup:\n  exact: false\n  minhash:\n    enabled: false\ntokenize: false\nreport: false\n")
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()[0]

    with serve_directory(root) as url:

        def command(name: str, *extra: str) -> list[str]:
            return [sys.executable, "-m", "pipeline.app.cli", "run", "--config", str(config), "--cc-base-url", url,
                    "--dump", DUMP, "--output", str(out), "--name", name, "--no-progress",
                    "--checkpoint-every", str(args.checkpoint_every), *extra]  # fmt: skip

        def fresh(name: str) -> Path:
            import shutil

            shutil.rmtree(out / name, ignore_errors=True)
            return out / name

        whole_dir = fresh("whole")
        whole = run(command("whole", "--workers", "1"))
        whole_stats = stats_of(whole_dir)
        pages = sum(s["source"].get("documents", 0) for s in whole_stats)
        chunk_s = statistics.median(s["seconds"] for s in whole_stats if "." in s["part"])

        split_dir = fresh("split")
        split = run(command("split", "--workers", str(args.workers), "--split-warcs", str(args.workers)))
        split_pages = sum(s["source"].get("documents", 0) for s in stats_of(split_dir))

        killed_dir = fresh("killed")
        half = (args.pages // args.checkpoint_every) // 2

        half_reached: list[float] = []

        def half_done() -> bool:
            """Half of the chunks committed, then half a checkpoint interval more: a kill in mid-chunk."""
            if not half_reached and len(list((killed_dir / "markers").glob("part-*.*.done"))) >= half:
                half_reached.append(time.perf_counter())
            return bool(half_reached) and time.perf_counter() - half_reached[0] >= chunk_s / 2

        killed = run(command("killed", "--workers", "1"), kill_when=half_done)
        rerun = run(command("killed", "--workers", "1"))
        killed_stats = stats_of(killed_dir)
        records = sum(s["source"].get("records", 0) for s in killed_stats)
        records_whole = sum(s["source"].get("records", 0) for s in whole_stats)

    lost_s = killed.wall_s + rerun.wall_s - whole.wall_s
    uncommitted_s, restart_s = timeline_loss(killed_dir, killed, rerun)
    chunks = args.pages // args.checkpoint_every
    speedup = whole.wall_s / split.wall_s
    rows = [
        ["unsplit, 1 worker", whole.wall_s, pages / whole.wall_s, whole.max_rss_mb],
        [f"--split-warcs {args.workers}, {args.workers} workers", split.wall_s, split_pages / split.wall_s,
         split.max_rss_mb],
        [f"killed at {half} of {chunks} checkpoints", killed.wall_s, "", killed.max_rss_mb],
        ["rerun after the kill", rerun.wall_s, "", rerun.max_rss_mb],
    ]  # fmt: skip
    command_line = " ".join(["python -m bench.bench_bigwarc", *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join([
        f"## A real-size WARC file ({started_at}, load before {load_before:.1f})",
        "",
        f"`{command_line}` ({machine_info()}) — one WARC file of {args.pages:,} real HTML pages "
        f"({size / 1e9:.2f} GB gzipped, {records_whole:,} records, one gzip member each), streamed over HTTP from "
        f"127.0.0.1, WARC pass only, checkpoints every {args.checkpoint_every:,} pages.",
        "",
        markdown_table(["run", "wall s", "docs/s", "peak RSS of one process MB"], rows),
        "",
        f"- **docs/s (one core): {pages / whole.wall_s:.1f}**; a checkpoint interval is {chunk_s:.1f} s "
        f"(median chunk of the unsplit run).",
        f"- **Split over {args.workers} workers: {speedup:.2f}x** the unsplit run (goal >= 1.8x with 2); the same "
        f"{split_pages:,} pages read ({pages:,} unsplit).",
        f"- **Peak RSS per process: {max(whole.max_rss_mb, split.max_rss_mb):.0f} MB** (goal <= 1 GB).",
        f"- **Time lost to the kill, from the runs' own timelines: {uncommitted_s + restart_s:.1f} s** = "
        f"{uncommitted_s:.1f} s of work after the last checkpoint before the kill + {restart_s:.1f} s for the "
        f"rerun to start reading (its first commit - its start - that chunk's own seconds); goal <= one "
        f"checkpoint interval, {chunk_s:.1f} s. By wall clock (killed run + rerun - uninterrupted run, exposed "
        f"to any change of load between the runs): {lost_s:.1f} s. Records read over both attempts: "
        f"{records:,} of {records_whole:,} (every record once).",
        "",
    ])  # fmt: skip
    path = write_result("bigwarc.md", text)
    print(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
