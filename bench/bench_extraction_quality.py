"""Extraction quality and speed: our ExtractStage (trafilatura and resiliparse backends) vs trafilatura defaults vs
datatrove's Trafilatura settings.

Run: ``.venv/bin/python -m bench.bench_extraction_quality``; writes ``bench/results/extraction_quality.md``.

Quality:
- ``extraction_aeb`` (Zyte article-extraction-benchmark ground truth): the benchmark's own score (its
  ``evaluate.py``: 4-token shingles of ``\\w+`` tokens, per-page normalized counts, precision and recall averaged
  over pages, F1 of the averages, 95% bootstrap interval), and a plain bag-of-words F1 over whitespace tokens;
- ``extraction_trafilatura_eval``: the share of "with" snippets found and "without" snippets absent (trafilatura's
  own evaluation; its authors tuned trafilatura on this set, so read it as a regression check).

Speed: pages/s of each extractor over all pages of both sets, in one process, after a warm-up, median of
alternating rounds (every extractor once per round); the ``datatrove step`` row runs datatrove's real
``Trafilatura`` pipeline step (a sandbox process per step, one pipe round-trip per page) on the same pages.
pages/CPU-s divides by the CPU time of this process and its finished children (the sandbox), which a
busy machine disturbs less than wall-clock time.
The resiliparse rows are DCLM-Baseline's extractor: ``ExtractStage`` with ``backend="resiliparse"``, and the
bare ``extract_plain_text`` call with the same settings (no time limit, no Arrow table).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import trafilatura
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from trafilatura.deduplication import LRU_TEST

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from pipeline.core.schema import RAW_SCHEMA
from pipeline.sources.warc import decode_html
from pipeline.stages.config import ExtractionConfig
from pipeline.stages.extraction import RESILIPARSE_OPTIONS, ExtractStage

log = logging.getLogger("bench.extraction_quality")

Extractor = Callable[[list[str]], list[str | None]]


@dataclass
class Page:
    key: str
    html: str
    truth: str | None = None
    with_snippets: tuple[str, ...] = ()
    without_snippets: tuple[str, ...] = ()


def load_aeb(root: Path) -> list[Page]:
    truth = json.loads((root / "extraction_aeb" / "ground-truth.json").read_text())
    pages = []
    for key in sorted(truth):
        raw = gzip.decompress((root / "extraction_aeb" / "html" / f"{key}.html.gz").read_bytes())
        pages.append(Page(key, decode_html(raw, "text/html")[0], truth=truth[key].get("articleBody", "")))
    return pages


def load_trafilatura_eval(root: Path) -> list[Page]:
    folder = root / "extraction_trafilatura_eval"
    data = json.loads((folder / "evaldata.json").read_text())
    pages = []
    for url in sorted(data):
        item = data[url]
        path = folder / "html" / f"{item['file']}.gz"
        if not path.exists():
            continue
        html = decode_html(gzip.decompress(path.read_bytes()), None)[0]
        pages.append(Page(url, html, with_snippets=tuple(item["with"]), without_snippets=tuple(item["without"])))
    return pages


# ------------------------------------------------------------------------------------------------- metrics

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN_RE.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i : i + n])


def tp_fp_fn(true: Counter, pred: Counter) -> tuple[float, float, float]:
    """The AEB score of one page: overlap counts normalized so long pages do not weigh more."""
    tp = sum((true & pred).values())
    fp = sum(pred.values()) - tp
    fn = sum(true.values()) - tp
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    return 1.0 if fp == fn == 0 else (0.0 if tp == fp == 0 else tp / (tp + fp))


def _recall(tp: float, fp: float, fn: float) -> float:
    return 1.0 if fp == fn == 0 else (0.0 if tp == fn == 0 else tp / (tp + fn))


def aeb_metrics(scores: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Precision and recall averaged over pages, F1 of the averages (as the AEB evaluate.py does)."""
    precision = statistics.mean(_precision(*s) for s in scores if s[0] + s[1] > 0)
    recall = statistics.mean(_recall(*s) for s in scores if s[0] + s[2] > 0)
    return precision, recall, 2 * precision * recall / (precision + recall)


