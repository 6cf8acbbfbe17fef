"""End-to-end throughput of the WARC pass, ours vs datatrove's FineWeb steps, side by side on the real WARC samples.

Default mode (``--workers 1``): in one process, alternating ours and datatrove's passes over the same local WARC
files, single process each.

- ours: ``read_warc`` -> ``run_chain(warc_stages(RunConfig()))``: URL filter, the language pre-screen,
  trafilatura, lid.176 en > 0.65, the quality filters (Gopher repetition and quality, C4, FineWeb) and PII
  formatting, as a WARC pass runs it, minus Parquet writing;
- ours without the language pre-screen (``langid.prescreen: false``): what it skips, whether any of it would have
  been kept (false skips) and the time it saves;
- datatrove: ``WarcReader`` -> ``URLFilter`` -> ``Trafilatura(favour_precision=True)`` -> ``LanguageFilter(["en"],
  0.65)`` with the same local lid.176.ftz -> ``GopherRepetitionFilter`` -> ``GopherQualityFilter`` ->
  ``C4QualityFilter(filter_no_terminal_punct=False)`` -> ``FineWebQualityFilter`` -> ``PIIFormatter``, i.e.
  FineWeb's chain (its PII step runs after dedup there; nothing here is deduplicated), run by
  calling the steps' ``run()`` generators in a chain (what ``LocalPipelineExecutor`` does inside one task, without
  its per-task logging and stats files), consumed by a sink;
- datatrove, like for like: the same chain fed only the records both readers select (they select differently),
  with our per-page extraction time limit instead of datatrove's 1 s, so both sides do the same work.

Nothing touches the network (tldextract uses its bundled suffix snapshot, Hugging Face Hub is offline).
Both sides get the same files, build their steps once (timed apart as setup), write nothing, and start every pass
with process-global caches cleared: trafilatura's ``deduplicate`` LRU would otherwise remember the previous pass's
paragraphs (and datatrove's extraction subprocess, forked per pass, would inherit them), and our quality filters'
word-chunk cache would hold every chunk of the identical texts.
Files with a truncated gzip stream are left out of the throughput passes (datatrove's ``WarcReader`` aborts the
whole task on them) and run separately on both sides.

``--mix``: the same on a Common-Crawl-like language mix (45% of the HTML pages English), built from the real
WARC samples and real pages carrying the lingua sentences of other languages (``bench/langmix.py``) in a temporary
folder.

Scaling mode (``--workers 2``, with ``--mix`` on the language mix): the whole WARC pass (``run_warc_pass`` on the local
engine) with 1 vs 2 workers.
"""

from __future__ import annotations

import argparse
import functools
import gc
import gzip
import logging
import math
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.common import cpu_model, realdata_dir, write_result

log = logging.getLogger("bench.pipeline")

MIN_SIDE_SECONDS = 20.0
"""Each side runs at least this long in total, so the repeats give stable numbers on the small sample set."""
MIN_REPEATS = 3
_TOKEN = re.compile(r"\w+")


# --------------------------------------------------------------------------------------------- inputs and machine


def warc_dir() -> Path:
    root = realdata_dir()
    return root / "warc_samples" if (root / "warc_samples").is_dir() else root


def gzip_complete(path: Path) -> bool:
    """Whether the whole gzip stream decompresses to its end marker (a clipped file does not)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error):
        return False
    return True


def split_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(complete, truncated) ``.warc.gz`` files in ``folder``, sorted by name."""
    files = sorted(folder.glob("*.warc.gz"))
    if not files:
        raise FileNotFoundError(f"no .warc.gz files in {folder}; set CC_REFINERY_REALDATA")
    complete = [f for f in files if gzip_complete(f)]
    return complete, [f for f in files if f not in complete]


