"""``extraction.backend: resiliparse`` (DCLM-Baseline's extractor) on real pages: the article kept, navigation and
footers dropped, and the same limits and drop reasons as the trafilatura backend."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import lxml.html
import pytest
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

import pipeline.stages.extraction as extraction
from pipeline.core.schema import DROP_REASON
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats
from pipeline.sources.warc import decode_html
from pipeline.stages.config import ExtractionConfig
from pipeline.stages.extraction import RESILIPARSE_OPTIONS, ExtractStage
from tests.pages import norm, raw_table, words

RESILIPARSE = ExtractionConfig(backend="resiliparse")


@pytest.fixture(scope="module")
def aeb(realdata: Path) -> list[tuple[str, str, str]]:
    """The first 12 AEB pages, decoded as the WARC reader decodes them: (url, html, ground-truth articleBody)."""
    folder = realdata / "extraction_aeb"
    truth = json.loads((folder / "ground-truth.json").read_text())
    pages = []
    for key in sorted(truth)[:12]:
        html = decode_html(gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes()), "text/html")[0]
        pages.append((truth[key]["url"], html, truth[key]["articleBody"]))
    return pages


def navigation_links(html: str) -> set[str]:
    tree = lxml.html.fromstring(html)
    return {norm(a.text_content()) for a in tree.xpath("//nav//a | //footer//a | //header//a")}


def leaked_links(html: str, truth: str, text: str) -> list[str]:
    """Link texts of the page's nav/header/footer (not in the article) that the extraction kept."""
    return [b for b in navigation_links(html) if 12 < len(b) < 80 and b not in truth and b in text]


def test_aeb_pages_keep_the_article_and_drop_boilerplate(aeb: list[tuple[str, str, str]]) -> None:
    out = ExtractStage(RESILIPARSE)(raw_table([html for _, html, _ in aeb]))
    assert out.column(DROP_REASON).null_count == len(aeb)
    texts = out.column("text").to_pylist()
    found = leaked = leaked_all_text = 0
    for (url, html, truth), text in zip(aeb, texts, strict=True):
        assert text == text.strip() and len(text) > 500, url
        longest = max(re.split(r"(?<=[.!?])\s+", truth), key=len)
        found += norm(longest) in norm(text)
        ours, theirs = words(text), words(truth)
        overlap = sum((ours & theirs).values())
        assert overlap / sum(theirs.values()) > 0.6, f"{url}: article text missing"
        assert overlap / sum(ours.values()) > 0.6, f"{url}: too much text that is not the article"
        leaked += len(leaked_links(html, truth, text))
        everything = extract_plain_text(HTMLTree.parse(html), **{**RESILIPARSE_OPTIONS, "main_content": False})
        leaked_all_text += len(leaked_links(html, truth, everything))
    assert found >= 11
    # main-content extraction is what drops the menus: all visible text keeps many times more of them
    assert leaked <= 3 and leaked_all_text >= 10 * max(leaked, 1), (leaked, leaked_all_text)


def test_trafilatura_eval_pages_keep_must_have_snippets(realdata: Path) -> None:
    folder = realdata / "extraction_trafilatura_eval"
    data = json.loads((folder / "evaldata.json").read_text())
    items = [data[url] for url in sorted(data) if (folder / "html" / f"{data[url]['file']}.gz").exists()][:40]
    htmls = [decode_html(gzip.decompress((folder / "html" / f"{i['file']}.gz").read_bytes()), None)[0] for i in items]
    texts = ExtractStage(RESILIPARSE)(raw_table(htmls)).column("text").to_pylist()
    with_found = sum(s in (t or "") for i, t in zip(items, texts, strict=True) for s in i["with"])
    without_kept = sum(s in (t or "") for i, t in zip(items, texts, strict=True) for s in i["without"])
    with_total = sum(len(i["with"]) for i in items)
    without_total = sum(len(i["without"]) for i in items)
    assert with_found / with_total > 0.8
    assert without_kept / without_total < 0.5


def test_default_backend_is_still_trafilatura(aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    monkeypatch.setattr(extraction, "extract_text_resiliparse", lambda html: called.append(html) or "x")
    assert ExtractionConfig().backend == "trafilatura"
    default = ExtractStage()(raw_table([aeb[0][1]])).column("text")[0].as_py()
    assert not called and len(default) > 500
    assert ExtractStage(RESILIPARSE)(raw_table([aeb[0][1]])).column("text")[0].as_py() == "x"
    assert called == [aeb[0][1]]  # the same str the trafilatura path gets


def test_limits_and_drop_reasons_apply(aeb: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """too_large (before parsing), timeout, error, empty and min_text_chars, as for trafilatura."""
    real = extraction.extract_text_resiliparse
    parsed: list[int] = []

    def extract(html: str) -> str:
        parsed.append(len(html))
        if "PATHOLOGICAL" in html:
            deadline = time.monotonic() + 30  # burns CPU: the limit is CPU time
            while time.monotonic() < deadline:
                sum(range(1000))
        if "BROKEN" in html:
            raise ValueError("cannot parse")
        return real(html)

    monkeypatch.setattr(extraction, "extract_text_resiliparse", extract)
    huge = "<html><body><p>" + "lorem ipsum dolor sit amet " * 100_000 + "</p></body></html>"
    pages = [
        aeb[0][1],
        huge,
        "<html><!-- PATHOLOGICAL --><body><p>x</p></body></html>",
        "<html><!-- BROKEN --></html>",
        "<html><body><nav><a href='/'>Home</a></nav></body></html>",
        None,
        aeb[1][1],
    ]
    config = RESILIPARSE.model_copy(update={"max_html_bytes": 1_000_000, "timeout_s": 0.3})
    start = time.perf_counter()
    out = ExtractStage(config)(raw_table(pages))
    assert time.perf_counter() - start < 10
    assert out.column(DROP_REASON).to_pylist() == [None, "too_large", "timeout", "error", "empty", "empty", None]
    assert len(huge) not in parsed
    length = len(out.column("text")[0].as_py())
    short = RESILIPARSE.model_copy(update={"min_text_chars": length + 1})
    stats = PartStats(part="p")
    kept, _ = run_chain([ExtractStage(short)], raw_table([aeb[0][1]]), stats)
    assert kept.num_rows == 0 and dict(stats.stage("extract").drops) == {"extract:empty": 1}


def test_run_with_the_resiliparse_backend(tmp_path: Path, mirror_url: str) -> None:
    """A WARC pass over the sample crawl from the CLI with ``--extractor resiliparse``: documents out, backend
    recorded in the run's config.yaml."""
    import pyarrow.parquet as pq
    import yaml
    from typer.testing import CliRunner

    from pipeline.app.cli import app
    from pipeline.app.config import SAMPLE_DUMP

    args = ["run", "--cc-base-url", mirror_url, "--dump", SAMPLE_DUMP, "--limit-warcs", "1", "-o", str(tmp_path)]
    args += ["--name", "resili", "--extractor", "resiliparse", "--no-progress"]
    args += ["--set", "tokenize=false", "--set", "report=false", "--set", "dedup.exact=false"]
    args += ["--set", "dedup.minhash.enabled=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "resili"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["extraction"]["backend"] == "resiliparse"
    texts = pq.read_table(run_dir / "documents").column("text").to_pylist()
    assert len(texts) >= 5 and all(len(t) >= 100 for t in texts)
