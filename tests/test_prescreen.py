"""The language pre-screen: skips pages clearly in another language, never one the full chain keeps, off when
every language is kept. Real pages only: the real WARC samples, every real HTML page, and real page templates
carrying real sentences."""

from __future__ import annotations

import gzip
import pickle
import random
from collections import Counter

import pyarrow as pa
import pytest

from pipeline.app.config import RunConfig, load_config
from pipeline.app.warc import build_stage, warc_stages
from pipeline.core.schema import RAW_SCHEMA
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats
from pipeline.sources.warc import read_warc
from pipeline.stages.config import LangIdConfig
from pipeline.stages.langid import predict_languages
from pipeline.stages.prescreen import PrescreenStage, prescreen_text
from tests.bigwarc import REALDATA, lingua_sentences, localize, paragraph_texts, real_pages

FOREIGN = ["de", "ru", "zh", "ja", "fr", "es", "ar", "ko", "pl", "tr", "el", "hi"]


def _raw(pages: list[str]) -> pa.Table:
    n = len(pages)
    columns = {f.name: pa.nulls(n, f.type) for f in RAW_SCHEMA}
    columns["id"] = pa.array([f"page-{i}" for i in range(n)], pa.string())
    columns["url"] = pa.array([f"https://example.org/{i}" for i in range(n)], pa.string())
    columns["html"] = pa.array(pages, pa.large_string())
    return pa.table(columns, schema=RAW_SCHEMA)


@pytest.fixture(scope="module")
def templates() -> list[bytes]:
    """Real English news pages (AEB) whose paragraphs the pre-screen reads as prose: with the paragraphs
    replaced by other real English sentences, the pre-screen text is those sentences. (AEB also holds pages in
    other languages: lid.176 must find the page English.)"""
    sentences = lingua_sentences("en")
    found = []
    for path in sorted((REALDATA / "extraction_aeb" / "html").glob("*.gz"))[:40]:
        page = gzip.decompress(path.read_bytes())
        if sum(len(t) >= 40 for t in paragraph_texts(page)) < 5:
            continue
        if predict_languages([prescreen_text(page.decode("utf-8", "replace"))], k=1)[0].get("en", 0.0) < 0.9:
            continue
        text = " ".join(prescreen_text(localize(page, sentences, random.Random(0)).decode()).split())
        placed = [t for t in paragraph_texts(localize(page, sentences, random.Random(0))) if len(t) >= 40]
        if len(text) >= 1000 and sum(t[:40] in text for t in placed) >= len(placed) // 2:
            found.append(page)
    assert len(found) >= len(FOREIGN)
    return found


def test_prescreen_skips_real_sentences_of_other_languages_in_a_real_page(templates: list[bytes]) -> None:
    rng = random.Random(7)
    foreign = [localize(t, lingua_sentences(code), rng).decode() for t, code in zip(templates, FOREIGN, strict=False)]
    english = [t.decode("utf-8", "replace") for t in templates[: len(FOREIGN)]]
    config = RunConfig()
    stages = [build_stage("prescreen", config)]
    stats = PartStats(part="t", inputs=[])
    kept, rejected = run_chain(stages, _raw(foreign + english), stats)

    assert kept.column("html").to_pylist() == english  # every English original handed on
    (dropped,) = rejected
    assert dropped.num_rows == len(FOREIGN) and set(dropped.column("drop_reason").to_pylist()) == {"langid"}
    (stage,) = stats.stages
    assert stage.name == "prescreen" and stage.drops == Counter({"prescreen:langid": len(FOREIGN)})
    assert (stage.docs_in, stage.docs_out) == (2 * len(FOREIGN), len(FOREIGN))


def test_prescreen_keeps_what_it_cannot_judge(templates: list[bytes]) -> None:
    """Too little text, a page above the extraction's size limit, an empty payload: left for the chain to decide."""
    sentence = lingua_sentences("ru")[0]
    short = f"<html><body><p>{sentence[:120]}</p></body></html>"
    big = localize(templates[0], lingua_sentences("de"), random.Random(1)).decode()
    stage = PrescreenStage(LangIdConfig(), max_html_bytes=len(big.encode()) - 1)
    assert len(prescreen_text(short)) < LangIdConfig().prescreen_min_chars
    assert stage(_raw([short, big, ""])).column("drop_reason").to_pylist() == [None, None, None]


def test_prescreen_off_when_every_language_is_kept(templates: list[bytes]) -> None:
    foreign = localize(templates[0], lingua_sentences("zh"), random.Random(3)).decode()
    for overrides in ({"langid.languages": []}, {"langid.languages": None}, {"langid.prescreen": False}):
        config = load_config(overrides=overrides)
        names = [s.name for s in warc_stages(config)]
        assert "prescreen" not in names and names[:2] == ["url_filter", "extract"]
        assert PrescreenStage(config.langid)(_raw([foreign])).column("drop_reason").to_pylist() == [None]
    assert [s.name for s in warc_stages(RunConfig())][:4] == ["url_filter", "prescreen", "extract", "langid"]
    stage = pickle.loads(pickle.dumps(build_stage("prescreen", RunConfig())))  # engines ship stages to workers
    assert stage(_raw([foreign])).column("drop_reason").to_pylist() == ["langid"]


def test_prescreen_never_skips_a_real_page_the_full_chain_keeps() -> None:
    """On every HTML page of the real WARC samples: the pages the pre-screen skips (the Chinese, Russian, Dutch...
    ones) are pages the full chain without the pre-screen drops too."""
    config = RunConfig()
    prescreen = build_stage("prescreen", config)
    plain = RunConfig()
    plain.langid.prescreen = False
    full_chain = warc_stages(plain)
    assert "prescreen" not in [s.name for s in full_chain]
    skipped: list[pa.Table] = []
    pages = 0
    for path in sorted((REALDATA / "warc_samples").glob("*.warc.gz")):
        for batch in read_warc(path, dump="test", warc_path=path.name, counters=Counter(), batch_size=500):
            pages += batch.num_rows
            _, rejected = run_chain([prescreen], batch, PartStats(part="t", inputs=[]))
            skipped += [t.drop_columns(["drop_reason", "drop_stage"]) for t in rejected]
    skipped_pages = pa.concat_tables(skipped) if skipped else _raw([])
    assert pages > 150 and 5 <= skipped_pages.num_rows <= pages // 5
    kept, _ = run_chain(full_chain, skipped_pages, PartStats(part="t", inputs=[]))
    assert kept.num_rows == 0, f"false skips: {kept.column('url').to_pylist()}"


def test_prescreen_never_skips_a_real_html_page_the_full_chain_keeps() -> None:
    """Every real HTML page (the extraction benchmarks' pages in many languages, the WARC samples' responses):
    the full chain without the pre-screen keeps none of the pages the pre-screen skips."""
    pages = [page.decode("utf-8", "replace") for page in real_pages()]
    reasons = build_stage("prescreen", RunConfig())(_raw(pages)).column("drop_reason").to_pylist()
    skipped = [page for page, reason in zip(pages, reasons, strict=True) if reason]
    assert len(pages) > 500 and 50 <= len(skipped) < len(pages) // 2
    plain = RunConfig()
    plain.langid.prescreen = False
    kept, _ = run_chain(warc_stages(plain), _raw(skipped), PartStats(part="t", inputs=[]))
    assert kept.num_rows == 0, f"false skips: {kept.column('url').to_pylist()}"
