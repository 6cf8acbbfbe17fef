"""Quality filters: docs/s of our stages vs datatrove's filters on the same real documents, in one run.

Run: ``.venv/bin/python -m bench.bench_filters``; writes ``bench/results/filters.md``.

Documents: every page of the AEB, trafilatura-eval and Readability sets through our extraction stage, plus
the Common Crawl text samples (the tests' parity set). Each side runs its filter over the documents, repeated
until a pass takes at least ``--min-seconds``; sides alternate in rounds and the median round is reported.

Our stages run on Arrow batches of ``--batch-size`` documents (as in the pipeline). They keep per-process
caches (tokens of each whitespace chunk, flags of each word); "cold" empties them before every pass over the
documents, so each unique chunk is tokenized once per pass, as in a process that has never seen these texts;
"warm" keeps them, as a long-running worker does on web text, where most chunks repeat. datatrove's filters
run one ``Document`` at a time; its word-split cache holds 5 texts, so within one filter it never hits. The
``chain`` row runs the four filters one after the other per document, as FineWeb's pipeline does (datatrove's
cache then serves the second Gopher filter; C4's text feeds FineWeb's filter).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.registry import quality_stages
from filters.text import clear_caches
from pipeline.core.schema import RAW_SCHEMA, conform
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.stages.extraction import ExtractStage

log = logging.getLogger("bench.filters")

STAGE_NAMES = ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality")


def load_texts(root: Path) -> list[str]:
    """Extracted text of the benchmark pages plus the CC text samples."""
    raw: list[tuple[str, str]] = []
    for folder, pattern in (
        ("extraction_aeb/html", "*.html.gz"),
        ("extraction_trafilatura_eval/html", "*.gz"),
        ("extraction_readability", "*/source.html.gz"),
    ):
        for path in sorted((root / folder).glob(pattern)):
            raw.append((str(path), gzip.decompress(path.read_bytes()).decode("utf-8", "replace")))
    table = conform(
        pa.table({"id": [r[0] for r in raw], "url": [r[0] for r in raw], "html": [r[1] for r in raw]}), RAW_SCHEMA
    )
    out = ExtractStage()(table)
    texts = [t for t, r in zip(out["text"].to_pylist(), out["drop_reason"].to_pylist(), strict=True) if r is None]
    for path in sorted((root / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            texts.extend(json.loads(line)["text"] for line in lines)
    return texts


def datatrove_filters() -> dict[str, Any]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb_quality": FineWebQualityFilter(),
    }


@dataclass
class Timing:
    docs: int
    wall: float
    cpu: float


def timed(run: Callable[[], int]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    docs = run()
    return Timing(docs, time.perf_counter() - wall, time.process_time() - cpu)


def repeats_for(run_once: Callable[[], int], min_seconds: float) -> int:
    """How many passes make one timed round last at least ``min_seconds`` (one untimed pass measures it)."""
    start = time.perf_counter()
    run_once()
    return max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)) + 1)


def ours(stages: list[Stage], batches: list[pa.Table], cold: bool) -> Callable[[], int]:
    def run() -> int:
        if cold:
            clear_caches()
        for batch in batches:
            run_chain(stages, batch, PartStats("bench"))
        return sum(b.num_rows for b in batches)

    return run


@dataclass
class MeasuredAgain:
    """A filter run as chains ran it before a measured filter decided and measured at once: decided by the stage
    (lazily, up to the first failing rule), then measured again in full for the report's signals."""

    stage: Stage

    @property
    def name(self) -> str:
        return self.stage.name

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.stage(table)

    def signals(self, texts: list[str]) -> Any:
        return self.stage.signals(texts)  # type: ignore[attr-defined]

    def thresholds(self) -> Any:
        return self.stage.thresholds()  # type: ignore[attr-defined]


