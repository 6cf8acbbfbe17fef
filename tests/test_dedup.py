"""Dedup on planted near-duplicates of real text: exact Jaccard ground truth, datatrove/datasketch parity, resume."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.parts import REJECTED, PartWriter, part_name, read_documents, total_stats
from pipeline.core.schema import REJECTED_SCHEMA
from pipeline.core.stats import PartStats
from pipeline.dedup.clustering import bucket_pairs, connected_components, hash_ranges, near_duplicate_clusters
from pipeline.dedup.config import (
    DedupConfig,
    MinHashConfig,
    candidate_probability,
    choose_bands_rows,
    s_curve_midpoint,
)
from pipeline.dedup.dedup_pass import CLUSTER_REPORT, EXACT_STAGE, MINHASH_STAGE, run_dedup
from pipeline.dedup.exact import content_hashes
from pipeline.dedup.minhash import (
    band_hashes,
    estimated_jaccard,
    has_signature,
    minhash_signatures,
    normalize_text,
    normalize_texts,
    shingle_hashes,
    signatures_from_shingles,
)
from pipeline.engines.base import RunIncomplete

REPO = Path(__file__).resolve().parents[1]
DUMP = "CC-MAIN-2024-22"
NGRAM = 5


# ---------------------------------------------------------------- real text and planted variants


def _articles(realdata: Path) -> list[tuple[str, str]]:
    """(url, text) of real articles with at least 150 words: AEB ground-truth bodies and CC text samples."""
    out = []
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    for key in sorted(truth):
        out.append((truth[key]["url"], truth[key]["articleBody"]))
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for i, line in enumerate(f):
                out.append((f"https://cc-sample.example/{path.name}/{i}", json.loads(line)["text"]))
    return [(u, t) for u, t in out if len(t.split()) >= 150]


def shingle_set(text: str) -> set[tuple[str, ...]]:
    words = normalize_text(text).split()
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n") if p.strip()]


def edit_words(text: str, fraction: float, vocabulary: list[str], rng: random.Random) -> str:
    """Replace, delete or insert ``fraction`` of the words at random places (typos, rewording)."""
    words = text.split(" ")
    for _ in range(max(1, int(len(words) * fraction))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(vocabulary)
        elif op < 0.75 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocabulary))
    return " ".join(words)


def light_change(text: str) -> str:
    """What normalisation removes: ASCII case, spacing, punctuation between words, digit values."""
    out = "".join(c.upper() if c.isascii() else c for c in text)
    out = out.replace(" ", "  ").replace(". ", " ; ").replace(", ", " ").replace("\n", "\n\n")
    return "".join("7" if c.isdigit() and c.isascii() else c for c in out)


def planted_corpus(realdata: Path, families: int = 48, seed: int = 7) -> list[dict]:
    """Families of a real article and its variants, plus controls that share only part of an article."""
    rng = random.Random(seed)
    articles = _articles(realdata)[: families + 1]
    vocabulary = sorted({w for _, t in articles for w in t.split() if w.isalpha()})
    short = [p for _, t in articles for p in _paragraphs(t) if 8 <= len(p.split()) <= 40]
    docs: list[dict] = []

    def add(family: int, kind: str, url: str, text: str) -> None:
        docs.append({"family": family, "kind": kind, "url": url, "text": text})

    for f in range(families):
        url, text = articles[f]
        paras = _paragraphs(text)
        add(f, "base", url, text)
        add(f, "copy", url + "?utm=1", text)
        add(f, "light", url + "?m=1", light_change(text))
        add(f, "edit-1%", url + "#e1", edit_words(text, 0.01, vocabulary, rng))
        add(f, "edit-3%", url + "#e3", edit_words(text, 0.03, vocabulary, rng))
        add(f, "edit-8%", url + "#e8", edit_words(text, 0.08, vocabulary, rng))
        header, footer = rng.sample(short, 2)
        add(f, "boilerplate", url + "#b", "\n".join([header, *paras, footer]))
        shuffled = paras[:]
        rng.shuffle(shuffled)
        add(f, "reordered", url + "#r", "\n".join(shuffled))
        keep = max(1, round(len(paras) * rng.uniform(0.55, 0.95)))
        add(f, "truncated", url + "#t", "\n".join(paras[:keep]))
        other = _paragraphs(articles[f + 1][1])
        half = len(paras) // 2
        add(f, "half-replaced", url + "#h", "\n".join(paras[:half] + other[: max(1, len(other) // 2)]))
    ids = set()
    for doc in docs:
        while (doc_id := f"{rng.getrandbits(128):032x}") in ids:
            pass
        ids.add(doc_id)
        doc["id"] = doc_id
    return docs


def write_input(directory: Path, docs: list[dict], parts: int, seed: int = 0, dump: str = DUMP) -> Path:
    """A WARC-pass-like output: ``documents/part-*.parquet`` with stats and markers."""
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    for p in range(parts):
        chosen = [docs[i] for i in order[p::parts]]
        table = pa.table(
            {
                "id": [d["id"] for d in chosen],
                "url": [d["url"] for d in chosen],
                "domain": ["example.org"] * len(chosen),
                "dump": [d.get("dump", dump) for d in chosen],
                "text": [d["text"] for d in chosen],
            }
        )
        with PartWriter(directory, part_name(p)) as writer:
            writer.write(table)
            writer.commit(PartStats(part=part_name(p)))
    return directory


def all_rows(out: Path) -> pa.Table:
    kept = read_documents(out, columns=["id", "dup_cluster_id", "dup_cluster_size"])
    rejected_files = sorted((out / REJECTED).glob("part-*.parquet"))
    if not rejected_files:
        return kept
    rejected = pa.concat_tables(
        pq.read_table(f, columns=["id", "dup_cluster_id", "dup_cluster_size"]) for f in rejected_files
    )
    return pa.concat_tables([kept, rejected])


@pytest.fixture(scope="module")
def corpus(realdata: Path) -> list[dict]:
    return planted_corpus(realdata)


@pytest.fixture(scope="module")
def shingles(corpus: list[dict]) -> dict[str, set]:
    return {d["id"]: shingle_set(d["text"]) for d in corpus}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict]) -> Path:
    """One uninterrupted pass over the planted corpus in 3 parts, rejected rows kept."""
    base = tmp_path_factory.mktemp("dedup")
    source = write_input(base / "in", corpus, parts=3)
    run_dedup(source, base / "out", DedupConfig(batch_size=64), keep_rejected=True)
    return base / "out"


# ---------------------------------------------------------------- signatures


def test_normalisation_matches_datatrove_on_real_multilingual_text(realdata: Path) -> None:
    from datatrove.utils.text import simplify_text

    texts = [t for _, t in _articles(realdata)]
    for path in sorted((realdata / "langid_lingua" / "sentences").glob("*.txt")):
        texts.append(path.read_text(encoding="utf-8")[:3000])  # 75 languages, scripts with diacritics
    assert len(texts) > 150
    for text in texts:
        assert normalize_text(text) == simplify_text(text)
    assert normalize_text("Café  Ünïcode, 3.14 and ٣٤!\tTABS") == "cafe unicode 0 and 0 tabs"


def test_permutations_are_bit_identical_to_datatrove(corpus: list[dict], tmp_path: Path) -> None:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Unused(WordTokenizer):  # get_signature needs no tokenizer; this spares loading spaCy
        word_tokenize = sent_tokenize = span_tokenize = None  # type: ignore[assignment]

    ours = MinHashConfig()
    theirs = MinhashDedupSignature(output_folder=str(tmp_path), config=MinhashConfig(), language=Unused())
    texts = [d["text"] for d in corpus[:40]]
    hashes, offsets = shingle_hashes(normalize_texts(texts), NGRAM, ours.seed)
    signatures = signatures_from_shingles(hashes, offsets, ours)
    assert np.array_equal(signatures, minhash_signatures(texts, ours))
    for i in range(len(texts)):
        expected = np.array(theirs.get_signature(hashes[offsets[i] : offsets[i + 1]].reshape(-1, 1))).reshape(-1)
        assert np.array_equal(signatures[i], expected)


def test_shingles_are_the_word_5grams() -> None:
    texts = ["one two three four", "one two three four five", "a b c d e f g a b c d e"]
    hashes, offsets = shingle_hashes(normalize_texts(texts), NGRAM)
    assert list(np.diff(offsets)) == [0, 1, 8]
    doc = hashes[offsets[2] : offsets[3]]
    assert doc[0] == doc[7] and len(set(doc.tolist())) == 7  # "a b c d e" twice, the rest distinct
    sig = minhash_signatures([*texts, None, ""], MinHashConfig())
    assert list(has_signature(sig)) == [False, True, True, False, False]


def test_jaccard_estimates_match_exact_and_datasketch(corpus: list[dict], shingles: dict[str, set]) -> None:
    from datasketch import MinHash

    config = MinHashConfig()
    by_family = defaultdict(list)
    for d in corpus:
        by_family[d["family"]].append(d)
    pairs = [(fam[0], other) for fam in by_family.values() for other in fam[1:]]
    texts = {d["id"]: d["text"] for d in corpus}
    ids = sorted(texts)
    index = {i: k for k, i in enumerate(ids)}
    signatures = minhash_signatures([texts[i] for i in ids], config)
    template = MinHash(num_perm=config.num_perm, seed=config.seed)
    sketches = {}
    for doc_id in {d["id"] for pair in pairs for d in pair}:
        sketches[doc_id] = m = MinHash(
            num_perm=config.num_perm, permutations=template.permutations, scheme=template.scheme
        )
        m.update_batch([" ".join(s).encode() for s in shingles[doc_id]])
    ours_err, theirs_err = [], []
    for a, b in pairs:
        exact = jaccard(shingles[a["id"]], shingles[b["id"]])
        ours = float(estimated_jaccard(signatures[index[a["id"]]], signatures[index[b["id"]]]))
        theirs = sketches[a["id"]].jaccard(sketches[b["id"]])
        sigma = max((exact * (1 - exact) / config.num_perm) ** 0.5, 0.01)
        assert abs(ours - exact) <= 4.5 * sigma, (a["kind"], b["kind"], exact, ours)
        ours_err.append(abs(ours - exact))
        theirs_err.append(abs(theirs - exact))
    # same sampling error as the reference implementation (expected ~0.8 * sigma for both)
    assert np.mean(ours_err) <= 1.3 * np.mean(theirs_err) + 0.005
    assert 0.005 < np.mean(ours_err) < 0.05


def test_s_curve_and_band_choice() -> None:
    assert candidate_probability(0.8, 14, 8) == pytest.approx(0.924, abs=0.001)
    assert candidate_probability(0.85, 14, 8) == pytest.approx(0.988, abs=0.001)
    assert candidate_probability(0.5, 14, 8) < 0.06
    config = MinHashConfig()
    assert (config.bands, config.rows, config.num_perm) == (14, 8, 112)
    assert dict(config.s_curve())[0.8] == pytest.approx(0.924, abs=0.001)
    from datasketch.lsh import _optimal_param

    for threshold in (0.5, 0.7, 0.75, 0.8, 0.9):
        assert choose_bands_rows(threshold, 112) == _optimal_param(threshold, 112, 0.5, 0.5)
    chosen = MinHashConfig.for_threshold(0.8)
    assert chosen.num_perm <= 112 and abs(s_curve_midpoint(chosen.bands, chosen.rows) - 0.8) < 0.05
    assert chosen.verify_threshold == 0.8
    assert chosen.candidate_probability(0.9) > 0.9 and chosen.candidate_probability(0.6) < 0.05


def test_band_hashes_equal_exactly_when_bands_are_equal() -> None:
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**61 - 1, size=(4, 112), dtype=np.uint64)
    signatures[1] = signatures[0]
    signatures[2, :8] = signatures[0, :8]  # shares band 0 only
    bands = band_hashes(signatures, 14, 8)
    assert bands.shape == (4, 14) and bands.dtype == np.uint64
    assert np.array_equal(bands[0], bands[1])
    assert list(bands[2] == bands[0]) == [True] + [False] * 13
    assert not (bands[3] == bands[0]).any()


# ---------------------------------------------------------------- clustering pieces


def test_union_find_and_buckets() -> None:
    labels = connected_components(8, np.array([7, 5, 3, 6]), np.array([5, 3, 1, 2]))
    assert list(labels) == [0, 1, 2, 1, 4, 1, 2, 1]
    keys = np.array([9, 4, 9, 9, 4, 1], dtype=np.uint64)
    scope = np.array([0, 0, 0, 1, 0, 0], dtype=np.int32)
    heads, members = bucket_pairs(keys, scope, np.array([10, 11, 12, 13, 14, 15]))
    assert sorted(zip(heads.tolist(), members.tolist(), strict=True)) == [(10, 12), (11, 14)]
    assert len(hash_ranges(1000, 1000 * 64)) == 1 and len(hash_ranges(1000, 100 * 64)) == 16


def test_band_grouping_in_hash_slices_gives_the_same_clusters() -> None:
    rng = np.random.default_rng(1)
    n, bands = 3000, 6
    keys = rng.integers(0, 2**64 - 1, size=(n, bands), dtype=np.uint64)
    src = rng.integers(0, n, size=400)
    keys[rng.integers(0, n, size=400)] = keys[src]  # planted collisions
    scope = np.zeros(n, dtype=np.int32)

    def load(band: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        k = keys[:, band]
        idx = np.flatnonzero((k >= np.uint64(lo)) & (k <= np.uint64(hi - 1)))
        return idx, k[idx]

    common = dict(gather=None, verify_threshold=None, work_dir=None)
    whole = near_duplicate_clusters(n, bands, load, scope, n, budget_bytes=1 << 30, **common)
    sliced = near_duplicate_clusters(n, bands, load, scope, n, budget_bytes=n * 64 // 7, **common)
    assert whole.candidate_pairs > 300
    assert np.array_equal(whole.labels, sliced.labels)


def test_exact_hashes_find_copies_and_case_whitespace_variants(corpus: list[dict]) -> None:
    base = [d for d in corpus if d["kind"] == "base"][:5]
    texts = [b["text"] for b in base]
    variants = [t.replace(" ", " \n ", 3).upper() for t in texts]
    hashes = content_hashes([*texts, *texts, *variants, texts[0][:-40], "", None])
    n = len(texts)
    assert np.array_equal(hashes[:n], hashes[n : 2 * n])
    assert np.array_equal(hashes[:n], hashes[2 * n : 3 * n])
    assert len({tuple(h) for h in hashes[:n]}) == n
    assert tuple(hashes[3 * n]) != tuple(hashes[0])
    assert not hashes[-2:].any()  # empty text: no hash, never an exact duplicate


# ---------------------------------------------------------------- the pass


def test_planted_near_duplicates_recall_precision(
    reference: Path, corpus: list[dict], shingles: dict[str, set]
) -> None:
    rows = all_rows(reference).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(d["id"] for d in corpus), "every document once, kept or rejected"
    cluster_of = {r["id"]: r["dup_cluster_id"] for r in rows}
    members = defaultdict(list)
    for r in rows:
        members[r["dup_cluster_id"]].append(r["id"])
    kept = set(read_documents(reference, columns=["id"]).column("id").to_pylist())
    for rep, ids in members.items():
        assert rep == min(ids) and rep in kept, "the kept document is the smallest id of its cluster"
        assert kept & set(ids) == {rep}, "exactly one document per cluster is kept"
        assert {r["dup_cluster_size"] for r in rows if r["dup_cluster_id"] == rep} == {len(ids)}

    # recall: every pair of the planted families (and controls) with exact Jaccard >= 0.85
    by_family = defaultdict(list)
    for d in corpus:
        by_family[d["family"]].append(d["id"])
    truth = {}
    for ids in by_family.values():
        for a, b in combinations(ids, 2):
            truth[(a, b)] = jaccard(shingles[a], shingles[b])
    high = [p for p, j in truth.items() if j >= 0.85]
    found = [p for p in high if cluster_of[p[0]] == cluster_of[p[1]]]
    assert len(high) > 300
    assert len(found) / len(high) >= 0.95

    # precision of the pairs the pass links (union-find edges, in _work/clusters/links.parquet), against
    # exact Jaccard (>= 0.75 is a true duplicate); clusters are their transitive closure
    links = pq.read_table(reference / "_work" / "clusters" / "links.parquet").to_pylist()
    link_j = np.array([jaccard(shingles[r["id"]], shingles[r["linked_id"]]) for r in links])
    assert len(links) > 150
    assert all(cluster_of[r["id"]] == cluster_of[r["linked_id"]] for r in links)
    assert np.mean(link_j >= 0.75) >= 0.95
    assert np.abs(link_j - np.array([r["estimated_jaccard"] for r in links])).max() < 0.2
    # every removed document has a true near-duplicate (J >= 0.75) in its cluster
    removed = [r["id"] for r in rows if r["id"] != r["dup_cluster_id"]]
    justified = [
        any(jaccard(shingles[i], shingles[o]) >= 0.75 for o in members[cluster_of[i]] if o != i) for i in removed
    ]
    assert np.mean(justified) >= 0.95
    # and no two documents of one cluster are below Jaccard 0.5, even through chains of links
    merged_j = [jaccard(shingles[a], shingles[b]) for ids in members.values() for a, b in combinations(ids, 2)]
    assert len(merged_j) > 300 and min(merged_j) >= 0.5, "a pair below Jaccard 0.5 was merged"
    # the planted controls (half an article replaced) exist below 0.5 and stay apart
    low = [p for p, j in truth.items() if j < 0.5]
    assert len(low) > 40 and all(cluster_of[a] != cluster_of[b] for a, b in low)


def test_pass_stats_report_and_rejected_rows(reference: Path, corpus: list[dict]) -> None:
    stats = total_stats(reference)
    names = [s.name for s in stats.stages]
    assert names == [EXACT_STAGE, MINHASH_STAGE]
    exact, near = stats.stages
    assert exact.docs_in == len(corpus) and near.docs_in == exact.docs_out
    assert exact.drops[f"{EXACT_STAGE}:duplicate"] == exact.dropped >= 2 * 48  # copy + light change per family
    assert near.drops[f"{MINHASH_STAGE}:duplicate"] == near.dropped > 3 * 48
    assert stats.docs_out == near.docs_out
    rejected = pa.concat_tables(pq.read_table(f) for f in sorted((reference / REJECTED).glob("*.parquet")))
    assert rejected.schema == REJECTED_SCHEMA
    assert set(rejected.column("drop_stage").to_pylist()) == {EXACT_STAGE, MINHASH_STAGE}
    assert set(rejected.column("drop_reason").to_pylist()) == {"duplicate"}
    by_id = {d["id"]: d for d in corpus}
    stage_of = {}
    for row in rejected.select(["id", "text", "drop_stage"]).to_pylist():
        assert row["text"] == by_id[row["id"]]["text"]
        stage_of[row["id"]] = row["drop_stage"]
    for family in range(48):
        trio = sorted(d["id"] for d in corpus if d["family"] == family and d["kind"] in ("base", "copy", "light"))
        # the smallest id of identical texts goes on to MinHash, the other two are exact duplicates
        assert [stage_of.get(i) for i in trio[1:]] == [EXACT_STAGE, EXACT_STAGE]
        assert stage_of.get(trio[0]) in (None, MINHASH_STAGE)
    report = json.loads((reference / CLUSTER_REPORT).read_text())
    assert report["documents"] == len(corpus)
    assert report["kept"] == stats.docs_out
    assert report["exact_duplicates"] == exact.dropped and report["near_duplicates"] == near.dropped
    assert sum(int(k) * v for k, v in report["size_histogram"].items()) == len(corpus)
    biggest = report["top_clusters"][0]
    assert biggest["size"] >= 7 and len(biggest["member_urls"]) == 3
    family_urls = {d["url"] for d in corpus if d["id"] == biggest["id"]}
    assert biggest["url"] in family_urls


def test_same_kept_documents_for_any_parts_order_and_workers(
    tmp_path: Path, reference: Path, corpus: list[dict]
) -> None:
    expected = sorted((r["id"], r["dup_cluster_id"]) for r in all_rows(reference).to_pylist())
    source = write_input(tmp_path / "in", list(reversed(corpus)), parts=5, seed=99)
    run_dedup(source, tmp_path / "out", DedupConfig(batch_size=50), workers=2, keep_rejected=True)
    got = sorted((r["id"], r["dup_cluster_id"]) for r in all_rows(tmp_path / "out").to_pylist())
    assert got == expected


def test_scope_dump_keeps_cross_dump_copies(tmp_path: Path, corpus: list[dict]) -> None:
    bases = [d for d in corpus if d["kind"] == "base"][:6]
    docs = [dict(d, dump="CC-MAIN-2024-10") for d in bases]
    docs += [dict(d, id=d["id"] + "-b", dump="CC-MAIN-2024-22") for d in bases]
    docs += [dict(d, id=d["id"] + "-c", text=d["text"] + " thanks for reading", dump="CC-MAIN-2024-22") for d in bases]
    source = write_input(tmp_path / "in", docs, parts=2)
    run_dedup(source, tmp_path / "per-dump", DedupConfig())
    per_dump = read_documents(tmp_path / "per-dump", columns=["id", "dump", "dup_cluster_size"]).to_pylist()
    assert sorted(r["id"] for r in per_dump) == sorted([d["id"] for d in bases] + [d["id"] + "-b" for d in bases])
    assert {r["dup_cluster_size"] for r in per_dump if r["dump"] == "CC-MAIN-2024-22"} == {2}
    run_dedup(source, tmp_path / "whole-run", DedupConfig(scope="run"))
    whole = read_documents(tmp_path / "whole-run", columns=["id", "dup_cluster_size"]).to_pylist()
    assert sorted(r["id"] for r in whole) == sorted(d["id"] for d in bases)
    assert {r["dup_cluster_size"] for r in whole} == {3}


def test_short_null_and_huge_documents(tmp_path: Path, corpus: list[dict]) -> None:
    long_text = "\n".join(d["text"] for d in corpus if d["kind"] == "base") * 3  # ~1 MB, one document
    docs = [
        {"id": "a1", "url": "u1", "text": "too short"},
        {"id": "a2", "url": "u2", "text": "Too short!"},  # exact duplicate of a1 after normalisation
        {"id": "a3", "url": "u3", "text": None},
        {"id": "a4", "url": "u4", "text": ""},
        {"id": "a5", "url": "u5", "text": "..."},  # empty after normalisation: not an exact duplicate of a4
        {"id": "a6", "url": "u6", "text": long_text},
        {"id": "a7", "url": "u7", "text": long_text.replace("the", "The")},
    ]
    source = write_input(tmp_path / "in", docs, parts=2)
    run_dedup(source, tmp_path / "out", DedupConfig())
    kept = sorted(read_documents(tmp_path / "out", columns=["id"]).column("id").to_pylist())
    assert kept == ["a1", "a3", "a4", "a5", "a6"]


def test_resume_after_a_failed_signing_part(
    tmp_path: Path, corpus: list[dict], reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.dedup import signatures

    source = write_input(tmp_path / "in", corpus, parts=3)
    real = signatures.sign_batch

    def flaky(table: pa.Table, first_row: int, config: DedupConfig):  # noqa: ANN202
        if corpus[5]["id"] in table.column("id").to_pylist():
            raise OSError("disk went away")
        return real(table, first_row, config)

    monkeypatch.setattr(signatures, "sign_batch", flaky)
    with pytest.raises(RunIncomplete, match="disk went away"):
        run_dedup(source, tmp_path / "out", DedupConfig(batch_size=64), keep_rejected=True)
    assert not list((tmp_path / "out" / "documents").glob("*.parquet")), "no output before every part is signed"
    monkeypatch.setattr(signatures, "sign_batch", real)
    run_dedup(source, tmp_path / "out", DedupConfig(batch_size=64), keep_rejected=True)
    got = sorted((r["id"], r["dup_cluster_id"]) for r in all_rows(tmp_path / "out").to_pylist())
    assert got == sorted((r["id"], r["dup_cluster_id"]) for r in all_rows(reference).to_pylist())


_KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from pipeline.dedup import dedup_pass
from pipeline.dedup.config import DedupConfig
from pipeline.core.parts import PartWriter

real_write = PartWriter.write
def write(self, kept, rejected=None):
    real_write(self, kept, rejected)
    if self.name == "part-00002":  # two parts committed, the third half-written: die
        os.kill(os.getpid(), signal.SIGKILL)
PartWriter.write = write
dedup_pass.run_dedup(Path(sys.argv[1]), Path(sys.argv[2]), DedupConfig(batch_size=64), keep_rejected=True)
"""


