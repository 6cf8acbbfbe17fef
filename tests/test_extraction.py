"""The extraction stage on real pages: content kept, boilerplate dropped, limits enforced, contract kept."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lxml.html
import pyarrow as pa
import pytest

import pipeline.stages.extraction as extraction
from pipeline.core.schema import DROP_REASON
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.sources.warc import read_warc
from pipeline.stages.config import ExtractionConfig
from pipeline.stages.extraction import ExtractStage
from tests.pages import norm, raw_table, words


@pytest.fixture(scope="session")
def aeb(realdata: Path) -> list[tuple[str, str, str]]:
    """The first 12 AEB pages: (url, html, ground-truth articleBody)."""
    folder = realdata / "extraction_aeb"
    truth = json.loads((folder / "ground-truth.json").read_text())
    pages = []
    for key in sorted(truth)[:12]:
        html = gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes()).decode("utf-8")
        pages.append((truth[key]["url"], html, truth[key]["articleBody"]))
    return pages


def test_aeb_pages_keep_the_article_and_drop_boilerplate(aeb: list[tuple[str, str, str]]) -> None:
    out = ExtractStage()(raw_table([html for _, html, _ in aeb]))
    assert out.column(DROP_REASON).null_count == len(aeb)
    texts = out.column("text").to_pylist()
    found = 0
    for (url, html, truth), text in zip(aeb, texts, strict=True):
        longest = max(re.split(r"(?<=[.!?])\s+", truth), key=len)
        found += norm(longest) in norm(text)
        ours, theirs = words(text), words(truth)
        overlap = sum((ours & theirs).values())
        assert overlap / sum(ours.values()) > 0.8, f"{url}: too much text that is not the article"
        assert overlap / sum(theirs.values()) > 0.8, f"{url}: article text missing"
        tree = lxml.html.fromstring(html)
        links = {norm(a.text_content()) for a in tree.xpath("//nav//a | //footer//a | //header//a")}
        leaked = [b for b in links if 12 < len(b) < 80 and b not in truth and b in text]
        assert not leaked, f"{url}: navigation text in the extraction: {leaked}"
    assert found >= 10, f"the longest ground-truth sentence was found in only {found} of {len(aeb)} pages"


def test_whirlwind_text_overlaps_common_crawl_wet(realdata: Path) -> None:
    warcs = realdata / "warc_samples"
    batches = list(read_warc(warcs / "cc-main-2024-22_whirlwind.warc.gz", dump="d", warc_path="w", counters=Counter()))
    text = ExtractStage()(batches[0]).column("text")[0].as_py()
    wet = gzip.decompress((warcs / "cc-main-2024-22_whirlwind.warc.wet.gz").read_bytes()).decode("utf-8")
    wet_text = wet.split("WARC-Type: conversion", 1)[1].split("\r\n\r\n", 1)[1]
    ours, theirs = words(text), words(wet_text)
    assert sum((ours & theirs).values()) / sum(ours.values()) > 0.9  # what we keep is page text
    assert "Escopete ye un municipio d'a provincia de Guadalachara" in text
    assert "Relaciones Topográficas" in text
    for menu in ("Menú principal", "Creyar cuenta", "Pachinas especials", "Amostrar l'historial"):
        assert menu in wet_text and menu not in text  # WET keeps the wiki chrome, we drop it


def test_output_contract(aeb: list[tuple[str, str, str]]) -> None:
    stage = ExtractStage()
    assert isinstance(stage, Stage) and stage.name == "extract"
    out = stage(raw_table([aeb[0][1], "<html><body><div></div></body></html>", None, ""]))
    assert out.column_names == ["id", "url", "domain", "dump", "warc_path", "warc_date", "text", DROP_REASON]
    assert out.schema.field("text").type == pa.large_string()
    assert out.column(DROP_REASON).to_pylist() == [None, "empty", "empty", "empty"]
    assert out.column("text").to_pylist()[1:] == [None, None, None]
    assert out.column("id").to_pylist() == ["doc-0", "doc-1", "doc-2", "doc-3"]


def test_min_text_chars(aeb: list[tuple[str, str, str]]) -> None:
    html = aeb[0][1]
    length = len(ExtractStage()(raw_table([html])).column("text")[0].as_py())
    stage = ExtractStage(ExtractionConfig(min_text_chars=length + 1))
    assert stage(raw_table([html])).column(DROP_REASON).to_pylist() == ["empty"]


def test_huge_page_is_dropped_without_parsing(aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ``max_html_bytes`` a page is dropped before trafilatura sees it (one huge lxml parse could not be
    interrupted by the time limit); the next page extracts as usual."""
    huge = "<html><body>" + "<p>" + "lorem ipsum dolor sit amet " * 2_000_000 + "</p></body></html>"
    assert len(huge) > ExtractionConfig().max_html_bytes
    parsed: list[int] = []
    real = extraction.extract_text

    def extract(html: str, options: object) -> str | None:
        parsed.append(len(html))
        return real(html, options)

    monkeypatch.setattr(extraction, "extract_text", extract)
    out = ExtractStage()(raw_table([huge, aeb[1][1]]))
    assert out.column(DROP_REASON).to_pylist() == ["too_large", None]
    assert aeb[1][2].split()[0] in out.column("text")[1].as_py()
    assert parsed == [len(aeb[1][1])]


