"""Spark engine benchmarks: WARC-pass scaling local[1] vs local[2], Spark vs local engine, dedup at 500k+ docs.

1. WARC pass (``warc`` part): the real WARC files of ``warc_samples/`` (the complete ``*.warc.gz`` ones) times
   ``--copies``, one work unit per file copy, run by the same ``WarcPass`` processor ``pipeline.app.warc.WarcPass``
   uses, on four engines: Spark ``local[1]``, Spark ``local[2]``, the local engine with 1 and with 2 workers.
   Each (engine, round) runs in a fresh subprocess: the engine starts (Spark session, code shipped), a warm-up
   pass of one small unit per slot loads the models in every worker, then the timed pass. Rounds alternate the
   engines' order, so load changes on the shared machine hit all of them alike. Units are ordered largest file
   first (one file is more than half of the work), so the last unit running alone does not decide the 2-slot time.
   Every unit starts with trafilatura's and the filters' caches cleared: copies of one file must cost what
   distinct WARC files would (trafilatura's paragraph LRU would otherwise remember the previous copy).
2. Dedup (``dedup`` part): ``run_dedup``'s three steps (sign / cluster / apply) on ``--dedup-docs`` documents
   generated from real text by ``bench.bench_dedup`` (planted near-duplicate clusters), on a Spark engine on
   ``local[2]`` (clustering with Spark SQL, ``cluster_spark``) and on the local engine with 2 workers
   (clustering with numpy), each in a fresh subprocess; then both outputs are compared document by document.

    python -m bench.bench_spark                       # both parts, 500,000 dedup documents
    python -m bench.bench_spark --parts warc --rounds 3
    python -m bench.bench_spark --parts dedup --dedup-docs 500000 --dedup-engines "spark:local[2]"
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import REPO, cpu_model, markdown_table, realdata_dir, write_result

log = logging.getLogger("bench.spark")

WARC_ENGINES = ("spark:local[1]", "spark:local[2]", "local:1", "local:2")
"""Engine specs of the WARC part: ``spark:<master>`` or ``local:<workers>``."""
WARMUP_FILE = "wget-sample-0000.warc.gz"
"""A small real WARC file that goes through every stage (22 HTML pages, all extracted)."""
DEFAULT_DEDUP_DATA = Path("/tmp/cc-refinery-bench/spark-dedup")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --------------------------------------------------------------------------------------------- machine and processes


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stderr or done.stdout).strip().splitlines()
    return first[0] if first else "unknown"


def machine() -> dict[str, Any]:
    """Facts about the machine and the packages, for the header of the results."""
    return {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "ram_gib": round(ram_gib(), 1),
        "python": platform.python_version(),
        "java": java_version(),
        "pyspark": version("pyspark"),
        "pyarrow": version("pyarrow"),
        "datatrove": version("datatrove"),
        "trafilatura": version("trafilatura"),
    }


@dataclass(frozen=True)
class Proc:
    key: tuple[int, int]
    """(pid, start time): a pid can be reused, this cannot."""
    ppid: int
    name: str
    own_ticks: int
    """user + system CPU of the process itself (its threads included, its children not)."""
    rss_kb: int

    @property
    def pid(self) -> int:
        return self.key[0]


def _read_proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid 4, utime 14, stime 15, starttime 22, rss 24
    return Proc((pid, int(fields[19])), int(fields[1]), name, int(fields[11]) + int(fields[12]),
                int(fields[21]) * _PAGE_KB)  # fmt: skip


def process_tree(root: int | None = None) -> list[Proc]:
    """``root`` (default: this process) and all its descendants, from /proc."""
    root = os.getpid() if root is None else root
    procs = [p for p in (_read_proc(int(d)) for d in os.listdir("/proc") if d.isdigit()) if p is not None]
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    tree = [p for p in procs if p.pid == root]
    for p in tree:
        tree.extend(children.get(p.pid, []))
    return tree


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat), to tell our load from others'."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


class TreeSampler:
    """Samples this process tree twice a second: CPU per process (so processes that end, or are re-parented
    out of the tree, still count up to their last sample) and peak RSS, in total and per kind of process."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.ticks: dict[tuple[int, int], int] = {}
        self.peak_total_kb = 0
        self.peak_python_worker_kb = 0
        self.peak_java_kb = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> dict[tuple[int, int], int]:
        """Take a sample now; returns a copy of every process's CPU ticks so far."""
        me = os.getpid()
        tree = process_tree(me)
        with self._lock:
            for p in tree:
                self.ticks[p.key] = max(self.ticks.get(p.key, 0), p.own_ticks)
            self.peak_total_kb = max(self.peak_total_kb, sum(p.rss_kb for p in tree))
            for p in tree:
                if p.pid == me:
                    continue
                if p.name == "java":
                    self.peak_java_kb = max(self.peak_java_kb, p.rss_kb)
                elif p.name.startswith("python"):
                    self.peak_python_worker_kb = max(self.peak_python_worker_kb, p.rss_kb)
            return dict(self.ticks)

    def window(self) -> CpuWindow:
        return CpuWindow(self)