def bootstrap_f1_ci(scores: list[tuple[float, float, float]], rounds: int = 1000, seed: int = 0) -> float:
    rng = random.Random(seed)
    values = []
    for _ in range(rounds):
        sample = [scores[rng.randrange(len(scores))] for _ in scores]
        values.append(aeb_metrics(sample)[2])
    return 1.96 * statistics.stdev(values)


def bag_of_words_f1(truths: list[str], preds: list[str | None]) -> float:
    """Mean per-page F1 of whitespace-token multisets."""
    f1s = []
    for truth, pred in zip(truths, preds, strict=True):
        t, p = Counter(truth.split()), Counter((pred or "").split())
        tp = sum((t & p).values())
        if not t and not p:
            f1s.append(1.0)
            continue
        precision = tp / sum(p.values()) if p else 0.0
        recall = tp / sum(t.values()) if t else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return statistics.mean(f1s)


def snippet_scores(pages: list[Page], preds: list[str | None]) -> tuple[float, float, float]:
    """trafilatura's evaluation: "with" snippets found (recall), "without" absent; accuracy and F1."""
    tp = fn = tn = fp = 0
    for page, pred in zip(pages, preds, strict=True):
        text = pred or ""
        for snippet in page.with_snippets:
            if snippet in text:
                tp += 1
            else:
                fn += 1
        for snippet in page.without_snippets:
            if snippet in text:
                fp += 1
            else:
                tn += 1
    accuracy = (tp + tn) / (tp + tn + fp + fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return accuracy, recall, 2 * precision * recall / (precision + recall) if tp else 0.0


# ----------------------------------------------------------------------------------------------- extractors


def stage_extractor(config: ExtractionConfig) -> Extractor:
    stage = ExtractStage(config)

    def run(htmls: list[str]) -> list[str | None]:
        table = pa.table(
            {
                "id": [str(i) for i in range(len(htmls))],
                "url": [None] * len(htmls),
                "domain": [None] * len(htmls),
                "dump": ["bench"] * len(htmls),
                "warc_path": ["bench"] * len(htmls),
                "warc_date": [None] * len(htmls),
                "html": htmls,
            },
            schema=RAW_SCHEMA,
        )
        out = stage(table)
        return out.column("text").to_pylist()

    return run


def function_extractor(**kwargs: object) -> Extractor:
    def run(htmls: list[str]) -> list[str | None]:
        return [trafilatura.extract(h, **kwargs) for h in htmls]

    return run


def resiliparse_extractor(htmls: list[str]) -> list[str | None]:
    """resiliparse's ``extract_plain_text`` with DCLM-Baseline's settings, page by page, nothing around it."""
    return [extract_plain_text(HTMLTree.parse(h), **RESILIPARSE_OPTIONS) for h in htmls]


def datatrove_step_extractor(htmls: list[str]) -> list[str | None]:
    """datatrove's own Trafilatura step (FineWeb: favour_precision=True), with its sandbox process."""
    from datatrove.data import Document
    from datatrove.pipeline.extractors import Trafilatura

    step = Trafilatura(favour_precision=True, timeout=5.0)
    docs = [Document(text=h, id=str(i)) for i, h in enumerate(htmls)]
    by_id = {d.id: d.text for d in step.run(iter(docs))}
    return [by_id.get(str(i)) for i in range(len(htmls))]


EXTRACTORS: dict[str, Extractor] = {
    "ExtractStage (default: FineWeb settings)": stage_extractor(ExtractionConfig()),
    "ExtractStage fast=True": stage_extractor(ExtractionConfig(fast=True)),
    "ExtractStage backend=resiliparse (DCLM-Baseline settings)": stage_extractor(
        ExtractionConfig(backend="resiliparse")
    ),
    "resiliparse extract_plain_text (DCLM-Baseline settings, bare)": resiliparse_extractor,
    "trafilatura.extract defaults": function_extractor(),
    "trafilatura.extract defaults, fast=True": function_extractor(fast=True),
    "datatrove Trafilatura settings (extract only)": function_extractor(
        favor_precision=True, include_comments=False, deduplicate=True
    ),
    "datatrove Trafilatura step (sandbox process)": datatrove_step_extractor,
}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="substrings of extractor names to run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (extractors alternate); median pages/s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("trafilatura", "datatrove", "htmldate", "courlan", "readability", "justext"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from datatrove.utils.logging import logger as datatrove_logger

    datatrove_logger.remove()

    root = realdata_dir()
    aeb = load_aeb(root)
    evalset = load_trafilatura_eval(root)
    htmls = [p.html for p in aeb] + [p.html for p in evalset]
    truths = [p.truth or "" for p in aeb]
    log.warning("%d AEB pages, %d trafilatura-eval pages", len(aeb), len(evalset))

    function_extractor()(htmls[:10])  # warm-up: imports, lxml, regex caches
    chosen = {n: e for n, e in EXTRACTORS.items() if not args.only or any(s in n for s in args.only)}
    seconds_by: dict[str, list[float]] = {}
    cpu_by: dict[str, list[float]] = {}
    outputs: dict[str, list[str | None]] = {}
    for _ in range(args.repeat):
        for name, extractor in chosen.items():
            LRU_TEST.clear()  # trafilatura's process-wide dedup cache: every run starts as a fresh process would
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            outputs[name] = extractor(htmls)
            seconds_by.setdefault(name, []).append(time.perf_counter() - start)
            cpu_by.setdefault(name, []).append(_cpu_seconds() - cpu_start)
    rows = []
    for name, preds in outputs.items():
        seconds = statistics.median(seconds_by[name])
        aeb_preds = preds[: len(aeb)]
        scores = [tp_fp_fn(shingles(t), shingles(p or "")) for t, p in zip(truths, aeb_preds, strict=True)]
        precision, recall, f1 = aeb_metrics(scores)
        accuracy, snippet_recall, snippet_f1 = snippet_scores(evalset, preds[len(aeb) :])
        rows.append(
            [
                name,
                f"{f1:.3f} ± {bootstrap_f1_ci(scores):.3f}",
                precision,
                recall,
                bag_of_words_f1(truths, aeb_preds),
                accuracy,
                snippet_f1,
                sum(1 for p in preds if not p),
                len(htmls) / seconds,
                len(htmls) / statistics.median(cpu_by[name]),
            ]
        )
        log.warning("%s: F1 %.3f, %.1f pages/s", name, f1, len(htmls) / seconds)
    table = markdown_table(
        [
            "extractor",
            "AEB F1 (shingles, ±95% CI)",
            "AEB precision",
            "AEB recall",
            "AEB bag-of-words F1",
            "traf-eval accuracy",
            "traf-eval F1",
            "empty",
            "pages/s",
            "pages/CPU-s",
        ],
        rows,
    )
    text = (
        "# Extraction quality and speed\n\n"
        f"{len(aeb)} AEB pages (ground truth articleBody) + {len(evalset)} trafilatura-eval pages "
        f"({sum(len(p.with_snippets) for p in evalset)} with / {sum(len(p.without_snippets) for p in evalset)} "
        f"without snippets); pages/s over all {len(htmls)} pages, one process, median of {args.repeat} "
        "alternating rounds.\n"
        f"trafilatura {trafilatura.__version__}. Machine: {machine_info()}.\n\n{table}\n"
    )
    print(text)
    write_result("extraction_quality.md", text)


if __name__ == "__main__":
    main()