def test_kill_mid_part_then_rerun_gives_every_document_once(
    tmp_path: Path, corpus: list[dict], reference: Path
) -> None:
    source = write_input(tmp_path / "in", corpus, parts=3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(source), str(out)], env=env, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert list((out / "documents").glob(".part-00002.parquet.*")), "the kill should leave a half-written part"
    assert (out / "markers" / "part-00001.done").exists() and not (out / "markers" / "part-00002.done").exists()
    run_dedup(source, out, DedupConfig(batch_size=64), keep_rejected=True)
    assert not list((out / "documents").glob(".*")), "leftovers of the killed attempt remain"
    rows = all_rows(out).to_pylist()
    assert len(rows) == len({r["id"] for r in rows}) == len(corpus)
    got = sorted((r["id"], r["dup_cluster_id"]) for r in rows)
    assert got == sorted((r["id"], r["dup_cluster_id"]) for r in all_rows(reference).to_pylist())


def test_rerun_with_other_input_is_refused(tmp_path: Path, corpus: list[dict]) -> None:
    source = write_input(tmp_path / "in", corpus[:30], parts=2)
    run_dedup(source, tmp_path / "out", DedupConfig())
    write_input(tmp_path / "in", corpus[:40], parts=2)
    with pytest.raises(ValueError, match="other input parts or dedup settings"):
        run_dedup(source, tmp_path / "out", DedupConfig())