def _slow_on_marker(real):  # noqa: ANN001, ANN202 - test double with trafilatura's signature
    def extract(html: str, options: object) -> str | None:
        if "PATHOLOGICAL" in html:
            deadline = time.monotonic() + 30  # burns CPU: the limit is CPU time (SIGPROF interrupts the loop)
            while time.monotonic() < deadline:
                sum(range(1000))
        return real(html, options)

    return extract


def test_slow_page_times_out_and_the_next_pages_extract(
    aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extraction, "extract_text", _slow_on_marker(extraction.extract_text))
    calls: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append(signum)

    signal.setitimer(signal.ITIMER_PROF, 60.0)  # a profiler's timer, running before the batch
    previous = signal.signal(signal.SIGPROF, handler)
    try:
        stage = ExtractStage(ExtractionConfig(timeout_s=0.3))
        pages = [aeb[0][1], "<html><!-- PATHOLOGICAL --><body><p>x</p></body></html>", aeb[1][1], aeb[2][1]]
        start = time.perf_counter()
        out = stage(raw_table(pages))
        assert time.perf_counter() - start < 10
        assert out.column(DROP_REASON).to_pylist() == [None, "timeout", None, None]
        assert all(out.column("text")[i].as_py() for i in (0, 2, 3))
        # the handler and the timer in place before the batch are back
        assert signal.getsignal(signal.SIGPROF) is handler
        timer_after = signal.getitimer(signal.ITIMER_PROF)[0]
        assert 0 < timer_after < 60.0  # resumed with the CPU time the batch used taken off
        assert calls == []
        signal.raise_signal(signal.SIGPROF)
        assert calls == [signal.SIGPROF]
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def test_timeout_off_the_main_thread(aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the main thread a watchdog raises in the extracting thread (the page busy-loops in Python)."""

    real = extraction.extract_text

    def extract(html: str, options: object) -> str | None:
        if "PATHOLOGICAL" in html:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sum(range(1000))
        return real(html, options)

    monkeypatch.setattr(extraction, "extract_text", extract)
    stage = ExtractStage(ExtractionConfig(timeout_s=0.3))
    pages = ["<html><!-- PATHOLOGICAL --><body><p>x</p></body></html>", aeb[0][1], aeb[1][1]]
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(stage, raw_table(pages)).result(timeout=20)
    assert time.perf_counter() - start < 10
    assert out.column(DROP_REASON).to_pylist() == ["timeout", None, None]
    assert not [t for t in threading.enumerate() if t.name == "extract-watchdog"]


def test_trafilatura_error_is_dropped_as_error(
    aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = extraction.extract_text

    def extract(html: str, options: object) -> str | None:
        if "BROKEN" in html:
            raise ValueError("cannot parse")
        return real(html, options)

    monkeypatch.setattr(extraction, "extract_text", extract)
    out = ExtractStage()(raw_table(["<html><!-- BROKEN --></html>", aeb[0][1]]))
    assert out.column(DROP_REASON).to_pylist() == ["error", None]


def test_run_chain_counts_drop_reasons(aeb: list[tuple[str, str, str]]) -> None:
    table = raw_table([aeb[0][1], "x" * 3_000, "<html></html>", aeb[1][1]])
    stats = PartStats(part="p")
    kept, rejected = run_chain([ExtractStage(ExtractionConfig(max_html_bytes=2_000))], table, stats)
    assert kept.num_rows == 0  # the AEB pages are larger than 2,000 bytes too
    assert dict(stats.stage("extract").drops) == {"extract:too_large": 3, "extract:empty": 1}
    kept, _ = run_chain([ExtractStage()], table, PartStats(part="q"))
    assert kept.column("id").to_pylist() == ["doc-0", "doc-3"]


def test_stage_pickles_and_is_deterministic(aeb: list[tuple[str, str, str]]) -> None:
    stage = ExtractStage(ExtractionConfig(timeout_s=2.0))
    clone = pickle.loads(pickle.dumps(stage))
    assert clone == stage
    table = raw_table([html for _, html, _ in aeb[:4]] * 3)  # repeated pages: trafilatura's dedup kicks in
    first = stage(table)
    assert clone(table).equals(first)  # the dedup cache is per batch, not per process
    assert stage(table).equals(first)
    assert first.column(DROP_REASON).to_pylist()[:4] == [None] * 4
