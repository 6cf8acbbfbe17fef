"""fast_trafilatura returns exactly what trafilatura.extract returns, on every real HTML page we have.

Pages: every HTML response record of the WARC samples (the HTTP 200 ones as ``read_warc`` hands them to the
extraction stage, the others -- redirects, 404 pages -- decoded the same way) and every page of the three
extraction benchmarks (AEB, trafilatura's evaluation set, Mozilla Readability's test pages): 670 pages.
All of them go through both extractors with the stage's options and one deduplication cache per side shared
across the pages in order (the cache changes the output of later pages, so order and calls must match).
Variants (precision off, tables off, fast, recall) run on every 20th page; ``FAST_TRAFILATURA_ALL=1`` runs
them on all pages.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
import trafilatura
from fastwarc.warc import ArchiveIterator, WarcRecordType
from trafilatura import xpaths
from trafilatura.deduplication import LRUCache
from trafilatura.settings import LRU_SIZE, Extractor

from pipeline.sources.warc import decode_html, read_warc
from pipeline.stages import fast_trafilatura
from pipeline.stages.extraction import ExtractStage


def real_html_pages(realdata: Path) -> list[tuple[str, str]]:
    """``(source, html)`` for every real HTML page in ``realdata``, in a fixed order."""
    pages: list[tuple[str, str]] = []
    for warc in sorted((realdata / "warc_samples").glob("*.warc.gz")):
        for batch in read_warc(warc, dump="test", warc_path=warc.name, counters=Counter()):
            if hasattr(batch, "column"):
                pages += [(warc.name, html) for html in batch.column("html").to_pylist()]
        with open(warc, "rb") as f:  # the HTML responses read_warc does not select (status other than 200)
            records = ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True)
            try:
                for record in records:
                    headers = record.http_headers
                    content_type = (headers.get("Content-Type") or "") if headers is not None else ""
                    if headers is not None and headers.status_code != 200 and "html" in content_type.lower():
                        html = decode_html(record.reader.read(), content_type)[0]
                        pages.append((f"{warc.name}:{headers.status_code}", html))
            except Exception:  # noqa: S110 - a truncated file ends here, as for read_warc
                pass
    for folder in ("extraction_aeb/html", "extraction_trafilatura_eval/html"):
        for path in sorted((realdata / folder).glob("*.gz")):
            pages.append((f"{folder}/{path.name}", decode_html(gzip.decompress(path.read_bytes()), None)[0]))
    for path in sorted((realdata / "extraction_readability").glob("*/source.html.gz")):
        pages.append((f"readability/{path.parent.name}", decode_html(gzip.decompress(path.read_bytes()), None)[0]))
    return pages


@pytest.fixture(scope="module")
def pages(realdata: Path) -> list[tuple[str, str]]:
    found = real_html_pages(realdata)
    assert len(found) >= 650, len(found)
    return found


def assert_same_output(pages: list[tuple[str, str]], make_options) -> int:  # noqa: ANN001 - () -> Extractor
    """Both extractors over ``pages`` in order, each with its own options (and cache); returns pages with text."""
    theirs, ours = make_options(), make_options()
    differ = []
    with_text = 0
    for source, html in pages:
        expected = trafilatura.extract(html, options=theirs)
        got = fast_trafilatura.extract(html, options=ours)
        if got != expected:
            differ.append(source)
        with_text += expected is not None
    assert not differ, f"{len(differ)} of {len(pages)} pages differ: {differ[:10]}"
    return with_text


def test_same_text_as_trafilatura_with_the_stages_options_on_every_real_page(pages) -> None:  # noqa: ANN001
    assert fast_trafilatura.ENABLED, f"trafilatura {trafilatura.__version__} is not the mirrored version"
    stage = ExtractStage()
    assert isinstance(stage.options().dedup, LRUCache)  # a cache shared by all pages, as in a batch
    with_text = assert_same_output(pages, stage.options)
    assert with_text > 500  # most pages do give text: the comparison is not between two Nones


VARIANTS = {
    "balanced": {"precision": False},
    "no_tables": {"tables": False},
    "fast": {"fast": True},
    "recall": {"recall": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_text_as_trafilatura_with_other_settings(pages, variant: str) -> None:  # noqa: ANN001
    settings = {"output_format": "txt", "fast": False, "precision": True, "comments": False, "tables": True}
    settings.update(VARIANTS[variant])
    subset = pages if os.environ.get("FAST_TRAFILATURA_ALL") else pages[::20]
    assert_same_output(subset, lambda: Extractor(**settings, dedup=LRUCache(maxsize=LRU_SIZE)))


def _xpath_matches(tree, expressions) -> set:  # noqa: ANN001
    return {elem for expression in expressions for elem in expression(tree)}


def test_each_rule_matches_the_elements_its_xpath_matches(pages) -> None:  # noqa: ANN001
    """The rules in Python select the same elements as trafilatura's XPath lists, on real trees, raw and converted."""
    ft = fast_trafilatura
    checks = {
        "OVERALL_DISCARD_XPATH": (xpaths.OVERALL_DISCARD_XPATH, ft.OV0 | ft.OV1),
        "REMOVE_COMMENTS_XPATH": (xpaths.REMOVE_COMMENTS_XPATH, ft.COMMENTS),
        "REMOVE_COMMENTS_AND_LISTS_XPATH": (xpaths.REMOVE_COMMENTS_AND_LISTS_XPATH, ft.COMMENT_LISTS),
        "TEASER_DISCARD_XPATH": (xpaths.TEASER_DISCARD_XPATH, ft.TEASER),
        "PRECISION_DISCARD_XPATH": (xpaths.PRECISION_DISCARD_XPATH, ft.PRECISION),
        "DISCARD_IMAGE_ELEMENTS": (xpaths.DISCARD_IMAGE_ELEMENTS, ft.CAPTION),
    }
    options = ExtractStage().options()
    matched = Counter()
    for _, html in pages[::15]:
        raw = ft._load_html(html, None)
        if raw is None:
            continue
        converted = ft.convert_tags(ft.tree_cleaning(ft.copy(raw), options), options)  # item/list tags
        for tree in (raw, converted):
            elements = list(tree.iterdescendants(ft.Element))
            for name, (expressions, rule) in checks.items():
                ours = {elem for elem in elements if ft._flags(elem) & rule}
                assert ours == _xpath_matches(tree, expressions), name
                matched[name] += len(ours)
            raw_rule = {
                e for e in elements if ft._flags(e) & ft.RAW or ft._flags(e) & ft.RAW_ANY_H1 and e.find(".//h1") is None
            }
            assert raw_rule == _xpath_matches(tree, xpaths.RAW_TREE_PRUNE_XPATH), "RAW_TREE_PRUNE_XPATH"
            matched["RAW_TREE_PRUNE_XPATH"] += len(raw_rule)
            for i, rule in ((0, ft.BODY0), (2, ft.BODY2), (3, ft.BODY3)):
                first = next((s for s in xpaths.BODY_XPATH[i](tree) if s is not None), None)
                assert ft._first_body(tree, rule) is first, f"BODY_XPATH[{i}]"
    assert all(matched[name] > 0 for name in checks), matched  # every rule list is exercised


def test_another_trafilatura_version_falls_back_to_trafilatura(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, pages
) -> None:  # noqa: ANN001
    monkeypatch.setattr(trafilatura, "__version__", "0.0.1")
    try:
        with caplog.at_level(logging.WARNING, logger=fast_trafilatura.__name__):
            module = importlib.reload(fast_trafilatura)
        assert not module.ENABLED
        assert "using plain trafilatura.extract" in caplog.text
        html = pages[0][1]
        options = ExtractStage().options()
        assert module.extract(html, options) == trafilatura.extract(html, options=ExtractStage().options())
    finally:
        monkeypatch.undo()
        importlib.reload(fast_trafilatura)
    assert fast_trafilatura.ENABLED
