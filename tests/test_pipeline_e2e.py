"""The pipeline end to end over real HTTP, on the sample crawl built from real pages."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.app.config import RunConfig, load_config
from pipeline.core.parts import read_documents
from pipeline.demo.samplecrawl import SAMPLE_DATA, sample_manifest


def _rejected(run_dir) -> pa.Table:  # noqa: ANN001
    return pq.read_table(run_dir / "rejected")


def _urls_with(manifest: dict, kind: str) -> set[str]:
    return set(manifest["planted"][kind])


SOURCE_COUNTS = {
    "records": 523,
    "skipped_non_response": 350,  # request and metadata records of the request/response/metadata triples
    "responses": 173,
    "skipped_non_html": 4,  # the planted PDF, PNGs and CSS
    "html": 169,
    "skipped_http_status": 1,
    "documents": 168,
    "decode_detected": 2,
}
"""What the reader counts on the sample crawl: it is built deterministically and read without any limit."""
URL_FILTER_DROPS = {"url_filter:domain": 2, "url_filter:subdomain": 2, "url_filter:hard_blacklisted": 4}
"""The planted blocklisted URLs (4 listed domains, 4 banned words), each with datatrove's rule."""


def _config(sample_run) -> RunConfig:  # noqa: ANN001
    return load_config(sample_run.run_dir / "config.yaml")  # as the run recorded it


def test_every_html_record_is_kept_or_rejected_exactly_once(sample_run, sample_crawl) -> None:  # noqa: ANN001
    docs = read_documents(sample_run.run_dir)
    rejected = _rejected(sample_run.run_dir)
    ids = docs.column("id").to_pylist() + rejected.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a document appears twice"
    stats = sample_run.pass_stats[0]  # the WARC pass; dedup and tokens are checked in their own tests
    # the reader accounts for every record: each is a document or counted as skipped, once
    source = stats.source
    assert dict(source) == SOURCE_COUNTS
    assert source["records"] == source["responses"] + source["skipped_non_response"]
    assert source["responses"] == source["html"] + source["skipped_non_html"]
    assert source["html"] == source["documents"] + source["skipped_http_status"]
    manifest = sample_manifest(sample_crawl.root)
    assert source["responses"] == manifest["num_responses"]
    assert source["documents"] == manifest["num_html_responses"] == len(ids)
    # the funnel is conserved: what a stage gets is what the one before kept, what it drops is counted by rule
    assert stats.stages[0].docs_in == source["documents"]
    for before, after in zip(stats.stages, stats.stages[1:], strict=False):
        assert after.docs_in == before.docs_out, after.name
    for stage in stats.stages:
        assert stage.docs_in - stage.docs_out == sum(stage.drops.values()), stage.name
    assert stats.stages[-1].docs_out == stats.docs_out == docs.num_rows
    # every drop is a rejected row with that stage and rule, and nothing else is
    rows = Counter(
        f"{r['drop_stage']}:{r['drop_reason']}" for r in rejected.select(["drop_stage", "drop_reason"]).to_pylist()
    )
    assert rows == sum((Counter(s.drops) for s in stats.stages), Counter())
    assert dict(stats.stage("url_filter").drops) == URL_FILTER_DROPS
    # the documents the run reports are the rows of its Parquet files, once each
    assert (
        sample_run.stats.docs_out
        == sample_run.pass_stats[-1].docs_out
        == read_documents(sample_run.documents_dir.parent).num_rows
    )


def test_kept_documents_are_text_in_the_configured_languages(sample_run, sample_crawl) -> None:  # noqa: ANN001
    config = _config(sample_run)
    docs = read_documents(sample_run.run_dir).to_pylist()
    assert len(docs) == sample_run.pass_stats[0].docs_out
    manifest = sample_manifest(sample_crawl.root)
    by_url = {r["url"]: r for r in manifest["responses"]}
    for doc in docs:
        # kept when a wanted language scores strictly above the threshold (which makes it the top language)
        assert doc["language"] in config.langid.languages and doc["language_score"] > config.langid.threshold
        assert doc["dump"] == sample_crawl.dump
        assert doc["warc_path"] in sample_crawl.warc_paths
        assert doc["url"] in by_url
        assert doc["warc_date"] is not None
        assert "<html" not in doc["text"].lower() and "<div" not in doc["text"].lower()
        assert by_url[doc["url"]]["record_id"].strip("<>").endswith(doc["id"])