def machine_info() -> dict[str, str]:
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu_model(), "ram": ram, "python": platform.python_version()}


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (datatrove's extraction subprocess)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def offline_environment(tmp: Path) -> None:
    """Keep every library off the network and out of the user's caches (set before they are imported)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HOME", str(tmp / "hf"))
    os.environ["TLDEXTRACT_CACHE"] = str(tmp / "tldextract")


def reset_caches() -> None:
    """Clear process-global caches so every pass starts alike, as a fresh process would.

    trafilatura's (its ``deduplicate`` LRU above all: it would remember the previous pass's paragraphs) and our
    quality filters' word-chunk cache (it would hold every chunk of the previous pass's identical texts).
    """
    from trafilatura.meta import reset_caches as reset_trafilatura

    from filters.text import clear_caches

    htmldate_log = logging.getLogger("htmldate")
    level = htmldate_log.level
    htmldate_log.setLevel(logging.CRITICAL)  # htmldate logs an error for each of its caches it cannot clear
    try:
        reset_trafilatura()
    finally:
        htmldate_log.setLevel(level)
    clear_caches()
    gc.collect()


# --------------------------------------------------------------------------------------------- one pass, either side


@dataclass
class SideRun:
    """What one pass of one side did."""

    side: str
    wall_s: float
    cpu_s: float
    records_in: int
    docs_out: int
    stage_seconds: dict[str, float]
    stage_docs: dict[str, tuple[int, int]]
    notes: Counter[str] = field(default_factory=Counter)
    kept: dict[str, str] = field(default_factory=dict)


def build_ours(prescreen: bool = True) -> tuple[Any, list[Any]]:
    """Default RunConfig (en >= 0.65) and its WARC-pass chain, built once, block lists and model loaded;
    ``prescreen=False`` switches the language pre-screen off."""
    from filters.url import compile_rules
    from pipeline.app.config import RunConfig
    from pipeline.app.warc import warc_stages
    from pipeline.stages.langid import load_lid_model

    config = RunConfig()
    config.langid.prescreen = prescreen
    stages = warc_stages(config)
    compile_rules(config.url_filter)  # the stages load these lazily, on their first batch
    load_lid_model(config.langid.model_path)
    return config, stages


def run_ours(files: list[Path], config: Any, stages: list[Any], side: str = "ours") -> SideRun:
    """read_warc -> run_chain over ``files``, kept rows consumed in memory (no Parquet writing)."""
    from pipeline.core.stage import run_chain
    from pipeline.core.stats import PartStats
    from pipeline.sources.warc import read_warc

    reset_caches()
    stats = PartStats(part="bench", inputs=[str(f) for f in files])
    records = 0
    read_s = 0.0
    kept_tables = []
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for path in files:
        batches = read_warc(
            path,
            dump=config.source.dump,
            warc_path=path.name,
            counters=stats.source,
            batch_size=config.engine.batch_size,
        )
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            read_s += time.perf_counter() - start
            if batch is None:
                break
            records += batch.num_rows
            kept, _rejected = run_chain(stages, batch, stats)
            if kept.num_rows:
                kept_tables.append(kept.select(["url", "text"]))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    stage_seconds = {"read WARC (read_warc batches)": read_s, **{s.name: s.seconds for s in stats.stages}}
    kept_docs: dict[str, str] = {}
    docs_out = 0
    for table in kept_tables:
        docs_out += table.num_rows
        for url, text in zip(table.column("url").to_pylist(), table.column("text").to_pylist(), strict=True):
            kept_docs.setdefault(url or "", text or "")
    return SideRun(
        side=side,
        wall_s=wall,
        cpu_s=cpu,
        records_in=records,
        docs_out=docs_out,
        stage_seconds={
            **stage_seconds,
            "run_chain bookkeeping (rest of wall)": max(0.0, wall - sum(stage_seconds.values())),
        },
        stage_docs={s.name: (s.docs_in, s.docs_out) for s in stats.stages},
        notes=Counter({f"source:{k}": v for k, v in stats.source.items()}),
        kept=kept_docs,
    )


@dataclass
class DatatroveSteps:
    """datatrove's FineWeb steps, built and warmed once (block lists parsed, model loaded)."""

    url_filter: Any
    extractor: Any
    language: Any
    quality: dict[str, Any]

    def named(self) -> dict[str, Any]:
        return {"url_filter": self.url_filter, "extract": self.extractor, "langid": self.language, **self.quality}

    def chain(self) -> list[Any]:
        return list(self.named().values())


def datatrove_quality_filters(names: list[str]) -> dict[str, Any]:
    """datatrove's filters as FineWeb runs them, for the names of our quality stages (whose defaults are FineWeb's)."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter

    factories = {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": lambda: C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb_quality": FineWebQualityFilter,
        "pii": PIIFormatter,
    }
    missing = [n for n in names if n not in factories]
    if missing:
        raise ValueError(f"no datatrove equivalent for our stages {missing}; the chains would not compare")
    return {name: factories[name]() for name in names}


def build_datatrove(model_path: Path, quality: list[str]) -> DatatroveSteps:
    """URLFilter with the bundled public-suffix snapshot, Trafilatura as FineWeb, LanguageFilter on ``model_path``,
    then the quality filters named in ``quality``, in that order."""
    import tldextract
    from datatrove.pipeline.filters import LanguageFilter, URLFilter
    from datatrove.utils.lid import FT176LID

    class LocalFT176LID(FT176LID):
        """FT176LID on a local model file instead of its cached download."""

        def __init__(self, languages: list[str], path: Path) -> None:
            super().__init__(languages)
            self._path = path

        @property
        def model(self) -> Any:
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(str(self._path))
            return self._model

    url_filter = URLFilter()
    url_filter.tldextractor = tldextract.TLDExtract(suffix_list_urls=())
    url_filter.download_data()  # extracts and parses the block lists once (datatrove does it on the first doc)
    language = LanguageFilter(languages=["en"], language_threshold=0.65)
    language.model = LocalFT176LID(["en"], model_path)
    _ = language.model.model
    return DatatroveSteps(url_filter, datatrove_extractor(), language, datatrove_quality_filters(quality))


def datatrove_extractor(timeout_s: float | None = None) -> Any:
    """FineWeb's ``Trafilatura(favour_precision=True)``; its per-page limit is 1 s unless ``timeout_s`` is given."""
    from datatrove.pipeline.extractors import Trafilatura

    if timeout_s is None:
        return Trafilatura(favour_precision=True)
    return Trafilatura(favour_precision=True, timeout=timeout_s)


