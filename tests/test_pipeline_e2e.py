"""The pipeline end to end over real HTTP, on the sample crawl built from real pages."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.parts import read_documents
from pipeline.demo.samplecrawl import SAMPLE_DATA, sample_manifest


def _rejected(run_dir) -> pa.Table:  # noqa: ANN001
    return pq.read_table(run_dir / "rejected")


def _urls_with(manifest: dict, kind: str) -> set[str]:
    return set(manifest["planted"][kind])


def test_every_html_record_is_kept_or_rejected_exactly_once(sample_run, sample_crawl) -> None:  # noqa: ANN001
    docs = read_documents(sample_run.run_dir)
    rejected = _rejected(sample_run.run_dir)
    ids = docs.column("id").to_pylist() + rejected.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a document appears twice"
    stats = sample_run.pass_stats[0]  # the WARC pass; dedup and tokens are checked in their own tests
    first = stats.stages[0]
    assert first.docs_in == len(ids)
    for before, after in zip(stats.stages, stats.stages[1:], strict=False):
        assert after.docs_in == before.docs_out
    assert stats.stages[-1].docs_out == docs.num_rows == stats.docs_out
    assert sum(sum(s.drops.values()) for s in stats.stages) == rejected.num_rows
    # the reader accounts for every response record it did not hand on
    manifest = sample_manifest(sample_crawl.root)
    assert stats.source["responses"] == manifest["num_responses"]
    assert len(ids) + sum(v for k, v in stats.source.items() if k.startswith("skipped_")) >= stats.source["responses"]


def test_kept_documents_are_english_text_from_the_crawl(sample_run, sample_crawl) -> None:  # noqa: ANN001
    docs = read_documents(sample_run.run_dir).to_pylist()
    assert len(docs) >= 40
    manifest = sample_manifest(sample_crawl.root)
    by_url = {r["url"]: r for r in manifest["responses"]}
    for doc in docs:
        assert doc["language"] == "en" and doc["language_score"] > 0.65
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
    rejected = {r["url"]: r for r in _rejected(sample_run.run_dir).to_pylist()}
    kept = set(read_documents(sample_run.run_dir).column("url").to_pylist())
    assert not urls & kept
    by_rule = [rejected[u] for u in urls if u in rejected and rejected[u]["drop_stage"] == stage]
    # langid sees only pages that extraction kept; everything else planted must be dropped by this stage
    assert len(by_rule) >= max(1, len(urls) - 2), (kind, len(by_rule), len(urls))
    assert {r["drop_reason"] for r in by_rule} <= reasons


def test_non_html_and_malformed_records_never_become_documents(sample_run, sample_crawl) -> None:  # noqa: ANN001
    manifest = sample_manifest(sample_crawl.root)
    kinds = [k for k in manifest["planted"] if k.startswith(("non_html:", "content_type_mismatch"))]
    urls = set().union(*(_urls_with(manifest, k) for k in kinds))
    assert urls
    seen = set(read_documents(sample_run.run_dir).column("url").to_pylist())
    seen |= set(_rejected(sample_run.run_dir).column("url").to_pylist())
    assert not urls & seen
    assert sample_run.stats.source["skipped_non_html"] >= len(kinds)


def test_output_reads_with_datasets_and_duckdb(sample_run) -> None:  # noqa: ANN001
    import duckdb
    from datasets import load_dataset

    pattern = str(sample_run.run_dir / "documents" / "*.parquet")
    ds = load_dataset("parquet", data_files=pattern, split="train")
    assert len(ds) == sample_run.pass_stats[0].docs_out
    assert set(ds.column_names) >= {"id", "url", "text", "language", "language_score"}
    ((count,),) = duckdb.sql(f"select count(distinct id) from read_parquet('{pattern}')").fetchall()
    assert count == len(ds)
