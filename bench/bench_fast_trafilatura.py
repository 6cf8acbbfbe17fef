"""trafilatura, same output, less work: ``fast_trafilatura.extract`` vs ``trafilatura.extract``.

Run: ``nice -n 19 .venv/bin/python -m bench.bench_fast_trafilatura [--repeat 5]``; writes
``bench/results/fast_trafilatura.md``.

Pages: every real HTML page of ``shared/realdata`` (the WARC samples' HTML responses and the three extraction
benchmarks, as ``tests/test_fast_trafilatura.py`` loads them). Options: the extraction stage's (FineWeb's
settings, a fresh deduplication cache per pass, shared by the pages of the pass). Both extractors run over all
pages once per round, their order alternating between rounds; pages/s is the median over rounds, and every
round checks the two outputs are identical page by page. Then one cProfile pass of each gives the time per
step (cumulative seconds of the functions named in the table, so steps nest: readability is inside the
comparison step).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import trafilatura

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from pipeline.stages import fast_trafilatura
from pipeline.stages.extraction import ExtractStage

log = logging.getLogger("bench.fast_trafilatura")

Extract = Callable[[str, object], str | None]


def _trafilatura(html: str, options: object) -> str | None:
    return trafilatura.extract(html, options=options)


EXTRACTORS: dict[str, Extract] = {
    "trafilatura.extract": _trafilatura,
    "fast_trafilatura.extract": fast_trafilatura.extract,
}

# (step, [(path suffix, function name) counted for trafilatura], [(...) counted for ours])
STEPS = [
    ("whole extraction", [("trafilatura/core.py", "extract")], [("fast_trafilatura.py", "extract")]),
    ("HTML parsing (load_html)", [("trafilatura/utils.py", "load_html")], [("fast_trafilatura.py", "_load_html")]),
    (
        "pruning rules (regex XPath / one pass in Python)",
        [("trafilatura/htmlprocessing.py", "prune_unwanted_nodes")],
        [
            ("fast_trafilatura.py", name)
            for name in ("prune_raw_tree", "prune_comments", "prune_overall", "_prune_sections", "_first_body")
        ],
    ),
    (
        "main extractor (extract_content)",
        [("main_extractor.py", "extract_content")],
        [("fast_trafilatura.py", "_extract_content")],
    ),
    (
        "fallback comparison (compare_extraction)",
        [("trafilatura/external.py", "compare_extraction")],
        [("fast_trafilatura.py", "_compare_extraction")],
    ),
    (
        "of which readability",
        [("trafilatura/external.py", "try_readability")],
        [("fast_trafilatura.py", "_try_readability")],
    ),
    (
        "of which justext",
        [("trafilatura/external.py", "justext_rescue")],
        [("trafilatura/external.py", "justext_rescue")],
    ),
    ("tree copies (copy.copy)", [("copy.py", "copy")], [("copy.py", "copy")]),
    (
        "lxml.html element class lookup (Python callback)",
        [("lxml/html/__init__.py", "lookup")],
        [("lxml/html/__init__.py", "lookup")],
    ),
    ("text output (xmltotxt)", [("trafilatura/xml.py", "xmltotxt")], [("trafilatura/xml.py", "xmltotxt")]),
]


def run_pass(extract: Extract, htmls: list[str]) -> tuple[float, float, list[str | None]]:
    """Wall and CPU seconds of one pass over ``htmls`` with the stage's options, and the outputs."""
    options = ExtractStage().options()
    start, cpu = time.perf_counter(), time.process_time()
    out = [extract(html, options) for html in htmls]
    return time.perf_counter() - start, time.process_time() - cpu, out


def profile(extract: Extract, htmls: list[str]) -> pstats.Stats:
    options = ExtractStage().options()
    profiler = cProfile.Profile()
    profiler.enable()
    for html in htmls:
        extract(html, options)
    profiler.disable()
    return pstats.Stats(profiler)