class CpuWindow:
    """CPU used by the sampled process tree and by everything else on the machine between enter and exit."""

    def __init__(self, sampler: TreeSampler) -> None:
        self.sampler = sampler
        self.wall_s = self.ours_s = self.others_s = 0.0
        self._start: dict[tuple[int, int], int] = {}
        self._t0 = self._busy0 = 0.0

    def __enter__(self) -> CpuWindow:
        self._start, self._busy0, self._t0 = self.sampler.sample(), machine_busy_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end, busy, self.wall_s = self.sampler.sample(), machine_busy_seconds(), time.perf_counter() - self._t0
        self.ours_s = sum(t - self._start.get(k, 0) for k, t in end.items()) / _CLK_TCK
        self.others_s = max(0.0, busy - self._busy0 - self.ours_s)

    @property
    def others_cores(self) -> float:
        """Cores other processes kept busy on average (0 on a quiet machine)."""
        return self.others_s / self.wall_s if self.wall_s else 0.0


def wait_until_quiet(sampler: TreeSampler, max_cores: float, max_wait_s: float, window_s: float = 10.0) -> float:
    """Wait until other processes use less than ``max_cores`` over ``window_s``, at most ``max_wait_s``.

    The machine is shared; a timed pass that starts while another job runs measures that job. Returns the
    seconds waited (the pass runs anyway after ``max_wait_s``; its report shows the others' CPU).
    """
    start = time.perf_counter()
    while True:
        with sampler.window() as window:
            time.sleep(window_s)
        waited = time.perf_counter() - start
        if window.others_cores < max_cores or waited >= max_wait_s:
            if window.others_cores >= max_cores:
                log.warning("machine still busy after %.0f s (others %.2f cores); measuring anyway", waited,
                            window.others_cores)  # fmt: skip
            return waited


