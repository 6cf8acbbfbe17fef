"""The dataset report: its figures equal the stats and the files on disk, the page is self-contained and
renders in a real browser without errors, and a comparison names the stage and rule that changed."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from pipeline.app.report_cli import report_command
from pipeline.core.parts import read_documents, total_stats
from pipeline.core.profile import (
    RATIO_EDGES,
    SCORE_EDGES,
    DocumentProfile,
    Histogram,
    SignalSpec,
    bin_index,
    default_signal_spec,
    log_edges,
    profile_documents,
    public_suffix,
    signal_histograms,
    stage_signal_histograms,
)
from pipeline.core.stage import with_drop_reasons
from pipeline.report.build import ReportConfig, build_report, summary_markdown, write_report
from pipeline.report.compare import compare_runs, write_comparison

# ---------------------------------------------------------------- fixtures


def _add_profiles(run_dir: Path, with_signals: bool = False) -> None:
    """Put a profile of each part's documents into its stats, as the passes will once they profile kept batches.

    If the stats already hold a profile (the pipeline writes it), it must equal the one computed here.
    """
    for stats_file in sorted((run_dir / "stats").glob("part-*.json")):
        data = json.loads(stats_file.read_text())
        docs = pq.read_table(run_dir / "documents" / f"{stats_file.stem}.parquet")
        profile = profile_documents(docs)
        if "profile" in data:
            written = DocumentProfile.from_json(data["profile"])
            written.signals = {}
            assert written.to_json() == profile.to_json(), f"{stats_file}: written profile differs"
        if with_signals:
            profile.add_signals(_langid_signals(run_dir, stats_file.stem, docs))
        data["profile"] = profile.to_json()
        stats_file.write_text(json.dumps(data))


SIGNAL_SPECS = {
    "language_score": SignalSpec(SCORE_EDGES, {"threshold": 0.65}, stage="langid"),
    "text_chars": SignalSpec(log_edges(1, 1e6, 5), {"min": 200}, log=True, stage="langid"),
}


def _langid_signals(run_dir: Path, part: str, docs: pa.Table) -> dict[str, Any]:
    """What the language filter saw: kept rows plus the rows it dropped, as its output before the split."""
    rejected = pq.read_table(run_dir / "rejected" / f"{part}.parquet")
    dropped = rejected.filter(pc.equal(rejected.column("drop_stage"), "langid")).drop_columns(["drop_stage"])
    kept = docs.append_column("drop_reason", pa.nulls(docs.num_rows, pa.string()))
    seen = pa.concat_tables([kept, dropped])
    seen = seen.append_column("text_chars", pc.utf8_length(pc.fill_null(seen.column("text"), "")))
    return signal_histograms(seen, SIGNAL_SPECS)


def _copy_run(src: Path, dest: Path, warc_pass_only: bool = False) -> Path:
    """A copy of a run; ``warc_pass_only`` leaves out later passes, so a test checks one pass against its files."""
    skip = {"report", "dedup", "tokens"} if warc_pass_only else {"report"}

    def later_passes(directory: str, names: list[str]) -> set[str]:
        return skip & set(names) if Path(directory) == Path(src) else set()

    shutil.copytree(src, dest, ignore=later_passes)
    return dest


@pytest.fixture(scope="module")
def profiled_run(sample_run, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    run = _copy_run(sample_run.run_dir, tmp_path_factory.mktemp("report") / "profiled", warc_pass_only=True)
    _add_profiles(run)
    return run


DEDUP = {
    "size_histogram": {"1": 60, "2": 4, "3": 2, "7": 1},
    "biggest": [
        {
            "cluster_id": "c-7",
            "size": 7,
            "examples": [{"id": "d1", "url": "https://syndicated-news.example.net/a", "snippet": "Same <b>story</b>"}],
        },
        {"cluster_id": "c-3", "size": 3, "examples": []},
    ],
    "docs_in": 80,
}


def _manifest(docs: int) -> dict[str, Any]:
    return {
        "format": "llm.c",
        "tokenizer": {"name": "gpt2", "sha256": "306cd27f"},
        "vocab_size": 50257,
        "eot_token": 50256,
        "shards": [
            {"name": "val_000000.bin", "split": "val", "num_tokens": 20_000, "num_documents": 20, "dtype": "uint16"},
            {
                "name": "train_000001.bin",
                "split": "train",
                "num_tokens": 45_000,
                "num_documents": docs - 20,
                "dtype": "uint16",
                "sha256": "ab" * 32,
            },
        ],
        "totals": {"num_tokens": 65_000, "num_documents": docs},
    }


VALIDATION = {
    "verdict": "pass",
    "passed": True,
    "reason": "val loss 4.5 is well below the unigram entropy 7.1",
    "unigram_entropy": 7.1,
    "loss_curve": [
        {"step": s, "train_loss": 10.8 * math.exp(-s / 60) + 4.2, "val_loss": 10.9 * math.exp(-s / 60) + 4.4}
        for s in range(0, 301, 50)
    ],
    "tokens_per_s": 12345.6,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def full_run(profiled_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profiled run plus quality signals, duplicate clusters, token shards and a validation result."""
    run = _copy_run(profiled_run, tmp_path_factory.mktemp("report") / "full")
    _add_profiles(run, with_signals=True)
    _plant_hostile_snippet(run)
    docs = read_documents(run, columns=["id"]).num_rows
    for rel, content in (
        ("dedup/dedup_clusters.json", DEDUP),
        ("tokens/manifest.json", _manifest(docs)),
        ("validation/validation.json", VALIDATION),
    ):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(content))
    return run


