"""PII anonymisation: docs/s of our ``pii`` stage vs datatrove's ``PIIFormatter`` on the same real documents.

Run: ``.venv/bin/python -m bench.bench_pii``; writes ``bench/results/pii.md``.

Documents (``../shared/realdata``): "text" is the AEB article bodies, the Common Crawl text samples and WET, the
language-ID sentence files (one document per language) and trafilatura's text of the genuine Common Crawl
records; ``--extracted`` adds every benchmark page through our extraction stage (the quality-filter bench's set,
about half a minute to extract). "raw HTML" is every HTML record of the WARC samples, undecoded markup: full of
``@`` and dotted numbers, a worst case for the stage's pre-filters. Our stage runs on Arrow batches of
``--batch-size`` documents inside ``run_chain`` (as in the pipeline, counting included); datatrove's formatter
runs one text at a time, one formatter for the whole stream, as in a datatrove task. Sides alternate in rounds;
the median round is reported, with the outputs checked identical (single replacements, so datatrove's turn over
its replacement lists across documents cannot differ from ours).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.config import PiiConfig
from filters.pii import PiiStage
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats

log = logging.getLogger("bench.pii")

EMAIL, IP = "email@example.com", "22.214.171.124"


def real_texts(root: Path) -> list[str]:
    """Article bodies, CC text samples and WET, one document per language of sentences, extracted CC pages."""
    from pipeline.sources.warc import read_warc
    from pipeline.stages.extraction import ExtractStage

    texts = [v["articleBody"] for v in json.loads((root / "extraction_aeb" / "ground-truth.json").read_text()).values()]
    for path in sorted((root / "cc_text_samples").glob("*.jsonl.gz")):
        texts += [json.loads(line)["text"] for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]
    texts.append(
        gzip.decompress((root / "warc_samples" / "cc-main-2024-22_whirlwind.warc.wet.gz").read_bytes()).decode()
    )
    texts += [p.read_text(encoding="utf-8") for p in sorted((root / "langid_lingua" / "sentences").glob("*.txt"))]
    for name in (
        "cc-main-2020-34_excerpt.warc.gz",
        "cc-main-2024-22_whirlwind.warc.gz",
        "cc-2019_single-record.warc.gz",
    ):
        for batch in read_warc(root / "warc_samples" / name, dump="bench", warc_path=name, counters=Counter()):
            texts += [t for t in ExtractStage()(batch).column("text").to_pylist() if t]
    return texts


def warc_html(root: Path) -> list[str]:
    from pipeline.sources.warc import read_warc

    html: list[str] = []
    for path in sorted((root / "warc_samples").glob("*.warc.gz")):
        for batch in read_warc(path, dump="bench", warc_path=path.name, counters=Counter()):
            html += [h for h in batch.column("html").to_pylist() if h]
    return html


def ours(texts: list[str], batch_size: int) -> tuple[Callable[[], list[str]], Counter[str]]:
    stage = PiiStage(PiiConfig(email_replacements=(EMAIL,), ip_replacements=(IP,)))
    batches = [pa.table({"text": pa.array(texts[i : i + batch_size], pa.large_string())})
               for i in range(0, len(texts), batch_size)]  # fmt: skip
    counts: Counter[str] = Counter()

    def run() -> list[str]:
        stats = PartStats("bench")
        out = [t for b in batches for t in run_chain([stage], b, stats)[0].column("text").to_pylist()]
        counts.clear()
        counts.update(stats.stage("pii").counts)
        return out

    return run, counts


def theirs(texts: list[str]) -> Callable[[], list[str]]:
    from datatrove.pipeline.formatters import PIIFormatter

    def run() -> list[str]:
        formatter = PIIFormatter(email_replacement=EMAIL, ip_replacement=IP)
        return [formatter.format(t) for t in texts]

    return run


def measure(name: str, texts: list[str], rounds: int, batch_size: int) -> list[object]:
    """One result row: docs, MB, docs/s of each side (median round), speed-up, replacements, identical output."""
    run_ours, counts = ours(texts, batch_size)
    run_theirs = theirs(texts)
    identical = run_ours() == run_theirs()  # also a warm-up of both sides
    times: dict[str, list[float]] = {"ours": [], "datatrove": []}
    for _ in range(rounds):
        for side, run in (("datatrove", run_theirs), ("ours", run_ours)):
            start = time.perf_counter()
            run()
            times[side].append(time.perf_counter() - start)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["datatrove"])
    mb = sum(len(t.encode("utf-8", "replace")) for t in texts) / 1e6
    log.info("%s: ours %.3f s, datatrove %.3f s, identical %s", name, ours_s, theirs_s, identical)
    speed = [round(len(texts) / theirs_s, 1), round(len(texts) / ours_s, 1), f"{theirs_s / ours_s:.1f}x"]
    same = "yes" if identical else "NO"
    return [name, len(texts), f"{mb:.1f}", *speed, counts["pii:email"], counts["pii:ip"], same]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--extracted", action="store_true", help="Add the extracted benchmark pages (slow to load).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = realdata_dir()
    sets = {"text": real_texts(root)}
    if args.extracted:
        from bench.bench_filters import load_texts

        sets["text + extracted pages"] = sets["text"] + load_texts(root)
    sets["raw HTML"] = warc_html(root)
    rows = [measure(name, texts, args.rounds, args.batch_size) for name, texts in sets.items()]
    table = markdown_table(
        ["documents", "docs", "MB", "datatrove docs/s", "ours docs/s", "speed-up", "emails", "IPs", "identical"], rows
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# PII stage vs datatrove PIIFormatter ({when})\n\n{machine_info()}\n\n{table}\n"
    path = write_result("pii.md", text)
    print(text)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