def peak_rss_kb(pid: int | str = "self") -> int:
    """A process's peak RSS (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def java_child() -> int | None:
    """The Spark driver JVM this process started (pyspark's gateway), if any."""
    for p in process_tree():
        if p.name == "java" and p.ppid == os.getpid():
            return p.pid
    return None


# --------------------------------------------------------------------------------------------- engines


def make_bench_engine(spec: str, spark_conf: dict[str, str] | None = None) -> Any:
    """``spark:<master>`` -> a SparkEngine on a new session; ``local:<workers>`` -> a LocalEngine."""
    kind, _, arg = spec.partition(":")
    if kind == "spark":
        from pipeline.engines.spark import SparkEngine, spark_session

        conf = {"spark.sql.shuffle.partitions": "8", **(spark_conf or {})}
        return SparkEngine(spark_session(arg, app_name="cc-refinery-bench", conf=conf), progress=False)
    if kind == "local":
        from pipeline.engines.local import LocalEngine

        return LocalEngine(workers=int(arg), progress=False)
    raise SystemExit(f"engine spec must be spark:<master> or local:<workers>, got {spec!r}")


def stop_engine(engine: Any) -> None:
    spark = getattr(engine, "spark", None)
    if spark is not None:
        spark.stop()


# --------------------------------------------------------------------------------------------- 1. the WARC pass


def warc_dir() -> Path:
    root = realdata_dir()
    return root / "warc_samples" if (root / "warc_samples").is_dir() else root


def warc_inputs() -> list[Path]:
    """The complete ``*.warc.gz`` files (WAT/WET and clipped gzip streams left out: the download check refuses
    a clipped file, and WAT/WET hold no HTML), largest first."""
    from pipeline.sources.download import TruncatedGzipError, verify_gzip

    files = []
    for path in sorted(warc_dir().glob("*.warc.gz")):
        try:
            verify_gzip(path)
        except TruncatedGzipError:
            log.info("left out (not a complete gzip stream): %s", path.name)
            continue
        files.append(path)
    if not files:
        raise SystemExit(f"no complete .warc.gz files in {warc_dir()}; set CC_REFINERY_REALDATA")
    return sorted(files, key=lambda f: (-f.stat().st_size, f.name))


def warc_units(files: list[Path], copies: int) -> list[Any]:
    """``copies`` units per file, largest files first (a greedy longest-first order for the task slots)."""
    from pipeline.core.parts import part_name
    from pipeline.engines.base import WorkUnit

    ordered = [f for f in files for _ in range(copies)]
    return [WorkUnit(part=part_name(i), inputs=(f.name,)) for i, f in enumerate(ordered)]


def fresh_caches() -> None:
    """Empty trafilatura's caches (its paragraph LRU above all) and the filters' word-chunk cache."""
    from trafilatura.meta import reset_caches

    from filters.text import clear_caches

    htmldate_log = logging.getLogger("htmldate")
    level = htmldate_log.level
    htmldate_log.setLevel(logging.CRITICAL)  # htmldate logs an error for each cache it cannot clear
    try:
        reset_caches()
    finally:
        htmldate_log.setLevel(level)
    clear_caches()
    gc.collect()


@dataclass
class FreshWarcPass:
    """``pipeline.app.warc.WarcPass`` with cold caches per unit, so copies of a file cost what distinct files would."""

    config: Any

    def __call__(self, unit: Any, out_dir: Path) -> None:
        from pipeline.app.warc import WarcPass

        fresh_caches()
        WarcPass(self.config)(unit, out_dir)


def _ship_by_value() -> None:
    """Executors do not have ``bench`` on their path: send this module's functions and classes by value."""
    from pyspark import cloudpickle

    module = sys.modules[FreshWarcPass.__module__]
    if module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(module)


def run_warc(engine_spec: str, copies: int, out: Path, quiet_cores: float, max_wait_s: float) -> dict[str, Any]:
    """One engine in this (fresh) process: start it, warm it up, run the timed WARC pass; what it measured."""
    from pipeline.app.config import RunConfig
    from pipeline.core.parts import total_stats

    if engine_spec.startswith("spark"):
        _ship_by_value()
    files = warc_inputs()
    units = warc_units(files, copies)

    def config_for(name: str) -> RunConfig:
        config = RunConfig(output_dir=out, name=name)
        config.source.cc_base_url = str(warc_dir())
        return config

    start = time.perf_counter()
    engine = make_bench_engine(engine_spec)
    startup_s = time.perf_counter() - start
    # the driver builds the chain once (block lists, model): forked local workers inherit it, as in a real run
    from filters.url import compile_rules
    from pipeline.app.warc import warc_stages
    from pipeline.stages.langid import load_lid_model

    warm = config_for("warmup")
    warc_stages(warm)
    compile_rules(warm.url_filter)
    load_lid_model(warm.langid.model_path)
    from pipeline.engines.base import WorkUnit

    slots = engine.parallelism
    warm_units = [WorkUnit(part=f"part-{i:05d}", inputs=(WARMUP_FILE,)) for i in range(slots)]
    start = time.perf_counter()
    engine.run_units(warm_units, FreshWarcPass(warm), warm.run_dir, description="warm-up")
    warmup_s = time.perf_counter() - start

    config = config_for("timed")
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with TreeSampler() as sampler:
        waited = wait_until_quiet(sampler, quiet_cores, max_wait_s) if max_wait_s > 0 else 0.0
        load_before = load_average()
        with sampler.window() as window:
            engine.run_units(units, FreshWarcPass(config), config.run_dir, description="WARC files")
        load_after = load_average()
    stop_engine(engine)
    stats = total_stats(config.run_dir)
    first = stats.stages[0] if stats.stages else None
    part_seconds = [s.seconds for s in (_part_stats(config.run_dir, u.part) for u in units)]
    return {
        "engine": engine_spec,
        "slots": slots,
        "units": len(units),
        "startup_s": startup_s,
        "warmup_s": warmup_s,
        "wall_s": window.wall_s,
        "cpu_s": window.ours_s,
        "others_cores": window.others_cores,
        "waited_s": waited,
        "records_in": first.docs_in if first else 0,
        "docs_out": stats.docs_out,
        "unit_seconds_sum": sum(part_seconds),
        "unit_seconds_max": max(part_seconds),
        "stage_seconds": {s.name: s.seconds for s in stats.stages},
        "output_digest": output_digest(config.run_dir, units),
        "load": f"{load_before} / {load_after}",
    }


def _part_stats(run_dir: Path, part: str) -> Any:
    from pipeline.core.parts import STATS
    from pipeline.core.stats import PartStats

    return PartStats.load(run_dir / STATS / f"{part}.json")


def output_digest(run_dir: Path, units: list[Any]) -> str:
    """sha256 over each input file's kept (id, text) rows; copies of a file must agree, else it says so."""
    import pyarrow.parquet as pq

    from pipeline.core.parts import DOCUMENTS

    by_file: dict[str, set[str]] = {}
    for unit in units:
        table = pq.read_table(run_dir / DOCUMENTS / f"{unit.part}.parquet", columns=["id", "text"])
        rows = sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
        by_file.setdefault(unit.inputs[0], set()).add(hashlib.sha256(json.dumps(rows).encode()).hexdigest())
    if any(len(d) > 1 for d in by_file.values()):
        differing = sorted(name for name, d in by_file.items() if len(d) > 1)
        return "copies differ: " + ", ".join(differing)
    digest = hashlib.sha256()
    for name in sorted(by_file):
        digest.update(f"{name}:{next(iter(by_file[name]))}\n".encode())
    return digest.hexdigest()[:16]


def _subprocess_json(args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run this module with ``args`` in a fresh interpreter; its last stdout line is a JSON result."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "bench.bench_spark", *args]
    log.info("running %s", shlex.join(cmd[1:]))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[1:])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warc_part(
    copies: int, rounds: int, tmp: Path, engines: tuple[str, ...], quiet_cores: float, max_wait_s: float
) -> dict[str, Any]:
    """Every engine ``rounds`` times, alternating the order per round, each run in its own process."""
    files = warc_inputs()
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    load_before = load_average()
    for r in range(rounds):
        order = engines if r % 2 == 0 else tuple(reversed(engines))
        for spec in order:
            out = tmp / f"warc-{spec.replace(':', '-').replace('[', '').replace(']', '')}-r{r}"
            args = ["--run-warc", spec, "--copies", str(copies), "--out", str(out)]
            args += ["--quiet-cores", str(quiet_cores), "--max-wait", str(max_wait_s)]
            result = _subprocess_json(args, 3600 + max_wait_s)
            shutil.rmtree(out, ignore_errors=True)
            runs[spec].append(result)
            log.info(
                "round %d %s: %.2f s wall, %.1f s CPU (others %.2f cores), %d records -> %d docs, startup %.1f s, "
                "warm-up %.1f s, waited %.0f s",
                *(r + 1, spec, result["wall_s"], result["cpu_s"], result["others_cores"], result["records_in"]),
                *(result["docs_out"], result["startup_s"], result["warmup_s"], result["waited_s"]),
            )
    return {
        "files": [f.name for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "copies": copies,
        "rounds": rounds,
        "runs": runs,
        "load": f"{load_before} / {load_average()}",
    }


# --------------------------------------------------------------------------------------------- 2. dedup


def run_dedup_pass(engine_spec: str, input_dir: Path, output_dir: Path, spark_conf: dict[str, str]) -> dict[str, Any]:
    """The three steps of ``run_dedup`` on one engine, timed apart, with the peak memory of the processes."""
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.dedup_pass import apply_parts, check_fingerprint, fingerprint, input_units, sign_parts
    from pipeline.dedup.signatures import WORK

    config = DedupConfig()
    units = input_units(input_dir)
    seconds: dict[str, float] = {}
    with TreeSampler() as sampler:
        start = time.perf_counter()
        engine = make_bench_engine(engine_spec, spark_conf)
        seconds["startup"] = time.perf_counter() - start
        check_fingerprint(output_dir / WORK, fingerprint(units, config))
        windows = {name: sampler.window() for name in ("sign", "cluster", "apply")}
        with windows["sign"]:
            sign_parts(units, output_dir, config, engine=engine)
        with windows["cluster"]:
            summary = engine.cluster_duplicates(output_dir, [u.part for u in units], config)
        with windows["apply"]:
            apply_parts(units, output_dir, config, engine=engine)
        jvm = java_child()
        jvm_peak = peak_rss_kb(jvm) if jvm else 0
        stop_engine(engine)
    return {
        "engine": engine_spec,
        "spark_conf": spark_conf if engine_spec.startswith("spark") else {},
        "seconds": {**seconds, **{name: w.wall_s for name, w in windows.items()}},
        "cpu_s": {name: w.ours_s for name, w in windows.items()},
        "others_cores": {name: w.others_cores for name, w in windows.items()},
        "summary": summary,
        "rss_driver_python_kb": peak_rss_kb(),
        "rss_driver_jvm_kb": jvm_peak,
        "rss_python_worker_sampled_kb": sampler.peak_python_worker_kb,
        "rss_tree_sampled_kb": sampler.peak_total_kb,
    }


def _kept_digests(output_dir: Path) -> tuple[int, dict[str, str]]:
    """Kept documents and, per part, sha256 of its (id, text) rows sorted by id (streamed part by part)."""
    import pyarrow.parquet as pq

    from pipeline.core.parts import document_files

    total = 0
    digests = {}
    for path in document_files(output_dir):
        table = pq.read_table(path, columns=["id", "text"])
        table = table.sort_by("id")
        digest = hashlib.sha256()
        for batch in table.to_batches(max_chunksize=20_000):
            for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                digest.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
        digests[path.stem] = digest.hexdigest()
        total += table.num_rows
    return total, digests


def dedup_part(
    docs: int, seed: int, data: Path, engines: tuple[str, ...], spark_conf: dict[str, str], keep: bool
) -> dict[str, Any]:
    """Generate (or reuse) the input, run each engine's pass in a fresh process, compare the kept documents."""
    from bench.bench_dedup import generate

    input_dir = data / f"input-{docs}"
    meta = generate(input_dir, docs, seed, workers=2)
    results: dict[str, Any] = {"meta": meta, "runs": {}, "load": {}}
    digests: dict[str, dict[str, str]] = {}
    for spec in engines:
        out = data / f"output-{docs}-{spec.split(':')[0]}"
        shutil.rmtree(out, ignore_errors=True)
        args = ["--run-dedup", spec, str(input_dir), str(out)]
        args += [f"--spark-conf={k}={v}" for k, v in spark_conf.items()]
        load_before = load_average()
        start = time.perf_counter()
        result = _subprocess_json(args, 4 * 3600)
        result["wall_s"] = time.perf_counter() - start
        result["load"] = f"{load_before} / {load_average()}"
        kept, digests[spec] = _kept_digests(out)
        result["kept"] = kept
        results["runs"][spec] = result
        log.info("dedup %s: %s, kept %d", spec, {k: round(v, 1) for k, v in result["seconds"].items()}, kept)
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
    if len(digests) > 1:
        first, *rest = digests.values()
        results["identical"] = all(d == first for d in rest)
        results["parts_differing"] = sorted({p for d in rest for p in set(d) | set(first) if d.get(p) != first.get(p)})
    return results


# --------------------------------------------------------------------------------------------- report


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _engine_label(spec: str) -> str:
    kind, _, arg = spec.partition(":")
    return f"Spark `{arg}`" if kind == "spark" else f"local engine, {arg} worker{'s' if arg != '1' else ''}"


def warc_report(w: dict[str, Any]) -> list[str]:
    runs: dict[str, list[dict[str, Any]]] = w["runs"]
    rows = []
    for spec, rs in runs.items():
        wall = _median(rs, "wall_s")
        rows.append(
            [
                _engine_label(spec),
                rs[0]["units"],
                rs[0]["records_in"],
                rs[0]["docs_out"],
                wall,
                min(r["wall_s"] for r in rs),
                rs[0]["records_in"] / wall,
                _median(rs, "cpu_s"),
                _median(rs, "cpu_s") / wall,
                _median(rs, "others_cores"),
                _median(rs, "startup_s"),
                _median(rs, "warmup_s"),
            ]
        )
    lines = [
        "### 1. WARC pass: Spark local[1] vs local[2], Spark vs the local engine",
        "",
        f"Input: {len(w['files'])} real WARC files ({w['bytes'] / 1e6:.1f} MB) x {w['copies']} copies = "
        f"{w['copies'] * len(w['files'])} work units, largest file first; the full WARC-pass chain (URL filter, "
        "trafilatura, lid.176, Gopher/C4/FineWeb filters, Parquet parts with stats), caches cleared per unit. "
        f"{w['rounds']} rounds, engine order alternating; each run in a fresh process, timed after the engine "
        "started and a warm-up pass loaded every worker. docs/s = HTML records into the chain per second of "
        "wall time; CPU s = user + sys of the whole process tree (driver, JVM, Python workers); cores busy = CPU "
        "s / wall; others' cores = CPU other processes on the machine used meanwhile, per second (0 = quiet); each "
        "timed pass first waited for the others to go below a threshold, up to a limit. "
        f"Load average (1, 5, 15 min) before / after the part: {w['load']}.",
        "",
        markdown_table(
            [
                "engine",
                "units",
                "records in",
                "docs out",
                "wall s (median)",
                "wall s (best)",
                "docs/s (median)",
                "CPU s (median)",
                "cores busy",
                "others' cores",
                "engine start s",
                "warm-up s",
            ],
            rows,
        ),  # fmt: skip
        "",
    ]
    ratios = []
    pairs = (
        ("spark:local[2]", "spark:local[1]", "Spark local[2] / local[1] (scaling, goal >= 1.7x)"),
        ("local:2", "local:1", "local engine 2 workers / 1 worker"),
        ("spark:local[1]", "local:1", "Spark local[1] / local engine 1 worker"),
        ("spark:local[2]", "local:2", "Spark local[2] / local engine 2 workers"),
    )
    for fast, slow, label in pairs:
        if fast in runs and slow in runs:
            median = _median(runs[slow], "wall_s") / _median(runs[fast], "wall_s")
            best = min(r["wall_s"] for r in runs[slow]) / min(r["wall_s"] for r in runs[fast])
            per_round = [s["wall_s"] / f["wall_s"] for s, f in zip(runs[slow], runs[fast], strict=True)]
            ratios.append([label, median, best, ", ".join(f"{x:.2f}" for x in per_round)])
    lines += [
        markdown_table(["throughput ratio", "median walls", "best walls", "per round"], ratios),
        "",
    ]
    digests = {r["output_digest"] for rs in runs.values() for r in rs}
    counts = {(r["records_in"], r["docs_out"]) for rs in runs.values() for r in rs}
    same = len(digests) == 1 and not next(iter(digests)).startswith("copies differ")
    lines += [
        f"Same output: {'yes' if same else 'NO'} - every run of every engine kept the same documents with the same "
        f"texts for every file copy (digest {', '.join(sorted(digests))}; records/docs {sorted(counts)}).",
        "",
    ]
    return lines


def dedup_report(d: dict[str, Any], docs: int) -> list[str]:
    meta = d["meta"]
    rows = []
    for spec, r in d["runs"].items():
        s = r["seconds"]
        passed = s["sign"] + s["cluster"] + s["apply"]
        summary = r["summary"]
        rows.append(
            [
                _engine_label(spec),
                s["startup"],
                s["sign"],
                s["cluster"],
                s["apply"],
                passed,
                docs / passed,
                sum(r["cpu_s"].values()),
                r["rss_driver_python_kb"] / 1024,
                (r["rss_driver_jvm_kb"] / 1024) if r["rss_driver_jvm_kb"] else "-",
                r["rss_python_worker_sampled_kb"] / 1024,
                r["rss_tree_sampled_kb"] / 1024,
                summary.get("exact_duplicates", "?"),
                summary.get("near_duplicates", "?"),
                r["kept"],
            ]
        )
    lines = [
        f"### 2. Dedup pass at {docs:,} documents: Spark vs the local engine",
        "",
        f"Input: {docs:,} documents generated from real text by `bench.bench_dedup` ({meta['text_bytes'] / 1e9:.2f} "
        f"GB of text, {meta['parts']} parts, {meta['planted_duplicates']:,} planted duplicates in "
        f"{meta['planted_clusters']:,} clusters). `run_dedup`'s steps timed apart, each engine in a fresh process: "
        "sign (per part), cluster (Spark: `cluster_spark`, Spark SQL; local: numpy in the driver), apply (per "
        "part). docs/s over sign + cluster + apply (engine start not included). Peak RSS: the driver's Python "
        "(VmHWM), the driver JVM (VmHWM; in local mode it also runs the executors), the largest Python worker and "
        "the whole process tree (both sampled every 0.5 s).",
        "",
        markdown_table(
            [
                "engine",
                "start s",
                "sign s",
                "cluster s",
                "apply s",
                "pass s",
                "docs/s",
                "CPU s",
                "peak RSS driver Python MB",
                "peak RSS JVM MB",
                "peak RSS worker MB",
                "peak RSS tree MB",
                "exact dups",
                "near dups",
                "kept",
            ],
            rows,
        ),  # fmt: skip
        "",
    ]
    for spec, r in d["runs"].items():
        conf = ", ".join(f"{k}={v}" for k, v in r.get("spark_conf", {}).items())
        extra = f"; conf {conf}" if conf else ""
        others = ", ".join(f"{k} {v:.2f}" for k, v in r["others_cores"].items())
        lines.append(
            f"- {_engine_label(spec)}: load average before / after {r['load']}; other processes' cores during "
            f"the steps: {others}{extra}"
        )
    if "identical" in d:
        verdict = "yes" if d["identical"] else f"NO (parts differing: {', '.join(d['parts_differing'][:10])})"
        lines.append(f"- Same kept documents (ids and texts, part by part) on both engines: {verdict}")
    lines.append("")
    return lines


def render(info: dict[str, Any], command: str, load: str, warc: dict | None, dedup: dict | None, docs: int) -> str:
    lines = [
        "## Spark engine: scaling, Spark vs local engine, dedup on Spark",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {info['cpu']}, nproc {info['nproc']}, {info['ram_gib']} GiB RAM, Python {info['python']}, "
        f"{info['java']}",
        f"- packages: pyspark {info['pyspark']}, pyarrow {info['pyarrow']}, datatrove {info['datatrove']}, "
        f"trafilatura {info['trafilatura']}",
        f"- command: `{command}`",
        f"- load average (1, 5, 15 min) at start / end: {load} / {load_average()} (the machine is shared)",
        "",
    ]
    if warc:
        lines += warc_report(warc)
    if dedup:
        lines += dedup_report(dedup, docs)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def _conf(items: list[str]) -> dict[str, str]:
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--spark-conf wants KEY=VALUE, got {item!r}")
        conf[key] = value
    return conf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_spark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", nargs="+", choices=("warc", "dedup"), default=["warc", "dedup"])
    parser.add_argument("--copies", type=int, default=4, help="Copies of the WARC file list (units = files x copies).")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of every WARC-part engine.")
    parser.add_argument(
        "--warc-engines", nargs="+", default=list(WARC_ENGINES), help="Engine specs: spark:<master> or local:<workers>."
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="Before each timed WARC pass, wait until other processes use fewer cores than this (over 10 s).",
    )
    parser.add_argument("--max-wait", type=float, default=300.0, help="Longest such wait in seconds (0: no wait).")
    parser.add_argument("--dedup-docs", type=int, default=500_000, help="Documents of the dedup input.")
    parser.add_argument("--dedup-engines", nargs="+", default=["spark:local[2]", "local:2"])
    parser.add_argument("--dedup-data", type=Path, default=DEFAULT_DEDUP_DATA, help="Generated input and outputs.")
    parser.add_argument("--keep-dedup-output", action="store_true", help="Keep the dedup outputs for inspection.")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE", help="For dedup sessions.")
    parser.add_argument("--output", default="spark.md", help="File name under bench/results/ (JSON next to it).")
    parser.add_argument("--run-warc", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dedup", nargs=3, metavar=("ENGINE", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from loguru import logger as datatrove_logger

    datatrove_logger.disable("datatrove")

    if args.run_warc:
        result = run_warc(args.run_warc, args.copies, args.out, args.quiet_cores, args.max_wait)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    if args.run_dedup:
        spec, input_dir, output_dir = args.run_dedup
        result = run_dedup_pass(spec, Path(input_dir), Path(output_dir), _conf(args.spark_conf))
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    command = shlex.join(["python", "-m", "bench.bench_spark", *(sys.argv[1:] if argv is None else argv)])
    load = load_average()
    info = machine()
    warc = dedup = None
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as name:
        if "warc" in args.parts:
            warc = warc_part(
                args.copies, args.rounds, Path(name), tuple(args.warc_engines), args.quiet_cores, args.max_wait
            )
        if "dedup" in args.parts:
            dedup = dedup_part(
                args.dedup_docs, args.seed, args.dedup_data, tuple(args.dedup_engines), _conf(args.spark_conf),
                args.keep_dedup_output,
            )  # fmt: skip
    text = render(info, command, load, warc, dedup, args.dedup_docs)
    result = {"command": command, "machine": info, "load_start": load, "load_end": load_average(), "warc": warc,
              "dedup": dedup}  # fmt: skip
    path = write_result(args.output, text + "\n")
    write_result(Path(args.output).with_suffix(".json").name, json.dumps(result, indent=1) + "\n")
    sys.stdout.write(text + "\n")
    log.info("wrote %s (and %s)", path, Path(args.output).with_suffix(".json").name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