def test_exact_only_minhash_only_and_an_empty_part(tmp_path: Path, corpus: list[dict]) -> None:
    family = [d for d in corpus if d["family"] == 0]
    source = write_input(tmp_path / "in", family, parts=len(family) + 1)  # one part has no rows
    kinds = {d["id"]: d["kind"] for d in family}

    run_dedup(source, tmp_path / "exact", DedupConfig(minhash=MinHashConfig(enabled=False)))
    stats = total_stats(tmp_path / "exact")
    assert [s.name for s in stats.stages] == [EXACT_STAGE]
    kept = read_documents(tmp_path / "exact", columns=["id"]).column("id").to_pylist()
    assert sorted(kinds[i] for i in kept if kinds[i] in ("base", "copy", "light")) in (["base"], ["copy"], ["light"])
    assert len(kept) == len(family) - 2

    run_dedup(source, tmp_path / "near", DedupConfig(exact=False), keep_rejected=True)
    assert [s.name for s in total_stats(tmp_path / "near").stages] == [MINHASH_STAGE]
    near = read_documents(tmp_path / "near", columns=["id"]).column("id").to_pylist()
    assert len(near) < len(family) - 2  # copies go through MinHash (J = 1) together with the near duplicates
    cluster_of = {r["id"]: r["dup_cluster_id"] for r in all_rows(tmp_path / "near").to_pylist()}
    assert len({cluster_of[i] for i, kind in kinds.items() if kind in ("base", "copy", "light")}) == 1


def test_signing_a_part_leaves_the_temporary_files_of_parts_named_after_it(tmp_path: Path, corpus: list[dict]) -> None:
    """``part-00001`` clears what a killed attempt at it left, never the files ``part-00001.00000`` (a chunk of
    it, signed by another worker at the same moment) is writing."""
    from pipeline.dedup.signatures import SignPart
    from pipeline.engines.base import WorkUnit

    inp = write_input(tmp_path / "in", corpus[:20], parts=1)
    out = tmp_path / "sig"
    out.mkdir()
    others = [out / ".part-00000.00000.sig.npy.123.tmp", out / ".part-00000.00000.parquet.123.tmp"]
    own = [out / ".part-00000.sig.npy.456.tmp", out / ".part-00000.parquet.456.tmp"]
    for path in others + own:
        path.write_bytes(b"x")
    SignPart(DedupConfig())(WorkUnit("part-00000", (str(inp / "documents" / "part-00000.parquet"),)), out)
    assert all(p.exists() for p in others) and not any(p.exists() for p in own)
    assert (out / "part-00000.sig.npy").exists() and (out / "markers" / "part-00000.done").exists()