def cumulative(stats: pstats.Stats, functions: list[tuple[str, str]]) -> float:
    """Sum of the cumulative seconds of ``functions`` (path suffix, name)."""
    total = 0.0
    for (path, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if any(path.endswith(suffix) and name == fn for suffix, fn in functions):
            total += ct
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the two extractors alternate); median")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-step cProfile breakdown")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("trafilatura", "readability", "justext", "htmldate", "courlan"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from tests.test_fast_trafilatura import real_html_pages

    pages = real_html_pages(realdata_dir())
    htmls = [html for _, html in pages]
    log.warning("%d pages, %.1f MB of HTML", len(htmls), sum(map(len, htmls)) / 1e6)
    for extract in EXTRACTORS.values():
        run_pass(extract, htmls[:20])  # warm-up: imports, regex and XPath compilation

    wall: dict[str, list[float]] = {name: [] for name in EXTRACTORS}
    cpu: dict[str, list[float]] = {name: [] for name in EXTRACTORS}
    ratios: list[float] = []
    identical: list[int] = []
    for round_ in range(args.repeat):
        names = list(EXTRACTORS) if round_ % 2 == 0 else list(reversed(EXTRACTORS))
        outputs = {}
        for name in names:
            seconds, cpu_seconds, outputs[name] = run_pass(EXTRACTORS[name], htmls)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
        theirs, ours = (outputs[name] for name in EXTRACTORS)
        identical.append(sum(a == b for a, b in zip(theirs, ours, strict=True)))
        ratios.append(wall["trafilatura.extract"][-1] / wall["fast_trafilatura.extract"][-1])
        log.warning("round %d: %.2fx, %d/%d identical", round_ + 1, ratios[-1], identical[-1], len(htmls))

    rows = [
        [
            name,
            len(htmls) / statistics.median(wall[name]),
            len(htmls) / statistics.median(cpu[name]),
            1000 * statistics.median(wall[name]) / len(htmls),
        ]
        for name in EXTRACTORS
    ]
    speed_table = markdown_table(["extractor", "pages/s", "pages/CPU-s", "ms/page"], rows)
    command = " ".join(["python -m bench.bench_fast_trafilatura", *sys.argv[1:]]) + f"` at niceness `{os.nice(0)}"
    text = (
        "# trafilatura, same output, less work\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `{command}`.\n"
        f"Machine: {machine_info()}. trafilatura {trafilatura.__version__} (mirrored: "
        f"{fast_trafilatura.PINNED_VERSION}, enabled: {fast_trafilatura.ENABLED}).\n\n"
        f"{len(htmls)} real HTML pages ({sum(map(len, htmls)) / 1e6:.1f} M characters), "
        "the extraction stage's options, "
        f"median of {args.repeat} alternating rounds.\n\n{speed_table}\n\n"
        f"Speed-up (median of the per-round ratios): **{statistics.median(ratios):.2f}x**; per round: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}.\n"
        f"Identical output: {min(identical)}/{len(htmls)} pages in every round.\n"
    )
    if not args.no_profile:
        stats = {name: profile(extract, htmls) for name, extract in EXTRACTORS.items()}
        totals = {name: cumulative(stats[name], STEPS[0][1 + i]) for i, name in enumerate(EXTRACTORS)}
        step_rows = []
        for step, theirs_fns, ours_fns in STEPS:
            before = cumulative(stats["trafilatura.extract"], theirs_fns)
            after = cumulative(stats["fast_trafilatura.extract"], ours_fns)
            step_rows.append(
                [
                    step,
                    before,
                    f"{100 * before / totals['trafilatura.extract']:.0f}%",
                    after,
                    f"{100 * after / totals['trafilatura.extract']:.0f}%",
                ]
            )
        text += (
            "\nTime per step under cProfile (cumulative seconds over all pages; steps nest; % of trafilatura's "
            "whole time, so the columns compare directly):\n\n"
            + markdown_table(
                ["step", "trafilatura s", "% before", "fast_trafilatura s", "% (of before)"],
                step_rows,
            )
            + "\n"
        )
    print(text)
    write_result("fast_trafilatura.md", text)


if __name__ == "__main__":
    main()