def run_datatrove(
    folder: Path, files: list[Path], steps: DatatroveSteps, only_ids: set[str] | None = None, side: str = "datatrove"
) -> SideRun:
    """WarcReader -> URLFilter -> Trafilatura -> LanguageFilter as chained ``run()`` generators, into a sink.

    ``only_ids``: pass on only the records whose document id is in the set (to run datatrove's chain on the
    records both readers select); the records left out still cost datatrove's reader their decoding.
    """
    from datatrove.pipeline.readers import WarcReader
    from datatrove.utils.stats import Stats

    reset_caches()
    reader = WarcReader(str(folder))
    for step in steps.chain():
        step.stats = Stats(str(step))
    kept: dict[str, str] = {}
    docs_out = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    pipe: Iterator[Any] = reader.read_files_shard([f.name for f in files])
    if only_ids is not None:
        pipe = _only_ids(pipe, only_ids)
    for step in steps.chain():
        pipe = step.run(pipe)
    for doc in pipe:
        docs_out += 1
        kept.setdefault(doc.metadata.get("url") or "", doc.text or "")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    names = {"reader": reader, **steps.named()}
    timed = {name: step.stats.time_stats.total for name, step in names.items()}
    stage_seconds = {
        "read WARC: iterate + gunzip (rest of wall)": max(0.0, wall - sum(timed.values())),
        "read WARC: record -> document": timed.pop("reader"),
        **timed,
    }
    stage_docs = {
        name: (int(step.stats["total"].total), int(step.stats["forwarded"].total))
        for name, step in names.items()
        if name != "reader"
    }
    stage_docs["read WARC: record -> document"] = (0, int(reader.stats["documents"].total))
    notes = Counter(
        {
            f"extract:{key}": int(steps.extractor.stats[key].total)
            for key in ("timeout", "clean_error", "broken_process")
            if steps.extractor.stats[key].total
        }
    )
    return SideRun(
        side=side,
        wall_s=wall,
        cpu_s=cpu,
        records_in=stage_docs["url_filter"][0],
        docs_out=docs_out,
        stage_seconds=stage_seconds,
        stage_docs=stage_docs,
        notes=notes,
        kept=kept,
    )


def _only_ids(docs: Iterator[Any], ids: set[str]) -> Iterator[Any]:
    from pipeline.core.schema import document_id

    for doc in docs:
        if document_id(doc.id) in ids:
            yield doc


@dataclass
class Selection:
    """Which HTML records each reader hands on (read once, untimed): id -> URL."""

    ours: dict[str, str]
    theirs: dict[str, str]


def read_selections(folder: Path, files: list[Path], dump: str) -> Selection:
    from datatrove.pipeline.readers import WarcReader

    from pipeline.core.schema import document_id
    from pipeline.sources.warc import read_warc

    ours: dict[str, str] = {}
    for path in files:
        for batch in read_warc(path, dump=dump, warc_path=path.name, counters=Counter(), batch_size=500):
            ours.update(zip(batch.column("id").to_pylist(), batch.column("url").to_pylist(), strict=True))
    reader = WarcReader(str(folder))
    theirs = {document_id(d.id): d.metadata.get("url") or "" for d in reader.read_files_shard([f.name for f in files])}
    return Selection(ours, theirs)


def try_truncated(folder: Path, files: list[Path], config: Any, stages: list[Any], steps: DatatroveSteps) -> list[str]:
    """How each side handles a truncated file: one line per file and side."""
    lines = []
    for path in files:
        for side in ("ours", "datatrove"):
            try:
                run = run_ours([path], config, stages) if side == "ours" else run_datatrove(folder, [path], steps)
                notes = ", ".join(f"{k} {v}" for k, v in sorted(run.notes.items())) or "-"
                outcome = f"read {run.records_in} HTML records, kept {run.docs_out} (counters: {notes})"
            except Exception as e:  # the point is to show what each side does with it
                outcome = f"task aborted: {type(e).__name__}: {e}"
            lines.append(f"| `{path.name}` | {side} | {outcome} |")
    return lines


# --------------------------------------------------------------------------------------------- output comparison