HOSTILE = '<script>alert("x")</script><img src="https://evil.example/p.png">\x00'


def _plant_hostile_snippet(run: Path) -> None:
    """Dropped documents are web pages: their snippets must be shown as text, never as markup."""
    stats_file = sorted((run / "stats").glob("part-*.json"))[0]
    data = json.loads(stats_file.read_text())
    stage = next(s for s in data["stages"] if s["samples"])
    next(iter(stage["samples"].values()))[0]["snippet"] = HOSTILE
    stats_file.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def full_report(full_run: Path) -> dict[str, Any]:
    return write_report(full_run).report


@pytest.fixture(scope="module")
def strict_run(mirror_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample crawl again, with a stricter language threshold (0.9 instead of 0.65)."""
    from pipeline.app.run import run_pipeline
    from tests.samples import WARC_PASS_ONLY, sample_config

    # the WARC pass only, like profiled_run
    overrides = {"keep_rejected": True, "langid.threshold": 0.9, **WARC_PASS_ONLY}
    config = sample_config(mirror_url, tmp_path_factory.mktemp("strict"), "strict", overrides)
    return run_pipeline(config, progress=False).run_dir


# ---------------------------------------------------------------- profile


def test_profile_counts_equal_a_plain_python_count(sample_run) -> None:  # noqa: ANN001
    docs = read_documents(sample_run.run_dir)
    rows = docs.to_pylist()
    prof = profile_documents(docs)
    texts = [r["text"] for r in rows]
    assert prof.docs == len(rows) > 40
    assert prof.chars == sum(len(t) for t in texts)
    assert prof.words == sum(len(t.split()) for t in texts)
    assert prof.bytes == sum(len(t.encode("utf-8")) for t in texts)
    assert prof.languages == Counter(r["language"] for r in rows)
    assert prof.domains == Counter(r["domain"] for r in rows)
    assert prof.chars_hist.total == prof.words_hist.total == len(rows)
    assert sum(h.total for h in prof.language_score.values()) == len(rows)
    # the language score histogram puts each score in its 0.05-wide bin
    scores = [r["language_score"] for r in rows]
    expected = Counter(min(int(s / 0.05 + 1e-9), 19) for s in scores)
    assert {i: c for i, c in enumerate(prof.language_score["en"].counts) if c} == dict(expected)
    # nothing tokenized yet: no token figures
    assert prof.token_docs == 0 and prof.tokens == 0
    # TLDs are public suffixes of the hosts
    assert sum(prof.tlds.values()) == len(rows)
    assert prof.tlds["com"] == sum(1 for r in rows if r["domain"].endswith(".com"))


def test_profile_merge_of_batches_equals_profile_of_the_whole(sample_run) -> None:  # noqa: ANN001
    docs = read_documents(sample_run.run_dir)
    merged = DocumentProfile()
    for batch in docs.to_batches(max_chunksize=7):
        merged.merge(profile_documents(pa.Table.from_batches([batch])))
    whole = profile_documents(docs)
    assert merged.to_json() == whole.to_json()
    assert DocumentProfile.from_json(json.loads(json.dumps(whole.to_json()))).to_json() == whole.to_json()


def test_profile_tokens_nulls_and_lengths() -> None:
    table = pa.table(
        {
            "text": ["", "one two  three", None, "x" * 5000],
            "language": ["en", None, "de", "en"],
            "language_score": pa.array([1.0, None, 0.42, 0.97], pa.float32()),
            "domain": ["bbc.co.uk", None, "192.168.0.1", "news.example.com"],
            "token_count": pa.array([0, 3, None, 1200], pa.int32()),
        }
    )
    prof = profile_documents(table)
    assert prof.words == 3 + 1 and prof.chars == 14 + 5000  # "one two  three" and the x run
    assert prof.chars_hist.counts[0] == 2  # the empty and the null text
    assert prof.languages == Counter({"en": 2, "(none)": 1, "de": 1})
    assert prof.language_score["en"].counts[-1] == 2  # 1.0 clamps into the last bin, with 0.97
    assert prof.language_score["de"].counts[8] == 1  # 0.42 in [0.40, 0.45)
    assert "(none)" not in prof.language_score  # null score is not counted
    assert prof.token_docs == 3 and prof.tokens == 1203 and prof.tokens_hist.total == 3
    assert prof.tlds == Counter({"co.uk": 1, "(none)": 1, "(ip)": 1, "com": 1})
    assert public_suffix("example.github.io") == "io"  # ICANN suffixes, not private ones
    assert public_suffix("[::1]") == "(ip)"


def test_profile_keeps_top_domains_and_exact_totals() -> None:
    domains = [f"site{i}.org" for i in range(10) for _ in range(i + 1)]  # site9 has 10 docs, site0 has 1
    prof = profile_documents(pa.table({"domain": domains}), top_n=3)
    assert list(prof.domains) == ["site9.org", "site8.org", "site7.org"]
    assert prof.domains_other == len(domains) - (10 + 9 + 8)
    assert prof.truncated
    merged = DocumentProfile(top_n=3).merge(prof).merge(prof)
    assert sum(merged.domains.values()) + merged.domains_other == 2 * len(domains)


def test_signal_histograms_split_kept_and_dropped() -> None:
    table = pa.table(
        {
            "ratio": [0.05, 0.2, 0.5, 0.95, None],
            "drop_reason": [None, None, "too_low", "too_high", None],
        }
    )
    spec = SignalSpec((0.0, 0.25, 0.5, 0.75, 1.0), {"max": 0.9}, stage="quality")
    sig = signal_histograms(table, {"ratio": spec, "absent": spec})["ratio"]
    assert sig.kept.counts == [2, 0, 0, 0]
    assert sig.dropped.counts == [0, 0, 1, 1]
    assert sig.missing == 1 and sig.thresholds == {"max": 0.9}
    with pytest.raises(ValueError, match="different bins"):
        sig.kept.merge(Histogram((0.0, 1.0)))


class _Rule(NamedTuple):
    rule: str
    signal: str
    op: str
    value: float


@dataclass
class _LengthFilter:
    """Shaped like a quality filter: measures signals on texts and says which thresholds its rules use."""

    name: str = "length_filter"

    def __call__(self, table: pa.Table) -> pa.Table:
        words = [len((t or "").split()) for t in table.column("text").to_pylist()]
        return with_drop_reasons(table, ["short" if w < 3 else None for w in words])

    def signals(self, texts: list[str]) -> dict[str, np.ndarray]:
        words = np.array([len(t.split()) for t in texts], dtype=np.float32)
        return {"words": words, "long_word_frac": np.array([np.nan] * len(texts), dtype=np.float32)}

    def thresholds(self) -> list[_Rule]:
        return [_Rule("short", "words", "<", 3.0)]


@dataclass
class _ScoreStage:
    """Shaped like the language stage: its output carries the signal as a column."""

    name: str = "scorer"
    signal_columns: dict = field(default_factory=lambda: {"score": SignalSpec(SCORE_EDGES, {"min": 0.5})})

    def __call__(self, table: pa.Table) -> pa.Table:
        scores = pa.array([0.1, 0.6, 0.99], pa.float64())
        return with_drop_reasons(table.append_column("score", scores), ["low", None, None])


def test_stage_signal_histograms_for_filters_and_signal_columns() -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["one", "one two three four", None]})
    stage = _LengthFilter()
    sig = stage_signal_histograms(stage, table, stage(table))
    words = sig["words"]
    assert words.stage == "length_filter" and words.thresholds == {"short (<)": 3.0} and words.log
    assert words.kept.total == 1 and words.dropped.total == 2  # "one" and the null text are short
    assert bin_index(np.array([4.0]), words.kept.edges)[0] == words.kept.counts.index(1)
    assert sig["long_word_frac"].missing == 3 and sig["long_word_frac"].kept.edges[-1] == 1.0
    scored = stage_signal_histograms(_ScoreStage(), table, _ScoreStage()(table))["score"]
    assert scored.dropped.counts[2] == 1 and scored.kept.counts[-1] == 1 and scored.thresholds == {"min": 0.5}
    assert stage_signal_histograms(object(), table, table) == {}
    assert default_signal_spec("dup_line_frac").edges == RATIO_EDGES


# ---------------------------------------------------------------- report figures


def _rejected_counts(run_dir: Path) -> Counter[str]:
    rejected = pq.read_table(run_dir / "rejected", columns=["drop_stage", "drop_reason"]).to_pylist()
    return Counter(f"{r['drop_stage']}:{r['drop_reason']}" for r in rejected)


def test_report_figures_equal_the_stats_and_the_files(profiled_run: Path) -> None:
    report = build_report(profiled_run)
    stats = total_stats(profiled_run)
    funnel = report["funnel"]
    assert [(s["stage"], s["docs_in"], s["docs_out"], s["bytes_in"], s["bytes_out"]) for s in funnel["stages"]] == [
        (s.name, s.docs_in, s.docs_out, s.bytes_in, s.bytes_out) for s in stats.stages
    ]
    docs = read_documents(profiled_run)
    assert funnel["docs_out"] == docs.num_rows == stats.docs_out
    assert funnel["docs_in"] == stats.source["documents"]
    assert funnel["docs_in"] - funnel["docs_out"] == sum(d["count"] for d in report["drops"])
    for a, b in zip(funnel["stages"], funnel["stages"][1:], strict=False):
        assert a["docs_out"] == b["docs_in"]
    # drop counts per rule equal the rows in rejected/, grouped by stage and reason
    assert {d["key"]: d["count"] for d in report["drops"]} == dict(_rejected_counts(profiled_run))
    assert math.isclose(sum(d["share_of_dropped"] for d in report["drops"]), 1.0, abs_tol=1e-4)
    rejected = pq.read_table(profiled_run / "rejected").to_pylist()
    reason_of = {r["id"]: f"{r['drop_stage']}:{r['drop_reason']}" for r in rejected}
    for d in report["drops"]:
        assert d["samples"], f"no sampled documents for {d['key']}"
        assert all(reason_of[s["id"]] == d["key"] for s in d["samples"])
    assert all(c["ok"] for c in report["checks"]) and report["warnings"] == []
    # the distributions come from the profiles and match the documents
    section = report["documents"]
    assert section["docs"] == docs.num_rows and section["complete"]
    languages = Counter(docs.column("language").to_pylist())
    assert {x["language"]: x["docs"] for x in section["languages"]} == dict(languages)
    assert section["totals"]["chars"] == sum(len(t) for t in docs.column("text").to_pylist())
    assert sum(section["lengths"]["words"]["counts"]) == docs.num_rows
    top = section["domains"]["top"]
    domains = Counter(docs.column("domain").to_pylist())
    assert top[0]["docs"] == max(domains.values()) and domains[top[0]["domain"]] == top[0]["docs"]
    assert section["language_score"]["threshold"] == 0.65
    ids = set(docs.column("id").to_pylist())
    assert report["kept_samples"] and all(s["id"] in ids for s in report["kept_samples"])
    assert len({s["id"] for s in report["kept_samples"]}) == len(report["kept_samples"])
    # run metadata
    run = report["run"]
    assert run["dump"] == "CC-MAIN-2024-22" and run["engine"]["kind"] == "local"
    assert run["warc_file_count"] == len(stats.inputs) and all(w.endswith(".warc.gz") for w in run["warc_files"])
    assert set(run["stage_seconds"]) == {s.name for s in stats.stages}
    assert run["versions"]["pyarrow"] == pa.__version__
    assert report["dedup"] is None and report["tokens"] is None and report["validation"] is None
    langid = next(s for s in stats.stages if s.name == "langid")
    assert langid.docs_in > 0 and f"| langid | {langid.docs_in} |" in summary_markdown(report).replace(",", "")


def test_report_without_profiles_says_what_is_missing(sample_run, tmp_path: Path) -> None:  # noqa: ANN001
    run = _copy_run(sample_run.run_dir, tmp_path / "plain", warc_pass_only=True)
    for stats_file in (run / "stats").glob("*.json"):  # as written before the passes profiled documents
        data = json.loads(stats_file.read_text())
        data.pop("profile", None)
        stats_file.write_text(json.dumps(data))
    files = write_report(run)
    assert files.report["documents"] is None
    assert any("no document profile" in w for w in files.report["warnings"])
    assert files.report["funnel"]["docs_out"] == sample_run.pass_stats[0].docs_out
    html = files.html_path.read_text()
    assert 'id="funnel"' in html and 'id="languages"' not in html


def test_optional_sections_are_read_and_normalised(full_report: dict[str, Any], full_run: Path) -> None:
    dedup = full_report["dedup"]
    assert dedup["clusters"] == 4 + 2 + 1
    assert dedup["documents_in_clusters"] == 2 * 4 + 3 * 2 + 7
    assert dedup["documents_removed"] == 4 + 2 * 2 + 6
    assert [c["size"] for c in dedup["biggest"]] == [7, 3]
    assert dedup["biggest"][0]["examples"][0]["url"] == "https://syndicated-news.example.net/a"
    tokens = full_report["tokens"]
    assert tokens["tokenizer"] == "gpt2" and tokens["dtypes"] == ["uint16"]
    assert tokens["by_split"]["val"]["num_tokens"] == 20_000 and tokens["totals"]["num_tokens"] == 65_000
    # tokens per stage are estimated from the shards: text bytes / (tokens without end-of-text)
    docs = full_report["funnel"]["docs_out"]
    ratio = full_report["funnel"]["stages"][-1]["bytes_out"] / (65_000 - docs)
    assert full_report["funnel"]["bytes_per_token"] == round(ratio, 4)
    assert full_report["funnel"]["tokens_out"] == 65_000 - docs
    assert full_report["funnel"]["stages"][0]["tokens_in"] is None  # HTML bytes are not tokens
    val = full_report["validation"]
    assert val["passed"] is True and val["unigram_entropy"] == 7.1 and val["tokens_per_second"] == 12345.6
    assert len(val["train_curve"]) == 7 and val["val_curve"][-1][0] == 300.0
    assert val["final_val_loss"] == pytest.approx(VALIDATION["loss_curve"][-1]["val_loss"])
    signals = full_report["documents"]["signals"]
    assert signals["language_score"]["thresholds"] == {"threshold": 0.65}
    langid = next(s for s in full_report["funnel"]["stages"] if s["stage"] == "langid")
    # the test profiles compute langid's kept rows from the written documents (after the quality filters)
    assert signals["language_score"]["kept_total"] == full_report["funnel"]["docs_out"]
    assert signals["language_score"]["dropped_total"] + signals["language_score"]["missing"] == langid["docs_dropped"]
    assert any(c["name"] == "token shards hold every document" and c["ok"] for c in full_report["checks"])


def test_broken_optional_inputs_are_reported_not_fatal(full_run: Path, tmp_path: Path) -> None:
    run = _copy_run(full_run, tmp_path / "broken")
    (run / "validation" / "validation.json").write_text('{"verdict": "pass", "loss_curve": [')  # truncated
    (run / "dedup" / "dedup_clusters.json").write_text(json.dumps({"size_histogram": "many"}))
    (run / "tokens" / "manifest.json").write_text("[]")
    files = write_report(run)
    report = files.report
    assert "unreadable" in report["validation"]["error"]
    assert "not understood" in report["dedup"]["error"]
    assert "JSON object" in report["tokens"]["error"]
    assert sum("validation:" in w or "dedup:" in w or "tokens:" in w for w in report["warnings"]) == 3
    html = files.html_path.read_text()
    assert 'id="validation"' not in html and "unreadable" in html


def test_configured_paths_find_moved_inputs(full_run: Path, tmp_path: Path) -> None:
    run = _copy_run(full_run, tmp_path / "moved")
    (run / "shards").mkdir()
    shutil.move(run / "tokens" / "manifest.json", run / "shards" / "manifest.json")
    assert build_report(run)["tokens"] is None
    report = build_report(run, ReportConfig(token_manifest="shards/manifest.json"))
    assert report["tokens"]["totals"]["num_tokens"] == 65_000


# ---------------------------------------------------------------- HTML


EXTERNAL_REF = re.compile(
    r"""<(script|link|img|iframe|source|embed|object)\b[^>]*\b(src|href|data)\s*=\s*["']?\s*(https?:)?//""", re.I
)


def test_html_is_self_contained_and_escapes_document_text(full_run: Path, full_report: dict[str, Any]) -> None:
    html = (full_run / "report" / "index.html").read_text()
    assert not EXTERNAL_REF.search(html), EXTERNAL_REF.search(html)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(" in html and "\x00" not in html
    assert "default-src 'none'" in html
    assert html.count('<img class="plot"') == 10  # every section with data has its plot
    assert all(f">{d['key']}<" in html for d in full_report["drops"])
    for d in full_report["drops"]:
        assert all(f">{s['url']}</a>" in html for s in d["samples"] if s["url"].startswith("http"))


# ---------------------------------------------------------------- compare


def test_compare_run_with_itself_shows_no_change(profiled_run: Path) -> None:
    result = compare_runs(profiled_run, profiled_run)
    assert result["identical"] and result["causes"] == [] and result["first_changed_stage"] is None
    assert result["config_changes"] == [] and result["output"]["docs_out"]["delta"] == 0
    assert all(not r["changed"] for r in result["rules"])
    assert result["summary"].startswith("No stage and no rule changed")


def test_compare_names_the_langid_stage_when_its_threshold_changes(profiled_run: Path, strict_run: Path) -> None:
    _add_profiles(strict_run)
    files = write_comparison(profiled_run, strict_run)
    result = files.result
    assert not result["identical"]
    assert result["causes"] == ["langid"] and result["first_changed_stage"] == "langid"
    stages = {s["stage"]: s for s in result["stages"]}
    assert not stages["url_filter"]["changed"] and not stages["extract"]["changed"]
    langid = stages["langid"]
    assert langid["docs_in"]["delta"] == 0 and langid["docs_dropped"]["delta"] > 0
    changed = {r["key"]: r["count"]["delta"] for r in result["rules"] if r["changed"]}
    langid_rules = {k: v for k, v in changed.items() if k.startswith("langid:")}
    assert sum(langid_rules.values()) == langid["docs_dropped"]["delta"]
    assert set(langid_rules) <= {"langid:language", "langid:low_score"}
    # later filters see fewer documents, so they may drop fewer; they never drop more than before
    assert all(v < 0 for k, v in changed.items() if not k.startswith("langid:"))
    assert {"key": "langid.threshold", "a": 0.65, "b": 0.9} in result["config_changes"]
    # the output shrinks by what langid dropped more, less what later filters no longer had to drop
    assert result["output"]["docs_out"]["delta"] == -sum(changed.values())
    assert "langid" in result["summary"]
    html = files.html_path.read_text()
    assert not EXTERNAL_REF.search(html) and "changed (same input)" in html
    assert json.loads(files.json_path.read_text())["causes"] == ["langid"]


# ---------------------------------------------------------------- CLI


def test_report_command_writes_the_files_and_fails_clearly(profiled_run: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)  # a multi-command app, as the main CLI mounts it
    runner = CliRunner()
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(profiled_run), "-o", str(out), "--compare", str(profiled_run)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file()
    on_disk = json.loads((out / "report.json").read_text())
    built = build_report(profiled_run)
    assert on_disk["funnel"] == built["funnel"] and on_disk["drops"] == built["drops"]
    assert "No stage and no rule changed" in result.output
    assert list(out.glob("compare-*.html"))
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "run folder not found" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no stats/ folder" in result.output


# ---------------------------------------------------------------- a real browser


@pytest.fixture
def browser() -> Iterator[Any]:
    """Load a page in headless Chromium: returns (page info, console errors) and writes a full-page screenshot."""
    pytest.importorskip("websockets.sync.client", reason="the DevTools connection needs the websockets package")
    from tests.headless_chromium import Chromium, find_chromium

    if find_chromium() is None:
        pytest.skip("headless browser test needs Chromium: apt-get install -y chromium")
    with Chromium(width=1280, height=900) as chromium:

        def load(page: Path, screenshot: Path) -> tuple[dict[str, Any], list[str]]:
            chromium.load(page.resolve().as_uri())
            info = chromium.evaluate(
                """({title: document.title,
                    images: document.images.length,
                    loaded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,
                    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
                    text: document.body ? document.body.innerText : ''})"""
            )
            height = int(chromium.call("Page.getLayoutMetrics")["cssContentSize"]["height"])
            metrics = {"width": 1280, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False}
            chromium.call("Emulation.setDeviceMetricsOverride", **metrics)
            chromium.screenshot(screenshot)
            chromium.call("Emulation.clearDeviceMetricsOverride")
            return {**info, "height": height}, list(chromium.console)

        yield load


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_browser_catches_console_errors_and_blocked_fetches(browser, tmp_path: Path) -> None:  # noqa: ANN001
    """The check below can fail: a page with a script error and an external image shows both."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
        "<img src='https://example.invalid/x.png'><script>console.error('boom')</script></body></html>"
    )
    info, errors = browser(page, tmp_path / "bad.png")
    assert info["images"] == 1 and info["loaded"] == 0
    assert any("boom" in e for e in errors)
    assert any("example.invalid" in e for e in errors)


def test_report_renders_in_chromium_with_plots_and_no_errors(
    browser,  # noqa: ANN001
    full_run: Path,
    full_report: dict[str, Any],
    tmp_path: Path,
) -> None:
    html = full_run / "report" / "index.html"
    screenshot = full_run / "report" / "screenshot.png"
    info, errors = browser(html, screenshot)
    assert errors == []
    assert info["title"] == f"Dataset report: {full_report['run']['name']}"
    assert info["images"] == 10 and info["loaded"] == 10, info
    assert info["sections"] == [
        "summary",
        "funnel",
        "drops",
        "counts",
        "languages",
        "lengths",
        "domains",
        "signals",
        "dedup",
        "tokens",
        "validation",
        "samples",
        "run",
    ]
    text = info["text"]
    assert "langid:language" in text and "PASS" in text
    assert f"{full_report['funnel']['docs_out']:,}" in text
    width, height = _png_size(screenshot)
    assert width == 1280 and height == min(info["height"], 16000) > 3000
    assert screenshot.stat().st_size > 100_000  # a page of plots, not a blank image
