"""Quality filters: the same decisions, reasons and C4 text as datatrove's filters, on text from real pages.

The parity set is every page of the AEB, trafilatura-eval and Readability sets in ``shared/realdata``
through our extraction stage, plus the Common Crawl text samples. Each rule has a real failing and a real
passing document, found with only that rule switched on. Where no real text fails a rule, the failing
document is built from real text, and its builder says how (see CONSTRUCTED).
"""

from __future__ import annotations

import copy
import gzip
import importlib
import json
import pickle
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from lxml import html as lxml_html

from filters.base import FILTERS, MeasuredFilter, Rule, TextFilter, Threshold, register_filter
from filters.c4 import CITATION, C4Stage
from filters.config import (
    QUALITY_FILTER_ORDER,
    C4Config,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    QualityConfig,
)
from filters.fineweb import FineWebQualityStage
from filters.gopher import GopherQualityStage, GopherRepetitionStage
from filters.registry import BUILT_IN, build_filter, quality_stages, registered_filters
from filters.text import PUNCTUATION, SENTENCE_END_CHARS, TERMINAL_PUNCTUATION, count_sentences, split_words
from pipeline.core.profile import stage_signal_histograms
from pipeline.core.schema import RAW_SCHEMA, conform
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats
from pipeline.stages.extraction import ExtractStage

dt_filters = pytest.importorskip("datatrove.pipeline.filters")
pytest.importorskip("spacy", reason="datatrove splits English words with spaCy")
from datatrove.data import Document  # noqa: E402
from datatrove.utils.text import split_into_sentences, split_into_words  # noqa: E402

STAGES: dict[str, Callable[..., TextFilter]] = {
    "gopher_repetition": lambda **kw: GopherRepetitionStage(GopherRepetitionConfig(**kw)),
    "gopher_quality": lambda **kw: GopherQualityStage(GopherQualityConfig(**kw)),
    "c4": lambda **kw: C4Stage(C4Config(**kw)),
    "fineweb_quality": lambda **kw: FineWebQualityStage(FineWebQualityConfig(**kw)),
}


def datatrove_filter(stage: str, **kw: Any) -> Any:
    """datatrove's filter for our stage, with FineWeb's settings (C4 keeps unpunctuated lines)."""
    if stage == "gopher_repetition":
        return dt_filters.GopherRepetitionFilter(**kw)
    if stage == "gopher_quality":
        return dt_filters.GopherQualityFilter(**kw)
    if stage == "c4":
        return dt_filters.C4QualityFilter(**{"filter_no_terminal_punct": False, **kw})
    return dt_filters.FineWebQualityFilter(**kw)


def dt_decide(flt: Any, text: str) -> tuple[str | None, str]:
    """datatrove's (reason or None, text after the filter) for one text."""
    doc = Document(text=text, id="x")
    result = flt.filter(doc)
    return (None if result is True else result[1]), doc.text


def table_of(texts: list[str | None]) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string())})


def our_reasons(stage: TextFilter, texts: list[str]) -> tuple[list[str | None], list[str | None]]:
    out = stage(table_of(texts))
    return out.column("drop_reason").to_pylist(), out.column("text").to_pylist()


@dataclass
class Page:
    id: str
    text: str
    html: str | None = None