def token_f1(ours: str, theirs: str) -> float:
    """Bag-of-words F1 (lowercased ``\\w+`` tokens), as extraction benchmarks score text."""
    a, b = Counter(_TOKEN.findall(ours.lower())), Counter(_TOKEN.findall(theirs.lower()))
    if not a and not b:
        return 1.0
    common = sum((a & b).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


@dataclass
class Comparison:
    ours: int
    theirs: int
    both: int
    jaccard: float
    mean_f1: float
    exact: int
    low_f1: list[tuple[str, float]]
    only_ours: list[str]
    only_theirs: list[str]
    differ: list[str] = field(default_factory=list)
    """Kept by both with different text."""
    exact_pii: int = 0
    """Kept by both with identical text once the PII placeholders are normalised (:func:`normalise_pii`)."""
    differ_pii: list[str] = field(default_factory=list)
    """Kept by both with different text even with the PII placeholders normalised."""


@functools.cache
def _pii_placeholders() -> re.Pattern[str]:
    """Every replacement address either side writes: datatrove's ``PIIFormatter`` defaults and our PII config's."""
    from datatrove.pipeline.formatters import PIIFormatter

    from filters.config import PiiConfig

    theirs, ours = PIIFormatter(), PiiConfig()
    emails = {*theirs.emails_replacer.replacements, *ours.email_replacements}
    ips = {*theirs.ip_replacer.replacements, *ours.ip_replacements}
    alternatives = sorted(emails | ips, key=len, reverse=True)
    return re.compile("|".join(re.escape(a) for a in alternatives))


def normalise_pii(text: str) -> str:
    """``text`` with every PII placeholder address mapped to ``<EMAIL>`` or ``<IP>``.

    Both sides replace the same addresses by the same list of placeholders, used in turn; datatrove's turn runs
    on across the documents one formatter sees, ours restarts in every document (a document's output must not
    depend on the documents before it). So the same address can become a different placeholder: this tells
    that apart from a real difference of the text.
    """
    return _pii_placeholders().sub(lambda m: "<EMAIL>" if "@" in m.group() else "<IP>", text)


def compare(ours: dict[str, str], theirs: dict[str, str]) -> Comparison:
    both = sorted(set(ours) & set(theirs))
    union = set(ours) | set(theirs)
    scores = {url: token_f1(ours[url], theirs[url]) for url in both}
    low = sorted(((u, s) for u, s in scores.items() if s < 0.9), key=lambda x: x[1])
    differ_pii = [u for u in both if normalise_pii(ours[u]).strip() != normalise_pii(theirs[u]).strip()]
    return Comparison(
        ours=len(ours),
        theirs=len(theirs),
        both=len(both),
        jaccard=len(both) / len(union) if union else 1.0,
        mean_f1=statistics.fmean(scores.values()) if scores else float("nan"),
        exact=sum(ours[u].strip() == theirs[u].strip() for u in both),
        low_f1=low,
        only_ours=sorted(set(ours) - set(theirs)),
        only_theirs=sorted(set(theirs) - set(ours)),
        differ=[u for u in both if ours[u].strip() != theirs[u].strip()],
        exact_pii=len(both) - len(differ_pii),
        differ_pii=differ_pii,
    )


# --------------------------------------------------------------------------------------------- report


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def header(command: str, title: str, load_before: str) -> list[str]:
    m = machine_info()
    versions = ", ".join(
        f"{p} {package_version(p)}" for p in ("datatrove", "trafilatura", "warcio", "fastwarc", "pyarrow")
    )
    return [
        f"## {title}",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, Python {m['python']}",
        f"- load average (1, 5, 15 min) before / after: {load_before} / {load_average()}"
        + (f"; run at niceness {os.nice(0)}" if os.nice(0) else ""),
        f"- packages: {versions}",
        f"- command: `{command}`",
        "",
    ]


def side_row(runs: list[SideRun], files: int) -> str:
    walls = [r.wall_s for r in runs]
    first = runs[0]
    median_wall, best_wall = statistics.median(walls), min(walls)
    median_cpu = statistics.median(r.cpu_s for r in runs)
    rec = first.records_in
    return (
        f"| {first.side} | {files} | {rec:,} | {first.docs_out:,} | {median_wall:.2f} | {best_wall:.2f} | "
        f"{rec / median_wall:.1f} | {rec / best_wall:.1f} | {median_cpu:.2f} | {rec / median_cpu:.1f} |"
    )


def stage_table(run: SideRun) -> list[str]:
    lines = ["| stage | seconds | share of wall | docs in -> out | ms per doc in |", "|---|---:|---:|---|---:|"]
    for name, secs in run.stage_seconds.items():
        docs = run.stage_docs.get(name)
        flow = f"{docs[0]:,} -> {docs[1]:,}" if docs and docs[0] else (f"-> {docs[1]:,}" if docs else "")
        per_doc = f"{1000 * secs / docs[0]:.1f}" if docs and docs[0] else ""
        lines.append(f"| {name} | {secs:.2f} | {100 * secs / run.wall_s:.0f}% | {flow} | {per_doc} |")
    lines.append(f"| **total (wall)** | **{run.wall_s:.2f}** | 100% | | |")
    return lines


def median_run(runs: list[SideRun]) -> SideRun:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def _median_wall(runs: list[SideRun]) -> float:
    return statistics.median(r.wall_s for r in runs)


def _median_cpu(runs: list[SideRun]) -> float:
    return statistics.median(r.cpu_s for r in runs)


def comparison_row(label: str, c: Comparison) -> str:
    return (
        f"| {label} | {c.ours} | {c.theirs} | {c.both} | {c.jaccard:.3f} | {c.mean_f1:.3f} | {c.exact} of {c.both} "
        f"| {c.exact_pii} of {c.both} |"
    )


def _urls(items: list[Any], shown: int = 6) -> str:
    names = [f"`{x[0]}` {x[1]:.2f}" if isinstance(x, tuple) else f"`{x}`" for x in items[:shown]]
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(names) + more


@dataclass
class Measured:
    """Everything the throughput mode measured, for the report."""

    command: str
    load_before: str
    folder: Path
    files: list[Path]
    truncated: list[Path]
    setup: dict[str, float]
    ours: list[SideRun]
    unscreened: list[SideRun]
    """Ours with the language pre-screen off."""
    theirs: list[SideRun]
    matched: list[SideRun]
    timeout_s: float
    selection: Selection
    truncated_lines: list[str]
    corpus: list[str] = field(default_factory=list)
    """How the input was built, when it was (``--mix``)."""


def throughput_report(m: Measured) -> str:
    t_ours, t_theirs, t_matched = _median_wall(m.ours), _median_wall(m.theirs), _median_wall(m.matched)
    o, t, mt = m.ours[0], m.theirs[0], m.matched[0]
    per_record = (o.records_in / t_ours) / (t.records_in / t_theirs)
    nfiles = len(m.files)
    lines = header(m.command, "WARC pass: ours vs datatrove (single process)", m.load_before)
    left_out = ", ".join(f"`{f.name}`" for f in m.truncated)
    lines += [
        *m.corpus,
        f"Input: {nfiles} WARC files from `{m.folder}` ({sum(f.stat().st_size for f in m.files) / 1e6:.1f} MB)"
        + (f"; left out (truncated gzip, run on their own below): {left_out}" if m.truncated else "")
        + f". {len(m.ours)} passes per side after one warm-up pass each, in rounds of ours -> ours without the "
        "language pre-screen -> datatrove -> datatrove like for like. HTML records in = records the side's reader "
        "hands to its URL filter; "
        "docs/s = those per second of wall time; CPU s = user + sys of the process and its reaped children "
        "(datatrove extracts in a subprocess).",
        "",
        "| side | WARC files | HTML records in | docs out | wall s (median) | wall s (best) | docs/s (median) "
        "| docs/s (best) | CPU s (median) | docs per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        side_row(m.ours, nfiles),
        side_row(m.unscreened, nfiles),
        side_row(m.theirs, nfiles),
        side_row(m.matched, nfiles),
        "",
        f"**Speedup ours/datatrove, median passes: {t_theirs / t_ours:.2f}x on the same WARC files (wall time), "
        f"{t_matched / t_ours:.2f}x like for like (datatrove on {mt.records_in} of our {o.records_in} HTML "
        f"records, with our {m.timeout_s:g} s extraction limit), "
        f"{per_record:.2f}x in docs/s on each side's own record selection.** "
        f"Best passes: {min(r.wall_s for r in m.theirs) / min(r.wall_s for r in m.ours):.2f}x on the same files. "
        f"On CPU time (median, less sensitive to other load on the machine): "
        f"{_median_cpu(m.theirs) / _median_cpu(m.ours):.2f}x on the same files, "
        f"{_median_cpu(m.matched) / _median_cpu(m.ours):.2f}x like for like. "
        f"Setup (built once, outside the passes): ours {m.setup['ours']:.2f} s, "
        f"datatrove {m.setup['datatrove']:.2f} s.",
        "",
        f"The readers select differently: datatrove reads {t.records_in} HTML records, ours {o.records_in} "
        "(ours skips non-200 responses and trusts the declared type before sniffing; datatrove keeps every status "
        "and sniffs with libmagic when the crawler gives no identified type). And datatrove's `Trafilatura` abandons "
        "a page after 1 s of wall time (FineWeb's setting), ours after "
        f"{m.timeout_s:g} s: the slowest pages, and more of them when the machine is busy, cost datatrove 1 s and "
        "are dropped. The like-for-like row removes both differences: datatrove's chain gets only the records "
        "both readers hand on (its reader still decodes all of its own) and the same time limit as ours.",
        "",
        "### Where the time goes (median pass)",
        "",
        "ours (per-stage seconds from `PartStats`; the rest of the wall time is `run_chain`'s own work between "
        "stages: the quality-signal histograms it measures for the report, drop counts and samples, byte counts):",
        "",
        *stage_table(median_run(m.ours)),
        "",
        "ours without the language pre-screen:",
        "",
        *stage_table(median_run(m.unscreened)),
        "",
        "datatrove (each step's `track_time` total; its reader times only record -> document, the WARC iteration "
        "and decompression around it fall in the rest):",
        "",
        *stage_table(median_run(m.theirs)),
        "",
        "datatrove like for like:",
        "",
        *stage_table(median_run(m.matched)),
        "",
    ]
    counters = [
        f"{r.side}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.notes.items()))
        for r in (median_run(m.ours), median_run(m.theirs), median_run(m.matched))
        if r.notes
    ]
    if counters:
        lines += ["Counters (median pass): " + "; ".join(counters), ""]
    own, same = compare(o.kept, t.kept), compare(o.kept, mt.kept)
    only_theirs_read = sorted(set(m.selection.theirs.values()) - set(m.selection.ours.values()))
    only_ours_read = sorted(set(m.selection.ours.values()) - set(m.selection.theirs.values()))
    lines += [
        "### Same output?",
        "",
        "Kept URLs compared as sets; token F1 = bag-of-words F1 of lowercased `\\w+` tokens of our text vs "
        "datatrove's for the same URL. Identical texts are counted as they are and with the PII placeholders "
        "normalised (every replacement address either side writes mapped to `<EMAIL>` or `<IP>`): both sides "
        "use the same placeholders in turn, but datatrove's turn runs on across documents and ours restarts in "
        "every document, so the same address can get a different placeholder.",
        "",
        "| datatrove run | kept by ours | kept by datatrove | kept by both | Jaccard of kept URLs "
        "| mean token F1 (same URL) | identical texts | identical, PII placeholders normalised |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        comparison_row("own record selection", own),
        comparison_row("like for like", same),
        "",
        f"- Records only datatrove's reader hands on ({len(only_theirs_read)}): {_urls(only_theirs_read)}",
        f"- Records only our reader hands on ({len(only_ours_read)}): {_urls(only_ours_read)}",
    ]
    for label, c in (("own selection", own), ("like for like", same)):
        if c.only_ours:
            lines.append(f"- Kept only by ours ({label}, {len(c.only_ours)}): {_urls(c.only_ours)}")
        if c.only_theirs:
            lines.append(f"- Kept only by datatrove ({label}, {len(c.only_theirs)}): {_urls(c.only_theirs)}")
        if c.low_f1:
            lines.append(f"- Token F1 below 0.9 ({label}, {len(c.low_f1)}): {_urls(c.low_f1)}")
        if c.differ:
            lines.append(f"- Kept by both, text differs ({label}, {len(c.differ)}): {_urls(c.differ)}")
        if c.differ_pii:
            lines.append(
                f"- Kept by both, text differs beyond PII placeholders ({label}, {len(c.differ_pii)}): "
                f"{_urls(c.differ_pii)}"
            )
    lines.append("")
    lines += prescreen_report(m)
    if m.truncated_lines:
        lines += ["### Truncated files, run on their own", "", "| file | side | outcome |", "|---|---|---|"]
        lines += [*m.truncated_lines, ""]
    return "\n".join(lines)


def prescreen_report(m: Measured) -> list[str]:
    """The language pre-screen: what it skipped, whether the full chain would have kept any of it, time saved."""
    o, u, t = median_run(m.ours), median_run(m.unscreened), m.theirs[0]
    docs_in, docs_out = o.stage_docs.get("prescreen", (0, 0))
    skipped = docs_in - docs_out
    false_skips = sorted(set(u.kept) - set(o.kept))
    changed = sorted(url for url in set(u.kept) & set(o.kept) if u.kept[url] != o.kept[url])
    t_ours, t_plain, t_theirs = _median_wall(m.ours), _median_wall(m.unscreened), _median_wall(m.theirs)
    extract_with, extract_without = o.stage_seconds.get("extract", 0.0), u.stage_seconds.get("extract", 0.0)
    overlap = [("with the pre-screen", compare(o.kept, t.kept)), ("without", compare(u.kept, t.kept))]
    lines = [
        "### Language pre-screen",
        "",
        f"- Skipped (`prescreen:langid`, median pass): {skipped} of {docs_in} HTML records "
        f"({100 * skipped / docs_in if docs_in else 0:.1f}%), costing {o.stage_seconds.get('prescreen', 0.0):.2f} s "
        f"({1000 * o.stage_seconds.get('prescreen', 0.0) / docs_in if docs_in else 0:.1f} ms per record in).",
        f"- False skips (kept by the full chain without the pre-screen, not with it): {len(false_skips)}"
        + (f": {_urls(false_skips)}" if false_skips else "")
        + f"; kept documents whose text differs between the two: {len(changed)}"
        + (f": {_urls(changed)}" if changed else "")
        + ".",
        f"- Time: median pass {t_plain:.2f} s without, {t_ours:.2f} s with: {t_plain - t_ours:.2f} s saved "
        f"({100 * (t_plain - t_ours) / t_plain:.1f}%); extraction {extract_without:.2f} s -> {extract_with:.2f} s.",
        f"- Ours / datatrove on the same files (wall time, median): **{t_theirs / t_ours:.2f}x with the pre-screen, "
        f"{t_theirs / t_plain:.2f}x without**; CPU time {_median_cpu(m.theirs) / _median_cpu(m.ours):.2f}x and "
        f"{_median_cpu(m.theirs) / _median_cpu(m.unscreened):.2f}x.",
    ]
    for label, c in overlap:
        lines.append(
            f"- Output {label}: {c.both} of datatrove's {c.theirs} kept documents also kept by ours "
            f"({100 * c.both / c.theirs if c.theirs else 100:.1f}%), identical text for {c.exact} of them "
            f"({100 * c.exact / c.both if c.both else 100:.1f}%), {c.exact_pii} "
            f"({100 * c.exact_pii / c.both if c.both else 100:.1f}%) with the PII placeholders normalised."
        )
    return [*lines, ""]


# --------------------------------------------------------------------------------------------- modes


def throughput(repeat: int | None, command: str, folder: Path, corpus: list[str] | None = None) -> str:
    load_before = load_average()
    files, truncated = split_inputs(folder)
    log.info("%d WARC files, %d truncated left out: %s", len(files), len(truncated), [f.name for f in truncated])
    from pipeline.stages.langid import default_model_path

    t0 = time.perf_counter()
    config, stages = build_ours()
    setup = {"ours": time.perf_counter() - t0}
    plain_config, plain_stages = build_ours(prescreen=False)
    t0 = time.perf_counter()
    base = ("url_filter", "extract", "langid")
    names = [s.name for s in plain_stages]
    if names[: len(base)] != list(base) or [s.name for s in stages if s.name != "prescreen"] != names:
        raise ValueError(f"our WARC pass is {[s.name for s in stages]}, not {base} + filters: update datatrove's")
    steps = build_datatrove(default_model_path(), names[len(base) :])
    like_for_like = replace(steps, extractor=datatrove_extractor(config.extraction.timeout_s))
    setup["datatrove"] = time.perf_counter() - t0
    selection = read_selections(folder, files, config.source.dump)
    common_ids = set(selection.ours) & set(selection.theirs)

    log.info("warm-up pass per side (not counted)")
    warm_ours = run_ours(files, config, stages)
    run_ours(files, plain_config, plain_stages)
    warm_theirs = run_datatrove(folder, files, steps)
    log.info("warm-up: ours %.1f s, datatrove %.1f s", warm_ours.wall_s, warm_theirs.wall_s)
    if repeat is None:
        repeat = max(MIN_REPEATS, math.ceil(MIN_SIDE_SECONDS / min(warm_ours.wall_s, warm_theirs.wall_s)))
    ours: list[SideRun] = []
    unscreened: list[SideRun] = []
    theirs: list[SideRun] = []
    matched: list[SideRun] = []
    for i in range(repeat):
        ours.append(run_ours(files, config, stages))
        unscreened.append(run_ours(files, plain_config, plain_stages, side="ours, no pre-screen"))
        theirs.append(run_datatrove(folder, files, steps))
        matched.append(
            run_datatrove(folder, files, like_for_like, only_ids=common_ids, side="datatrove, like for like")
        )
        log.info(
            "pass %d/%d: ours %.2f s (%d -> %d), no pre-screen %.2f s (%d -> %d), datatrove %.2f s (%d -> %d), "
            "like for like %.2f s (%d -> %d)",
            *(i + 1, repeat),
            *(ours[-1].wall_s, ours[-1].records_in, ours[-1].docs_out),
            *(unscreened[-1].wall_s, unscreened[-1].records_in, unscreened[-1].docs_out),
            *(theirs[-1].wall_s, theirs[-1].records_in, theirs[-1].docs_out),
            *(matched[-1].wall_s, matched[-1].records_in, matched[-1].docs_out),
        )
    for runs in (ours, unscreened, theirs, matched):
        if len({(r.records_in, r.docs_out) for r in runs}) > 1:
            counts = [(r.records_in, r.docs_out) for r in runs]
            log.warning("%s: passes differ in records/docs: %s", runs[0].side, counts)
    return throughput_report(
        Measured(
            command=command,
            load_before=load_before,
            folder=folder,
            files=files,
            truncated=truncated,
            setup=setup,
            ours=ours,
            unscreened=unscreened,
            theirs=theirs,
            matched=matched,
            timeout_s=config.extraction.timeout_s,
            selection=selection,
            truncated_lines=try_truncated(folder, truncated, config, stages, steps),
            corpus=corpus or [],
        )
    )


@dataclass
class ScalingRun:
    workers: int
    wall_s: float
    records_in: int
    docs_out: int
    stage_seconds: dict[str, float]


def run_scaling_once(files: list[Path], workers: int, out: Path) -> ScalingRun:
    """The whole WARC pass (``run_warc_pass``: every stage, Parquet parts, stats, markers) on the local engine."""
    from pipeline.app.config import load_config
    from pipeline.app.warc import run_warc_pass, warc_units
    from pipeline.core.parts import total_stats
    from pipeline.engines.local import LocalEngine

    folder = files[0].parent
    config = load_config(overrides={"source.cc_base_url": str(folder), "output_dir": str(out), "name": "run",
                                    "engine.workers": workers})  # fmt: skip
    units = warc_units([f.relative_to(folder).as_posix() for f in files])
    t0 = time.perf_counter()
    run_warc_pass(config, units, LocalEngine(workers=workers, progress=False))
    wall = time.perf_counter() - t0
    stats = total_stats(out / "run")
    first = stats.stages[0] if stats.stages else None
    return ScalingRun(
        workers=workers,
        wall_s=wall,
        records_in=first.docs_in if first else 0,
        docs_out=stats.docs_out or (stats.stages[-1].docs_out if stats.stages else 0),
        stage_seconds={s.name: s.seconds for s in stats.stages},
    )


def scaling(repeat: int | None, workers: int, command: str, tmp: Path, mix: Path | None = None) -> str:
    from loguru import logger as datatrove_logger

    datatrove_logger.disable("datatrove")
    load_before = load_average()
    if mix is not None:
        files = sorted(mix.glob("*.warc.gz"))
    else:
        complete, truncated = split_inputs(warc_dir())
        files = sorted(complete + truncated)  # ours reads truncated files too; no datatrove reader in this mode
    calibration = run_scaling_once(files, 1, tmp / "calibrate")
    copies = max(1, math.ceil(MIN_SIDE_SECONDS / calibration.wall_s))
    copies_dir = tmp / "copies"  # each copy its own name: the same name twice would be one file in two byte ranges
    copies_dir.mkdir(exist_ok=True)
    inputs = []
    for k in range(copies):
        for f in files:
            link = copies_dir / f"copy{k}-{f.name}"
            if not link.exists():
                link.symlink_to(f.resolve())
            inputs.append(link)
    log.info(
        "one copy of the file list: %.1f s with 1 worker; using %d copies (%d files)",
        calibration.wall_s,
        copies,
        len(inputs),
    )
    rounds = repeat or 2
    runs: dict[int, list[ScalingRun]] = {1: [], workers: []}
    for i in range(rounds):
        for w in (1, workers):
            run = run_scaling_once(inputs, w, tmp / f"scaling-w{w}-{i}")
            runs[w].append(run)
            log.info("round %d: workers=%d %.2f s (%d -> %d docs)", i + 1, w, run.wall_s, run.records_in, run.docs_out)
    lines = header(
        command, load_before=load_before, title=f"WARC pass scaling: the whole WARC pass with {workers} workers vs 1"
    )
    lines += [
        f"Input: {len(files)} WARC files (truncated ones included) x {copies} copies = {len(inputs)} parts "
        "(one per file, in name order), each through the whole WARC pass (`run_warc_pass`: URL filter, "
        "pre-screen, extraction, language ID, quality filters, PII; Parquet parts, stats and markers). "
        f"{rounds} rounds, alternating 1 and {workers} workers; each run in a fresh output folder. With more "
        "than one worker, datatrove's pool starts its processes through a forkserver (counted in the wall time), "
        "and the stage seconds are summed over workers running at the same time.",
        "",
        "| workers | HTML records in | docs out | wall s (median) | wall s (best) | docs/s (median) "
        "| stage seconds summed over parts |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w, rs in runs.items():
        med = statistics.median(r.wall_s for r in rs)
        r = rs[0]
        stage_secs = ", ".join(f"{k} {v:.1f}" for k, v in median_run_scaling(rs).stage_seconds.items())
        lines.append(
            f"| {w} | {r.records_in:,} | {r.docs_out:,} | {med:.2f} | {min(x.wall_s for x in rs):.2f} | "
            f"{r.records_in / med:.1f} | {stage_secs} |"
        )
    ratio = statistics.median(r.wall_s for r in runs[1]) / statistics.median(r.wall_s for r in runs[workers])
    lines += ["", f"**Scaling {workers} workers / 1 worker: {ratio:.2f}x** (median wall time ratio).", ""]
    outs = {(r.records_in, r.docs_out) for rs in runs.values() for r in rs}
    if len(outs) > 1:
        lines += [f"Note: record/document counts differ between runs: {sorted(outs)}.", ""]
    return "\n".join(lines)


def median_run_scaling(runs: list[ScalingRun]) -> ScalingRun:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=None, help="passes per side (default: enough for >= 20 s)")
    parser.add_argument("--workers", type=int, default=1, help="1: ours vs datatrove; N > 1: our scaling 1 vs N")
    parser.add_argument(
        "--mix",
        action="store_true",
        help="run on a Common-Crawl-like language mix (45%% English; bench/langmix.py) built from the real data",
    )
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write (default: bench/results/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # trafilatura warns on every page it discards; both sides run it, neither should pay for printing that.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    command = shlex.join(["python", "-m", "bench.bench_pipeline", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as name:
        tmp = Path(name)
        offline_environment(tmp)
        from loguru import logger as datatrove_logger

        datatrove_logger.disable("datatrove")
        if args.workers <= 1 and args.mix:
            from bench.langmix import build_language_mix

            mix = build_language_mix(tmp / "langmix", split_inputs(warc_dir())[0])
            report = throughput(args.repeat, command, mix.folder, mix.describe())
            result_name = "pipeline_langmix.md"
        elif args.workers <= 1:
            report, result_name = throughput(args.repeat, command, warc_dir()), "pipeline.md"
        else:
            mix_folder = None
            if args.mix:
                from bench.langmix import build_language_mix

                mix_folder = build_language_mix(tmp / "langmix", split_inputs(warc_dir())[0]).folder
            report, result_name = scaling(args.repeat, args.workers, command, tmp, mix_folder), "pipeline_scaling.md"
    sys.stdout.write(report + "\n")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + "\n")
        log.info("wrote %s", args.output)
    else:
        log.info("wrote %s", write_result(result_name, report + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