def test_real_articles_are_extracted_close_to_ground_truth(sample_run) -> None:  # noqa: ANN001
    truth = json.loads(gzip.decompress((SAMPLE_DATA / "ground_truth.json.gz").read_bytes()))
    docs = {d["url"]: d["text"] for d in read_documents(sample_run.run_dir).to_pylist()}
    recalls = []
    for url, entry in truth.items():
        if url not in docs or not entry.get("articleBody"):
            continue
        expected = Counter(re.findall(r"\w+", entry["articleBody"].lower()))
        got = Counter(re.findall(r"\w+", docs[url].lower()))
        recalls.append(sum((expected & got).values()) / max(1, sum(expected.values())))
    assert len(recalls) >= 20
    assert sum(recalls) / len(recalls) > 0.8, recalls


@pytest.mark.parametrize(
    ("kind", "stage", "reasons"),
    [
        ("blocklist:domain", "url_filter", {"domain", "subdomain"}),
        ("blocklist:banned_word", "url_filter", {"hard_blacklisted", "soft_blacklisted", "blacklisted_subword"}),
        ("language:de", "langid", {"language"}),
        ("language:ja", "langid", {"language"}),
        ("language:ru", "langid", {"language"}),
    ],
)
def test_planted_cases_are_rejected_with_their_rule(sample_run, sample_crawl, kind, stage, reasons) -> None:  # noqa: ANN001
    manifest = sample_manifest(sample_crawl.root)
    urls = _urls_with(manifest, kind)
    assert urls
    rejected = {r["url"]: r for r in _rejected(sample_run.run_dir).to_pylist()}
    order = [s.name for s in sample_run.pass_stats[0].stages]
    # every planted page is a rejected document: none is kept, none is lost
    assert urls <= set(rejected), urls - set(rejected)
    for url in urls:
        row = rejected[url]
        # dropped by its rule, unless a stage before it dropped the page first (langid sees only extracted pages)
        assert order.index(row["drop_stage"]) <= order.index(stage), (url, row["drop_stage"])
        if row["drop_stage"] == stage:
            assert row["drop_reason"] in reasons, (url, row["drop_reason"])


def test_non_html_and_malformed_records_never_become_documents(sample_run, sample_crawl) -> None:  # noqa: ANN001
    manifest = sample_manifest(sample_crawl.root)
    non_html = set().union(*(_urls_with(manifest, k) for k in manifest["planted"] if k.startswith("non_html:")))
    urls = non_html | _urls_with(manifest, "content_type_mismatch")
    seen = set(read_documents(sample_run.run_dir).column("url").to_pylist())
    seen |= set(_rejected(sample_run.run_dir).column("url").to_pylist())
    assert not urls & seen
    assert sample_run.stats.source["skipped_non_html"] == len(non_html) == len(urls)  # the mismatch is a PNG


def test_output_reads_with_datasets_and_duckdb(sample_run) -> None:  # noqa: ANN001
    import duckdb
    from datasets import load_dataset

    pattern = str(sample_run.run_dir / "documents" / "*.parquet")
    ds = load_dataset("parquet", data_files=pattern, split="train")
    assert len(ds) == sample_run.pass_stats[0].docs_out
    assert set(ds.column_names) >= {"id", "url", "text", "language", "language_score"}
    ((count, distinct),) = duckdb.sql(f"select count(*), count(distinct id) from read_parquet('{pattern}')").fetchall()
    assert count == distinct == len(ds)