@pytest.fixture(scope="module")
def pages(realdata: Path) -> list[Page]:
    """Extracted text of every benchmark page (ExtractStage, FineWeb settings) plus the CC text samples."""
    raw: list[tuple[str, str]] = []
    for folder, pattern in (
        ("extraction_aeb/html", "*.html.gz"),
        ("extraction_trafilatura_eval/html", "*.gz"),
        ("extraction_readability", "*/source.html.gz"),
    ):
        for path in sorted((realdata / folder).glob(pattern)):
            name = path.parent.name if path.name == "source.html.gz" else path.name
            raw.append(
                (f"{folder.split('/')[0]}/{name}", gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
            )
    if not raw:
        pytest.skip(f"no benchmark pages under {realdata}")
    table = conform(
        pa.table({"id": [r[0] for r in raw], "url": [r[0] for r in raw], "html": [r[1] for r in raw]}), RAW_SCHEMA
    )
    out = ExtractStage()(table)
    html_by_id = dict(raw)
    result = [
        Page(i, t, html_by_id[i])
        for i, t, r in zip(out["id"].to_pylist(), out["text"].to_pylist(), out["drop_reason"].to_pylist(), strict=True)
        if r is None
    ]
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            result.extend(Page(f"{path.name}/{n}", json.loads(line)["text"]) for n, line in enumerate(lines))
    assert len(result) >= 400, f"only {len(result)} real documents"
    return result


@pytest.fixture(scope="module")
def texts(pages: list[Page]) -> list[str]:
    return [p.text for p in pages]


@dataclass
class Reference:
    reasons: dict[str, list[str | None]]
    c4_texts: list[str]
    words: list[list[str]]


@pytest.fixture(scope="module")
def reference(texts: list[str]) -> Reference:
    """datatrove's four filters with FineWeb's settings on every text (each filter sees every text)."""
    filters = {name: datatrove_filter(name) for name in STAGES}
    reasons: dict[str, list[str | None]] = {name: [] for name in STAGES}
    c4_texts, words = [], []
    for text in texts:
        # Same order as datatrove's own pipeline, so its word-split cache serves both Gopher filters and FineWeb.
        for name in ("gopher_repetition", "gopher_quality", "fineweb_quality"):
            reasons[name].append(dt_decide(filters[name], text)[0])
        words.append(split_into_words(text))
        reason, cleaned = dt_decide(filters["c4"], text)
        reasons["c4"].append(reason)
        c4_texts.append(cleaned)
    return Reference(reasons, c4_texts, words)


# --- parity on every real document -------------------------------------------------------------------


def test_word_split_matches_datatrove(texts: list[str], reference: Reference) -> None:
    differ = [i for i, text in enumerate(texts) if split_words(text) != reference.words[i]]
    for i in differ[:3]:
        ours, theirs = split_words(texts[i]), reference.words[i]
        at = next(k for k in range(min(len(ours), len(theirs)) + 1) if k == len(ours) or ours[k] != theirs[k])
        print(f"#{i}: ours {ours[at - 3 : at + 5]} datatrove {theirs[at - 3 : at + 5]}")
    assert not differ, f"{len(differ)} documents split differently, e.g. #{differ[:5]}"
    assert sum(map(len, reference.words)) > 300_000


def test_common_chunk_shapes_split_like_datatrove(texts: list[str]) -> None:
    """Words with a bracket, quote or punctuation attached (split without spaCy) are split as spaCy splits them."""
    cores = sorted({c.strip(",.;:!?)(\"'") for t in texts for c in t.split()})
    cores = [c for c in cores if c and (c.isalpha() or c.isdigit())][:4000]
    cores += ["cannot", "Mr", "etc", "A", "AfD", "e.g", "dont", "Ima", "s", "em", "10", "\u4e2d\u6587", "Stra\u00dfe"]
    chunks = [
        lead + core + trail for core in cores for lead in ("", "(", '"') for trail in ("", ",", ")", ".", "'", "?")
    ]
    for start in range(0, len(chunks), 5000):
        text = " ".join(chunks[start : start + 5000])
        assert split_words(text) == split_into_words(text)


@pytest.mark.parametrize("name", list(STAGES))
def test_same_decisions_and_reasons_as_datatrove(name: str, texts: list[str], reference: Reference) -> None:
    ours, _ = our_reasons(STAGES[name](), texts)
    expected = reference.reasons[name]
    differ = [(i, expected[i], ours[i]) for i in range(len(texts)) if ours[i] != expected[i]]
    assert not differ, f"{name}: {len(differ)} of {len(texts)} differ (index, datatrove, ours): {differ[:10]}"
    # The set is not trivially all-kept or all-dropped: several rules fire and most pages survive some filter.
    assert len({r for r in ours if r}) >= 3
    assert 0 < ours.count(None) < len(texts)


def test_c4_text_is_datatrove_text(texts: list[str], reference: Reference) -> None:
    reasons, cleaned = our_reasons(C4Stage(), texts)
    differ = [
        i for i, (r, t) in enumerate(zip(reasons, cleaned, strict=True)) if r is None and t != reference.c4_texts[i]
    ]
    assert not differ, f"C4 output differs on {len(differ)} documents, e.g. #{differ[:5]}"
    changed = sum(1 for i, r in enumerate(reasons) if r is None and cleaned[i] != texts[i])
    assert changed > 100, "line cleaning changed almost nothing: the parity check would prove little"
    dropped = [i for i, r in enumerate(reasons) if r is not None]
    assert dropped and all(cleaned[i] == texts[i] for i in dropped), "a dropped document keeps its text"


def test_c4_on_sentences_matches_datatrove(texts: list[str]) -> None:
    """C4 judging spaCy sentences instead of lines (not FineWeb's setting): same reasons and text."""
    sample = texts[::40]
    reference = datatrove_filter("c4", split_paragraph=False)
    reasons, cleaned = our_reasons(C4Stage(C4Config(split_paragraph=False)), sample)
    expected = [dt_decide(reference, text) for text in sample]
    assert reasons == [r for r, _ in expected]
    assert [t for t, r in zip(cleaned, reasons, strict=True) if r is None] == [t for r, t in expected if r is None]
    assert reasons.count(None) >= 3


def test_sentence_counts_match_datatrove(texts: list[str]) -> None:
    lines = [line.strip() for text in texts[::8] for line in text.splitlines() if len(line.split()) >= 3]
    lines += ["Hello.  World", "Hello.  . World", "Wait... what?! Yes. (No.) Ok", "e.g. this. U.S. that. A.B. c"]
    differ = [line for line in lines if count_sentences(line) != len(split_into_sentences(line))]
    assert not differ, f"{len(differ)} of {len(lines)} lines counted differently: {differ[:3]}"
    assert len(lines) > 500


def test_chain_matches_datatrove_pipeline(pages: list[Page]) -> None:
    """The four stages through run_chain = datatrove's filters one after the other (C4 text feeding FineWeb)."""
    sample = pages[::8]
    filters = [datatrove_filter(name) for name in STAGES]
    expected_kept: dict[str, str] = {}
    expected_drops: dict[str, int] = {}
    for page in sample:
        text = page.text
        for name, flt in zip(STAGES, filters, strict=True):
            reason, text = dt_decide(flt, text)
            if reason is not None:
                key = f"{name}:{reason}"
                expected_drops[key] = expected_drops.get(key, 0) + 1
                break
        else:
            expected_kept[page.id] = text

    table = pa.table({"id": [p.id for p in sample], "url": [p.id for p in sample], "text": [p.text for p in sample]})
    stats = PartStats("p")
    kept, rejected = run_chain(quality_stages(), table, stats)
    assert dict(zip(kept["id"].to_pylist(), kept["text"].to_pylist(), strict=True)) == expected_kept
    assert {k: v for s in stats.stages for k, v in s.drops.items()} == expected_drops
    assert [s.name for s in stats.stages] == list(STAGES)
    assert sum(r.num_rows for r in rejected) == len(sample) - len(expected_kept)
    original = {p.id: p.text for p in sample}
    for batch in rejected:  # rejected rows keep the text the rule judged, with stage and rule
        for row in batch.to_pylist():
            assert row["drop_stage"] in STAGES and row["drop_reason"]
            if row["drop_stage"] != "fineweb_quality":
                assert row["text"] == original[row["id"]]


# --- every rule: a real failing and a real passing document, that rule alone switched on -------------

REP_OFF: dict[str, Any] = {
    "dup_line_frac": None,
    "dup_para_frac": None,
    "dup_line_char_frac": None,
    "dup_para_char_frac": None,
    "top_n_grams": (),
    "dup_n_grams": (),
}
QUAL_OFF: dict[str, Any] = dict.fromkeys(
    [
        "min_doc_words",
        "max_doc_words",
        "min_avg_word_length",
        "max_avg_word_length",
        "max_symbol_word_ratio",
        "max_bullet_lines_ratio",
        "max_ellipsis_lines_ratio",
        "max_non_alpha_words_ratio",
        "min_stop_words",
    ]
)
C4_DOC_RULES_OFF: dict[str, Any] = {"filter_lorem_ipsum": False, "filter_curly_bracket": False, "min_num_sentences": -1}
FW_OFF: dict[str, Any] = {
    "line_punct_thr": 0.0,
    "short_line_thr": 1.0,
    "char_duplicates_ratio": 1.0,
    "new_line_ratio": 1e9,
}

TOP_N_GRAMS = GopherRepetitionConfig().top_n_grams
DUP_N_GRAMS = GopherRepetitionConfig().dup_n_grams
RULES: dict[str, tuple[str, dict[str, Any]]] = {
    "dup_para_frac": ("gopher_repetition", {**REP_OFF, "dup_para_frac": 0.3}),
    "dup_para_char_frac": ("gopher_repetition", {**REP_OFF, "dup_para_char_frac": 0.2}),
    "dup_line_frac": ("gopher_repetition", {**REP_OFF, "dup_line_frac": 0.3}),
    "dup_line_char_frac": ("gopher_repetition", {**REP_OFF, "dup_line_char_frac": 0.2}),
    **{f"top_{n}_gram": ("gopher_repetition", {**REP_OFF, "top_n_grams": ((n, f),)}) for n, f in TOP_N_GRAMS},
    **{f"duplicated_{n}_n_grams": ("gopher_repetition", {**REP_OFF, "dup_n_grams": ((n, f),)}) for n, f in DUP_N_GRAMS},
    "gopher_short_doc": ("gopher_quality", {**QUAL_OFF, "min_doc_words": 50}),
    "gopher_long_doc": ("gopher_quality", {**QUAL_OFF, "max_doc_words": 100_000}),
    "gopher_below_avg_threshold": ("gopher_quality", {**QUAL_OFF, "min_avg_word_length": 3}),
    "gopher_above_avg_threshold": ("gopher_quality", {**QUAL_OFF, "max_avg_word_length": 10}),
    "gopher_too_many_hashes": ("gopher_quality", {**QUAL_OFF, "max_symbol_word_ratio": 0.1}),
    "gopher_too_many_ellipsis": ("gopher_quality", {**QUAL_OFF, "max_symbol_word_ratio": 0.1}),
    "gopher_too_many_bullets": ("gopher_quality", {**QUAL_OFF, "max_bullet_lines_ratio": 0.9}),
    "gopher_too_many_end_ellipsis": ("gopher_quality", {**QUAL_OFF, "max_ellipsis_lines_ratio": 0.3}),
    "gopher_below_alpha_threshold": ("gopher_quality", {**QUAL_OFF, "max_non_alpha_words_ratio": 0.8}),
    "gopher_enough_stop_words": ("gopher_quality", {**QUAL_OFF, "min_stop_words": 2}),
    "lorem_ipsum": ("c4", {**C4_DOC_RULES_OFF, "filter_lorem_ipsum": True}),
    "curly_bracket": ("c4", {**C4_DOC_RULES_OFF, "filter_curly_bracket": True}),
    "too_few_sentences": ("c4", {**C4_DOC_RULES_OFF, "min_num_sentences": 5}),
    "line_punct_ratio": ("fineweb_quality", {**FW_OFF, "line_punct_thr": 0.12}),
    "short_line_ratio": ("fineweb_quality", {**FW_OFF, "short_line_thr": 0.67}),
    "char_dup_ratio": ("fineweb_quality", {**FW_OFF, "char_duplicates_ratio": 0.01}),
    "list_ratio": ("fineweb_quality", {**FW_OFF, "new_line_ratio": 0.3}),
}
"""Rule -> (stage, settings with only that rule on, at FineWeb's threshold)."""


def _english(pages: list[Page]) -> list[Page]:
    return [p for p in pages if p.id.startswith(("extraction_aeb", "cc_"))]


def _paragraphs_repeated(pages: list[Page]) -> str:
    """A real article's lines as blank-line-separated paragraphs, its first half repeated at the end."""
    lines = next(p.text.splitlines() for p in _english(pages) if len(p.text.splitlines()) >= 12)
    return "\n\n".join(lines + lines[: len(lines) // 2])


def _long_document(pages: list[Page]) -> str:
    """Real texts one after the other until past 100,000 words."""
    parts, words = [], 0
    for page in pages:
        parts.append(page.text)
        words += len(page.text.split())
        if words > 110_000:
            break
    return "\n".join(parts)


def _hashtags(pages: list[Page]) -> str:
    """A real article where every fourth word became a hashtag (as on tag-spam pages)."""
    words = _english(pages)[0].text.split()
    return " ".join("#" + w if i % 4 == 0 else w for i, w in enumerate(words))


def _bulleted(pages: list[Page]) -> str:
    """A real article with every line turned into a bullet point."""
    return "\n".join("\u2022 " + line for line in _english(pages)[0].text.splitlines())


CONSTRUCTED: dict[str, Callable[[list[Page]], str]] = {
    "dup_para_frac": _paragraphs_repeated,
    "dup_para_char_frac": _paragraphs_repeated,
    "gopher_long_doc": _long_document,
    "gopher_too_many_hashes": _hashtags,
    "gopher_too_many_bullets": _bulleted,
}
"""Rules no extracted real page fails (trafilatura separates paragraphs by single newlines, and no page is
that long or that full of hashtags or bullets): the failing document is built from real text as described."""


@pytest.fixture(scope="module")
def rule_examples(pages: list[Page]) -> dict[str, tuple[str, str, bool]]:
    """Rule -> (failing text, passing text, failing text is real); picked with our stages, checked below."""
    examples = {}
    texts = [p.text for p in pages]
    signals = {name: STAGES[name]().signals(texts) for name in STAGES}
    for rule, (stage_name, settings) in RULES.items():
        stage = STAGES[stage_name](**settings)
        threshold = next((t for t in stage.thresholds() if t.rule == rule), None)
        if threshold is None:  # C4's document rules: decide
            reasons, _ = our_reasons(stage, texts)
            failing = [i for i, r in enumerate(reasons) if r == rule]
            passing = [i for i, r in enumerate(reasons) if r is None]
            pass_text = texts[passing[0]]
        else:  # measured rules: the signal against the threshold, and a near miss as the passing example
            values = signals[stage_name][threshold.signal].tolist()
            crosses = [v < threshold.value if threshold.op == "<" else v > threshold.value for v in values]
            failing = [i for i, c in enumerate(crosses) if c]
            near = sorted(
                (abs(v - threshold.value), i)
                for i, (v, c) in enumerate(zip(values, crosses, strict=True))
                if v == v and not c
            )
            pass_text = texts[near[0][1]]
        if failing:
            examples[rule] = (texts[failing[0]], pass_text, True)
        else:
            assert rule in CONSTRUCTED, f"no real document fails {rule} and no builder for one"
            examples[rule] = (CONSTRUCTED[rule](pages), pass_text, False)
    return examples


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_fails_and_passes_like_datatrove(rule: str, rule_examples: dict[str, tuple[str, str, bool]]) -> None:
    stage_name, settings = RULES[rule]
    failing, passing, real = rule_examples[rule]
    ours, _ = our_reasons(STAGES[stage_name](**settings), [failing, passing])
    reference = datatrove_filter(stage_name, **settings)
    assert ours == [rule, None]
    assert [dt_decide(reference, failing)[0], dt_decide(reference, passing)[0]] == [rule, None]
    assert real or rule in CONSTRUCTED


def test_constructed_rules_are_the_documented_ones(rule_examples: dict[str, tuple[str, str, bool]]) -> None:
    constructed = {rule for rule, (_, _, real) in rule_examples.items() if not real}
    assert constructed <= set(CONSTRUCTED)
    assert len(constructed) <= 5, "most rules must have a real failing document"


def _cookie_banner(page: Page) -> str | None:
    """The page's own cookie notice (trafilatura leaves it out of the text), from its HTML."""
    tree = lxml_html.fromstring(page.html or "<p></p>")
    for node in tree.xpath("//text()"):
        line = " ".join(str(node).split())
        if "uses cookies" in line.lower() and len(line.split()) >= 5:
            return line
    return None


def test_c4_line_rules_on_real_lines(pages: list[Page]) -> None:
    """Each line rule removes (or cuts) a real line, and the result is datatrove's text exactly."""
    english = _english(pages)
    banner_page, banner = next((p, b) for p in pages if p.html and (b := _cookie_banner(p)))
    data_url = next(m.group(1) for p in pages if p.html and (m := re.search(r'src="(data:[^"]{1001,})"', p.html)))
    javascript = next(
        p for p in pages if any("javascript" in ln.lower() and len(ln.split()) >= 3 for ln in p.text.splitlines())
    )
    cited = next(p for p in pages if any(CITATION.search(ln) and len(ln.split()) >= 3 for ln in p.text.splitlines()))
    cases = {
        "policy": (banner_page.text + "\n" + banner, banner),
        "too long word": (english[0].text + "\nSee the picture " + data_url + " here.", data_url),
        "javascript": (javascript.text, None),
        "citation": (cited.text, None),
    }
    reference = datatrove_filter("c4", **C4_DOC_RULES_OFF)
    stage = C4Stage(C4Config(**C4_DOC_RULES_OFF))
    for case, (text, gone) in cases.items():
        (reason,), (cleaned,) = our_reasons(stage, [text])
        assert reason is None
        assert cleaned == dt_decide(reference, text)[1], case
        if gone is not None:
            assert gone in text and gone not in cleaned, case
    assert not any("javascript" in ln.lower() for ln in our_reasons(stage, [javascript.text])[1][0].splitlines())
    assert not CITATION.search(our_reasons(stage, [cited.text])[1][0])


# --- configuration, contract, registry ----------------------------------------------------------------


def test_thresholds_change_decisions(pages: list[Page]) -> None:
    texts = [p.text for p in pages]
    default, _ = our_reasons(GopherQualityStage(), texts)
    short = default.index("gopher_short_doc")
    lenient, _ = our_reasons(GopherQualityStage(GopherQualityConfig(min_doc_words=1)), [texts[short]])
    assert lenient[0] != "gopher_short_doc"
    fineweb, _ = our_reasons(FineWebQualityStage(), texts)
    strict, _ = our_reasons(FineWebQualityStage(FineWebQualityConfig(line_punct_thr=0.99)), texts)
    assert strict.count("line_punct_ratio") > fineweb.count("line_punct_ratio") + 50
    off, _ = our_reasons(
        C4Stage(C4Config(min_num_sentences=-1, filter_lorem_ipsum=False, filter_curly_bracket=False)), texts
    )
    assert off == [None] * len(texts)
    c4_default, _ = our_reasons(C4Stage(), texts)
    assert "lorem_ipsum" in c4_default and "too_few_sentences" in c4_default


def test_signals_and_thresholds_agree_with_decisions(texts: list[str]) -> None:
    """For the measured stages, the first threshold a document's signals cross is the rule that drops it."""
    for stage in (GopherRepetitionStage(), GopherQualityStage(), FineWebQualityStage()):
        signals = stage.signals(texts)
        assert list(signals) == stage.signal_names()
        assert all(v.dtype.name == "float32" and len(v) == len(texts) for v in signals.values())
        reasons, _ = our_reasons(stage, texts)
        for i, reason in enumerate(reasons):
            crossed = [
                t.rule
                for t in stage.thresholds()
                if (signals[t.signal][i] < t.value if t.op == "<" else signals[t.signal][i] > t.value)
            ]
            if reason is None:
                assert not crossed, (stage.name, i, crossed)
            else:  # float32 rounding can only matter on an exact tie; none on this set
                assert crossed and crossed[0] == reason, (stage.name, i, reason, crossed)
    assert [t.value for t in GopherRepetitionStage().thresholds()][:4] == [0.3, 0.2, 0.3, 0.2]


def measure_to_the_end(stage: MeasuredFilter, texts: list[str]) -> dict[str, np.ndarray]:
    """Every signal of every text from ``measure`` alone (no decision), the way the report measured them before
    a chain measured once."""
    names = stage.signal_names()
    values = {name: np.full(len(texts), np.nan, dtype=np.float32) for name in names}
    for row, text in enumerate(texts):
        for item in stage.measure(text):
            if isinstance(item, tuple) and item[0] in values:
                values[item[0]][row] = item[1]
    return values


def test_the_chain_decides_and_measures_once_as_the_stage_and_a_second_measurement_would(texts: list[str]) -> None:
    """In a chain a measured filter decides and measures each text in one go (``filter_with_signals``): the
    same drops as the stage called alone (datatrove's, above), the same histograms as measuring again after it."""
    table = table_of(texts)
    for stage in (GopherRepetitionStage(), GopherQualityStage(), FineWebQualityStage()):
        alone = stage(table)
        once, measured = stage.filter_with_signals(table)
        assert once.column("drop_reason").to_pylist() == alone.column("drop_reason").to_pylist() == stage.reasons(texts)
        assert once.column("drop_reason").null_count not in (0, len(texts)), stage.name
        stats = PartStats(part="p")
        kept, rejected = run_chain([stage], table, stats)
        reasons = alone.column("drop_reason").to_pylist()
        assert kept.column("id").to_pylist() == [f"d{i}" for i, r in enumerate(reasons) if r is None]
        assert sum(t.num_rows for t in rejected) == len(texts) - kept.num_rows
        again = stage_signal_histograms(stage, table, alone, measure_to_the_end(stage, texts))  # a second pass
        assert {k: v.to_json() for k, v in stats.profile.signals.items()} == {k: v.to_json() for k, v in again.items()}
        assert set(measured) == set(again) == set(stage.signal_names())


def test_a_measured_filter_that_decides_its_own_way_keeps_it_in_a_chain() -> None:
    """A subclass overriding ``__call__`` (or ``reasons``/``signals``) is called as written in a chain, not judged
    from ``measure`` alone: its drops and its signals reach the stats."""

    @dataclass
    class Stricter(GopherQualityStage):
        def reasons(self, texts: list[str]) -> list[str | None]:
            return [
                r or ("odd_length" if len(t) % 2 else None) for t, r in zip(texts, super().reasons(texts), strict=True)
            ]

    texts = ["apple banana cherry " * 30 + "the and of", "apple banana cherry " * 30 + "the and of" + "s"]
    stage = Stricter()
    expected = stage.reasons(texts)
    assert expected.count("odd_length") == 1
    stats = PartStats(part="p")
    kept, _ = run_chain([stage], table_of(texts), stats)
    assert kept.num_rows == expected.count(None)
    assert dict(stats.stage(stage.name).drops) == {f"{stage.name}:odd_length": 1}
    assert set(stats.profile.signals) == set(stage.signal_names())


def test_defaults_are_fineweb_recipe() -> None:
    config = QualityConfig()
    assert config.filters == ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality")
    assert config.c4.filter_no_terminal_punct is False
    for ours, theirs in (
        (config.gopher_repetition, dt_filters.GopherRepetitionFilter()),
        (config.gopher_quality, dt_filters.GopherQualityFilter()),
        (config.c4, dt_filters.C4QualityFilter(filter_no_terminal_punct=False)),
    ):
        for key, value in ours.model_dump(exclude={"enabled", "language", "stop_words"}).items():
            assert getattr(theirs, key) == value, key
    fw = dt_filters.FineWebQualityFilter()
    assert (config.fineweb_quality.line_punct_thr, config.fineweb_quality.short_line_thr) == (
        fw.line_punct_thr,
        fw.short_line_threshold,
    )
    assert config.fineweb_quality.char_duplicates_ratio == fw.char_duplicates_ratio
    assert config.fineweb_quality.new_line_ratio == fw.new_line_ratio
    from datatrove.utils import text as dt_text
    from spacy.pipeline import Sentencizer

    assert PUNCTUATION == dt_text.PUNCTUATION and TERMINAL_PUNCTUATION == dt_text.TERMINAL_PUNCTUATION
    assert set(Sentencizer.default_punct_chars) == SENTENCE_END_CHARS


def test_stages_pickle_small_and_survive_bad_text() -> None:
    bad = [
        None,
        "",
        "\n\n \n",
        "\ufffd\ufffd broken bytes \u200b\u2028 and more words here.",
        "x" * 200_000,
        "\x00\x01 {} " * 50,
    ]
    for stage in quality_stages():
        clone = pickle.loads(pickle.dumps(stage))
        assert len(pickle.dumps(stage)) < 4_000 and clone.config == stage.config
        out = clone(table_of(bad))
        reasons = out.column("drop_reason").to_pylist()
        assert out.num_rows == len(bad) and all(reasons[:2]), (stage.name, reasons)
    with pytest.raises(ValueError, match="needs a 'text' column"):
        GopherQualityStage()(pa.table({"id": ["a"]}))


def test_rules_declare_thresholds_signals_and_names() -> None:
    """Thresholds, signals and names come from the declarations: a rule's field, its ``off`` values, n pairs."""
    assert [f.name for f in BUILT_IN] == list(QUALITY_FILTER_ORDER) == list(registered_filters()[:4])
    assert all(FILTERS[f.name].factory is f for f in BUILT_IN)
    rules = {t.rule: t for t in GopherQualityStage().thresholds()}
    assert rules["gopher_too_many_ellipsis"] == Threshold("gopher_too_many_ellipsis", "ellipsis_word_ratio", ">", 0.1)
    off = GopherQualityStage(GopherQualityConfig(min_doc_words=0, max_doc_words=None))
    assert "gopher_short_doc" not in {t.rule for t in off.thresholds()} and "gopher_words" in off.signal_names()
    assert off.reason("") == "gopher_short_doc"  # no word at all: dropped whatever the thresholds
    at_zero = FineWebQualityStage(FineWebQualityConfig(char_duplicates_ratio=0.0)).thresholds()
    assert Threshold("char_dup_ratio", "char_dup_ratio", ">", 0.0) in at_zero  # datatrove applies it at 0
    grams = GopherRepetitionStage(GopherRepetitionConfig(top_n_grams=((3, 0.5),), dup_n_grams=())).thresholds()
    assert [(t.rule, t.signal, t.value) for t in grams][-1] == ("top_3_gram", "top_3_gram_frac", 0.5)
    assert C4Stage(C4Config(min_num_sentences=-1)).thresholds() == []
    assert C4Stage().signal_names() == ["c4_sentences", "c4_removed_char_frac"]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(language: str) -> str:
    """The first ``language`` code block of the README's "Adding a quality filter" section."""
    section = README.read_text(encoding="utf-8").split("### Adding a quality filter\n", 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def my_filters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The README's example filter as the plugin module ``my_filters`` its YAML names (registers ``max_lines``)."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_filters.py").write_text(readme_block("python"), encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("my_filters")
    finally:
        sys.path.remove(str(folder))


def test_readme_example_filter(my_filters: ModuleType, texts: list[str]) -> None:
    """The README's filter, test and YAML as written: a plugin appended by ``quality.extra``, with its histogram."""
    assert len([line for line in readme_block("python").splitlines() if line.strip()]) < 25
    my_filters.test_max_lines()
    quality = QualityConfig.model_validate(yaml.safe_load(readme_block("yaml"))["quality"])
    assert quality.filters == QUALITY_FILTER_ORDER and quality.extra == ("max_lines",)
    stages = quality_stages(quality)
    assert [s.name for s in stages] == [*QUALITY_FILTER_ORDER, "max_lines"]
    assert stages[-1].config.max_lines == 500
    stats = PartStats("p")
    run_chain(stages, table_of(texts[:100]), stats)
    assert stats.stage("max_lines").docs_in == stats.stage("fineweb_quality").docs_out > 0
    stats = PartStats("p")
    run_chain(stages[-1:], table_of([*texts[:100], "\n".join(texts[:100])]), stats)  # the last one is long
    lines = stats.profile.signals["lines"]
    assert lines.stage == "max_lines" and lines.thresholds == {"too_many_lines (>)": 500.0}
    assert (lines.kept.total, lines.dropped.total) == (100, 1)
    assert stats.stage("max_lines").drops == {"max_lines:too_many_lines": 1}


def test_registering_a_new_filter(my_filters: ModuleType, texts: list[str]) -> None:
    quality = QualityConfig(
        filters=("max_lines", "gopher_quality"), options={"max_lines": {"max_lines": 20}}, plugins=("my_filters",)
    )
    stages = quality_stages(quality)
    assert [s.name for s in stages] == ["max_lines", "gopher_quality"]
    reasons, _ = our_reasons(stages[0], texts)
    assert reasons == ["too_many_lines" if t.count("\n") >= 20 else None for t in texts]
    assert "too_many_lines" in reasons and None in reasons
    assert build_filter("max_lines").config.max_lines == 1000
    assert my_filters.MaxLinesFilter.name == "max_lines" and "max_lines" in registered_filters()
    assert my_filters.MaxLinesFilter()(table_of(["a\nb"])).column("drop_reason").to_pylist() == [None]
    assert not MeasuredFilter.rules and my_filters.MaxLinesFilter.rules == (
        Rule("too_many_lines", "lines", ">", "max_lines"),
    )

    @dataclass
    class Other(MeasuredFilter):
        config: Any = None

    with pytest.raises(ValueError, match="'max_lines' is already registered"):
        register_filter("max_lines", GopherQualityConfig)(Other)
    with pytest.raises(TypeError, match="pass config_model"):
        register_filter("other")(Other)
    # bad names, plugins and settings fail when the config is built, before any WARC file is downloaded
    with pytest.raises(ValueError, match="cannot import 'no_such_filters_module'"):
        QualityConfig(plugins=("no_such_filters_module",))
    with pytest.raises(ValueError, match="unknown quality filter.*'nope'.*registered: gopher_repetition"):
        QualityConfig(filters=("nope",))
    with pytest.raises(ValueError, match="unknown quality filter.*'nope' in quality.extra"):
        QualityConfig(extra=("nope",))
    with pytest.raises(ValueError, match="'c4' listed more than once"):
        QualityConfig(extra=("c4",))
    with pytest.raises(ValueError, match="quality.options.max_lines"):
        QualityConfig(extra=("max_lines",), options={"max_lines": {"max_lines": "many"}})
    off = QualityConfig(c4=C4Config(enabled=False))
    assert [s.name for s in quality_stages(off)] == ["gopher_repetition", "gopher_quality", "fineweb_quality"]
    assert copy.deepcopy(stages[0]).config.max_lines == 20
