"""URL filter: URLs/s of our ``UrlFilterStage`` vs datatrove's ``URLFilter`` on the same real URLs, in one run.

Run: ``.venv/bin/python -m bench.bench_url_filter [--rounds 5] [--copies 4]``; writes ``bench/results/url_filter.md``.

URLs: every ``WARC-Target-URI`` of the WARC samples, repeated ``--copies`` times (a crawl revisits hosts, so both
sides' per-domain caches see repeats). Our stage runs on Arrow batches of ``--batch-size`` URLs (the engine's
default batch size) after one untimed warm-up batch; datatrove's filter runs one ``Document`` at a time, as in its
pipeline, with its block lists loaded beforehand. The sides alternate in ``--rounds`` rounds and the median round
is reported, with the ratio of the two.

This was a test (``test_url_filter.py::test_throughput`` asserted ours > 0.8x datatrove); a speed claim depends on
the machine and its load, so it is measured here and recorded in BENCHMARKS.md instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.config import UrlFilterConfig
from filters.url import UrlFilterStage, tld_extractor


def warc_urls(root: Path) -> list[str]:
    """Distinct target URIs of the WARC samples, in file order."""
    from warcio.archiveiterator import ArchiveIterator

    urls: dict[str, None] = {}
    for path in sorted((root / "warc_samples").glob("*.warc*.gz")):
        with open(path, "rb") as f:
            try:
                for record in ArchiveIterator(f):
                    if uri := record.rec_headers.get_header("WARC-Target-URI"):
                        urls[uri] = None
            except Exception:  # noqa: BLE001 - a clipped sample ends early; its URLs so far count
                pass
    return list(urls)


def ours(urls: list[str], batch_size: int) -> Callable[[], int]:
    stage = UrlFilterStage(UrlFilterConfig())
    table = pa.table({"id": [f"r{i}" for i in range(len(urls))], "url": pa.array(urls, pa.string())})
    stage(table.slice(0, 10))  # loads the block lists

    def run() -> int:
        for offset in range(0, len(urls), batch_size):
            stage(table.slice(offset, batch_size))
        return len(urls)

    return run


def theirs(urls: list[str]) -> Callable[[], int]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter

    url_filter = URLFilter()
    url_filter.tldextractor = tld_extractor()  # its default would fetch the public suffix list
    url_filter.download_data()
    docs = [Document(text="", id=str(i), metadata={"url": u}) for i, u in enumerate(urls)]

    def run() -> int:
        for doc in docs:
            url_filter.filter(doc)
        return len(docs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4, help="How many times the URL list is repeated.")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    urls = warc_urls(realdata_dir()) * args.copies
    sides = {"ours": ours(urls, args.batch_size), "datatrove": theirs(urls)}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, run in sides.items():
            start = time.perf_counter()
            n = run()
            rates[side].append(n / (time.perf_counter() - start))
    med = {side: statistics.median(r) for side, r in rates.items()}
    rows = [[side, med[side], min(rates[side]), max(rates[side])] for side in sides]
    block = "\n".join(
        [
            "## URL filter: ours vs datatrove (single process)",
            "",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine_info()}",
            f"- load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- packages: datatrove {version('datatrove')}, tldextract {version('tldextract')}, "
            f"pyarrow {pa.__version__}",
            "- command: `" + " ".join(["python -m bench.bench_url_filter", *sys.argv[1:]]) + "`",
            "",
            f"{len(urls):,} URLs (the WARC samples' target URIs x {args.copies}), median of {args.rounds} alternating "
            f"rounds; ours on batches of {args.batch_size}.",
            "",
            markdown_table(["filter", "URLs/s (median)", "slowest round", "fastest round"], rows),
            "",
            f"ours / datatrove: **{med['ours'] / med['datatrove']:.2f}x**",
        ]
    )
    print(block)
    write_result("url_filter.md", block + "\n")


if __name__ == "__main__":
    main()