def theirs(filters: list[Any], texts: list[str]) -> Callable[[], int]:
    from datatrove.data import Document

    def run() -> int:
        for i, text in enumerate(texts):
            doc = Document(text=text, id=str(i))
            for flt in filters:
                if flt.filter(doc) is not True:
                    break
        return len(texts)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0, help="Minimum length of one side's round.")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N documents.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    texts = load_texts(realdata_dir())[: args.limit]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    log.info("%d documents, %.1f MB of text", len(texts), mb)
    batches = [
        pa.table(
            {
                "id": [str(i) for i in range(s, min(s + args.batch_size, len(texts)))],
                "url": [""] * len(texts[s : s + args.batch_size]),
                "text": pa.array(texts[s : s + args.batch_size], pa.large_string()),
            }
        )
        for s in range(0, len(texts), args.batch_size)
    ]
    our_stages = {s.name: s for s in quality_stages()}
    their_filters = datatrove_filters()
    rows_spec: list[tuple[str, list[Stage], list[Any]]] = [
        (name, [our_stages[name]], [their_filters[name]]) for name in STAGE_NAMES
    ]
    rows_spec.append(("chain (all four)", list(our_stages.values()), list(their_filters.values())))

    results: dict[tuple[str, str], list[Timing]] = {}
    for label, stages, filters in rows_spec:
        sides = {
            "ours cold": ours(stages, batches, cold=True),
            "ours warm": ours(stages, batches, cold=False),
            "datatrove": theirs(filters, texts),
            "ours cold, measured twice": ours([MeasuredAgain(s) for s in stages], batches, cold=True),
        }
        passes = {side: repeats_for(run, args.min_seconds) for side, run in sides.items()}
        for _ in range(args.rounds):
            for side, run in sides.items():
                if side == "ours warm":
                    run()  # untimed: refill the caches the cold side just emptied
                n = passes[side]
                results.setdefault((label, side), []).append(timed(lambda run=run, n=n: sum(run() for _ in range(n))))
        log.info(
            "%s: %s",
            label,
            {s: round(statistics.median(t.docs / t.wall for t in results[(label, s)]), 1) for s in sides},
        )

    table_rows = []
    for label, _, _ in rows_spec:
        med = {
            s: statistics.median(t.docs / t.wall for t in results[(label, s)])
            for s in ("ours cold", "ours warm", "datatrove", "ours cold, measured twice")
        }
        cpu = {
            s: statistics.median(t.docs / t.cpu for t in results[(label, s)])
            for s in ("ours cold", "ours warm", "datatrove")
        }
        table_rows.append(
            [
                label,
                med["datatrove"],
                med["ours cold"],
                med["ours warm"],
                med["ours cold"] / med["datatrove"],
                med["ours warm"] / med["datatrove"],
                cpu["ours cold"] / cpu["datatrove"],
                med["ours cold"] / med["ours cold, measured twice"],
            ]
        )
    headers = [
        "filter",
        "datatrove docs/s",
        "ours cold docs/s",
        "ours warm docs/s",
        "speedup cold",
        "speedup warm",
        "speedup cold (CPU time)",
        "measured once vs twice (cold)",
    ]
    block = "\n".join(
        [
            "## Quality filters: ours vs datatrove (single process)",
            "",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine_info()}",
            f"- load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in _loadavg())}",
            f"- packages: datatrove {_version('datatrove')}, spacy {_version('spacy')}, pyarrow {pa.__version__}, "
            f"Python {platform.python_version()}",
            "- command: `" + " ".join(["python -m bench.bench_filters", *sys.argv[1:]]) + "`",
            "",
            f"{len(texts)} documents ({mb:.1f} MB of extracted text: AEB, trafilatura-eval and Readability pages "
            "through ExtractStage, plus the CC text samples), every filter on every document; FineWeb's settings. "
            f"Median of {args.rounds} alternating rounds, each side repeated to at least {args.min_seconds:g} s per "
            "round; docs/s over wall time. Cold: our per-process chunk cache emptied before every pass; warm: kept. "
            "Measured once vs twice: our chain as it runs (a measured filter decides from one full measurement that "
            "also gives the report's signals) against deciding lazily then measuring again for the signals.",
            "",
            markdown_table(headers, table_rows),
        ]
    )
    print(block)
    write_result("filters.md", block + "\n")


def _loadavg() -> tuple[float, float, float]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
