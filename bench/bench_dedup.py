"""Dedup benchmarks: MinHash signature throughput (ours vs datatrove vs datasketch) and the full pass at scale.

1. Signatures, one process, the same generated documents for every side:
   - ours: ``minhash_signatures`` on batches of 1,000 texts (normalise, shingle, 112 permutations);
   - datatrove: ``MinhashDedupSignature.get_shingles`` + ``get_signature`` per document in a loop: the per-document
     code path of its signature step (English: its spaCy word tokenizer), without the step's bucket-file writing
     and sorting, which would only add to its time;
   - datasketch: a plain loop of ``MinHash(num_perm=112).update(shingle)`` per 5-gram, the shingles made with our
     normalisation so only the hashing engine differs; ``update_batch`` as a second row.
2. The full pass (``run_dedup``'s three steps, 2 workers) on 100k / 500k / 2M documents generated from real text
   (``--docs``), each in a fresh subprocess: wall time per step and peak RSS of the main process (clustering)
   and of the worker processes (signing, writing).
3. Band grouping, numpy sort vs DuckDB ``GROUP BY``, on the largest run's spilled band hashes: the measurement
   behind the choice of numpy for grouping.

Documents: each is 4-9 paragraphs of 2-6 sentences drawn at random from real text (the article bodies of the
extraction benchmark, Common Crawl text samples, lingua's sentences; 80% English, 20% in one of 74 other
languages), 2-5 KB. A quarter of the documents are planted duplicates of others, in clusters with Zipf-distributed
sizes: exact copies, case/whitespace changes, 0.5-1.5% of words replaced, added boilerplate, reordered paragraphs.

    python -m bench.bench_dedup --docs 100000 500000
    python -m bench.bench_dedup --docs 2000000 --skip-signatures
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from bench.common import REPO, machine_info, markdown_table, realdata_dir, write_result

log = logging.getLogger("bench.dedup")

DUMP = "CC-MAIN-2024-22"
DOCS_PER_PART = 20_000
DUP_FRACTION = 0.25
REPEATS = 3
OPS = ("copy", "light", "edit", "boilerplate", "reorder")
OP_WEIGHTS = (0.30, 0.10, 0.30, 0.15, 0.15)
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


# --------------------------------------------------------------------------------------------- documents


def sentence_pool(realdata: Path) -> dict[str, list[str]]:
    """Real sentences by language: English from article bodies, CC samples and lingua; others from lingua."""
    english: list[str] = []
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    texts = [v["articleBody"] for v in truth.values()]
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    for text in texts:
        english += [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]
    pool = {"en": english}
    for path in sorted((realdata / "langid_lingua" / "sentences").glob("*.txt")):
        lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        if path.stem == "en":
            pool["en"] += lines
        else:
            pool[path.stem] = lines
    return pool


class Generator:
    """Deterministic documents: ``original(k)`` and ``variant(text, op, k)`` depend only on the seed and ``k``."""

    def __init__(self, pool: dict[str, list[str]], seed: int) -> None:
        self.pool = pool
        self.languages = sorted(k for k in pool if k != "en")
        self.seed = seed
        self.boilerplate = [" ".join(random.Random(seed + i).sample(pool["en"], 3)) for i in range(200)]

    def _rng(self, k: int, salt: int = 0) -> random.Random:
        return random.Random((self.seed * 1_000_003 + salt) * 10_000_019 + k)

    def original(self, k: int) -> str:
        rng = self._rng(k)
        sentences = self.pool["en"] if rng.random() < 0.8 else self.pool[rng.choice(self.languages)]
        paragraphs = [" ".join(rng.choices(sentences, k=rng.randint(2, 6))) for _ in range(rng.randint(4, 9))]
        return "\n".join(paragraphs)

    def variant(self, text: str, op: str, k: int) -> str:
        rng = self._rng(k, salt=1)
        if op == "copy":
            return text
        if op == "light":
            return text.upper().replace(" ", "  ")
        if op == "edit":
            words = text.split(" ")
            for _ in range(max(1, int(len(words) * rng.uniform(0.005, 0.015)))):
                words[rng.randrange(len(words))] = rng.choice(self.pool["en"]).split(" ")[0]
            return " ".join(words)
        if op == "boilerplate":
            return "\n".join([rng.choice(self.boilerplate), text, rng.choice(self.boilerplate)])
        paragraphs = text.split("\n")
        rng.shuffle(paragraphs)
        return "\n".join(paragraphs)


def plan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot: the original it copies (-1 for originals), the variant op, and the order slots are written in."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * DUP_FRACTION)
    n_orig = n - n_dup
    sizes = np.minimum(rng.zipf(1.8, size=n_dup), 5_000)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_dup) + 1]
    sizes[-1] -= sizes.sum() - n_dup
    roots = rng.choice(n_orig, size=len(sizes), replace=False)
    source = np.full(n, -1, dtype=np.int64)
    source[n_orig:] = np.repeat(roots, sizes)
    ops = np.full(n, -1, dtype=np.int8)
    ops[n_orig:] = rng.choice(len(OPS), size=n_dup, p=OP_WEIGHTS)
    return source, ops, rng.permutation(n)


def doc_id(seed: int, slot: int) -> str:
    h = xxhash.xxh3_128_hexdigest(f"{seed}:{slot}")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _write_part(args: tuple) -> int:
    from pipeline.core.parts import PartWriter, part_name
    from pipeline.core.stats import PartStats

    directory, part, slots, sources, ops, pool, seed = args
    gen = Generator(pool, seed)
    texts, urls = [], []
    for slot, src, op in zip(slots.tolist(), sources.tolist(), ops.tolist(), strict=True):
        if src < 0:
            texts.append(gen.original(slot))
            urls.append(f"https://site{slot % 7919}.example/page/{slot}")
        else:
            texts.append(gen.variant(gen.original(src), OPS[op], slot))
            urls.append(f"https://site{src % 7919}.example/page/{src}?copy={slot}")
    table = pa.table(
        {
            "id": [doc_id(seed, s) for s in slots.tolist()],
            "url": urls,
            "domain": [u.split("/")[2] for u in urls],
            "dump": [DUMP] * len(urls),
            "text": pa.array(texts, pa.large_string()),
        }
    )
    name = part_name(part)
    with PartWriter(directory, name) as writer:
        writer.write(table)
        writer.commit(PartStats(part=name))
    return int(pc.sum(pc.binary_length(table.column("text"))).as_py())


def generate(directory: Path, n: int, seed: int, workers: int) -> dict:
    """Write (or reuse) ``n`` documents as WARC-pass output; returns what was planted."""
    meta_path = directory / "bench-meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("docs") == n and meta.get("seed") == seed:
            return meta
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    pool = sentence_pool(realdata_dir())
    source, ops, order = plan(n, seed)
    tasks = []
    for p, first in enumerate(range(0, n, DOCS_PER_PART)):
        slots = order[first : first + DOCS_PER_PART]
        tasks.append((directory, p, slots, source[slots], ops[slots], pool, seed))
    with get_context("fork").Pool(workers) as pool_:
        text_bytes = sum(pool_.imap_unordered(_write_part, tasks))
    roots = np.unique(source[source >= 0])
    meta = {
        "docs": n,
        "seed": seed,
        "parts": len(tasks),
        "text_bytes": text_bytes,
        "planted_duplicates": int((source >= 0).sum()),
        "planted_clusters": len(roots),
        "largest_planted_cluster": int(np.bincount(source[source >= 0]).max() + 1) if len(roots) else 1,
        "seconds": time.perf_counter() - start,
    }
    meta_path.write_text(json.dumps(meta))
    return meta


# --------------------------------------------------------------------------------------------- 1. signatures


def _time(fn: object, *args: object, repeats: int = 1) -> float:
    """Best of ``repeats`` wall times: the machine is shared, the fastest run is the least disturbed one."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def signature_throughput(texts: list[str], datatrove_docs: int) -> list[list[object]]:
    from datasketch import MinHash
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from pipeline.dedup.config import MinHashConfig
    from pipeline.dedup.minhash import minhash_signatures, normalize_texts, shingle_hashes, signatures_from_shingles

    config = MinHashConfig()
    minhash_signatures(texts[:10], config)  # warm-up: permutation table, regex compile

    def ours(batch_texts: list[str]) -> None:
        for i in range(0, len(batch_texts), 1000):
            minhash_signatures(batch_texts[i : i + 1000], config)

    step = MinhashDedupSignature(output_folder="/tmp/bench-dedup-unused", config=MinhashConfig())
    step.get_signature(step.get_shingles(texts[0]))  # loads spaCy

    def datatrove(batch_texts: list[str]) -> None:
        for text in batch_texts:
            shingles = step.get_shingles(text)
            if shingles.size:
                step.get_signature(shingles)

    permutations = MinHash(num_perm=config.num_perm).permutations

    def shingle_strings(text: str) -> list[bytes]:
        words = normalize_texts([text])[0].split()
        return [" ".join(words[i : i + 5]).encode() for i in range(len(words) - 4)]

    def datasketch_update(batch_texts: list[str]) -> None:
        for text in batch_texts:
            m = MinHash(num_perm=config.num_perm, permutations=permutations, scheme="affine32")
            for shingle in shingle_strings(text):
                m.update(shingle)

    def datasketch_batch(batch_texts: list[str]) -> None:
        for text in batch_texts:
            m = MinHash(num_perm=config.num_perm, permutations=permutations, scheme="affine32")
            m.update_batch(shingle_strings(text))

    sub = texts[:datatrove_docs]
    sides = (
        ("ours: minhash_signatures (batches of 1,000)", ours),
        ("datatrove MinhashDedupSignature: get_shingles + get_signature per doc", datatrove),
        ("datasketch: MinHash.update per shingle", datasketch_update),
        ("datasketch: MinHash.update_batch per doc", datasketch_batch),
    )
    best = {name: float("inf") for name, _ in sides}
    for _ in range(REPEATS):  # rounds of every side in turn, so load changes hit all sides alike
        for name, fn in sides:
            best[name] = min(best[name], _time(fn, sub))
    ours_s = best[sides[0][0]]
    rows = [[name, len(sub), best[name], len(sub) / best[name], best[name] / ours_s] for name, _ in sides]
    # ours on all documents, and where its time goes
    normalized_s = _time(normalize_texts, texts, repeats=REPEATS)
    normalized = normalize_texts(texts)
    hash_s = _time(shingle_hashes, normalized, 5, 1, repeats=REPEATS)
    hashes, offsets = shingle_hashes(normalized, 5, 1)
    perm_s = _time(signatures_from_shingles, hashes, offsets, config, repeats=REPEATS)
    total = normalized_s + hash_s + perm_s
    rows.append(
        [
            f"ours on all {len(texts):,} docs (normalise {normalized_s / total:.0%}, word/shingle hashes "
            f"{hash_s / total:.0%}, permutations {perm_s / total:.0%})",
            len(texts),
            total,
            len(texts) / total,
            "",
        ]
    )
    return rows


# --------------------------------------------------------------------------------------------- 2. the full pass


def _peak_rss_kb() -> int:
    """This process's peak RSS since exec (VmHWM); ``ru_maxrss`` would also count the forked parent's image."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_pass(input_dir: Path, output_dir: Path, workers: int) -> dict:
    """The three steps of ``run_dedup``, timed apart (run in a fresh process by the benchmark)."""
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.dedup_pass import apply_parts, check_fingerprint, fingerprint, input_units, sign_parts
    from pipeline.dedup.local_clustering import cluster
    from pipeline.dedup.signatures import WORK

    config = DedupConfig()
    units = input_units(input_dir)
    check_fingerprint(output_dir / WORK, fingerprint(units, config))
    seconds = {}
    start = time.perf_counter()
    sign_parts(units, output_dir, config, workers=workers, progress=False)
    seconds["sign"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = cluster(output_dir, [u.part for u in units], config)
    seconds["cluster"] = time.perf_counter() - start
    rss_after_cluster = _peak_rss_kb()
    start = time.perf_counter()
    apply_parts(units, output_dir, config, workers=workers, progress=False, keep_rejected=False)
    seconds["apply"] = time.perf_counter() - start
    return {
        "seconds": seconds,
        "summary": summary,
        "rss_main_kb": _peak_rss_kb(),
        "rss_main_after_cluster_kb": rss_after_cluster,
        "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def full_pass(data_root: Path, n: int, seed: int, workers: int, reuse: bool) -> dict:
    """Generate (or reuse) the input, run the pass in a fresh process, check what it found.

    With ``reuse``, a finished earlier measurement of the same input (``bench-result.json``) is reported again.
    """
    input_dir = data_root / f"input-{n}"
    meta = generate(input_dir, n, seed, workers)
    output_dir = data_root / f"output-{n}"
    saved = output_dir / "bench-result.json"
    if reuse and saved.exists():
        row = json.loads(saved.read_text())
        if row["meta"] == meta:
            log.info("%d docs: reusing the measurement of %s", n, row["date"])
            return row
    shutil.rmtree(output_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench.bench_dedup", "--run-pass", str(input_dir), str(output_dir)]
    load_before = _load()
    start = time.perf_counter()
    proc = subprocess.run([*cmd, "--workers", str(workers)], env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pass failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    from pipeline.core.parts import read_documents

    kept = set(read_documents(output_dir, columns=["id"]).column("id").to_pylist())
    source, ops, _ = plan(n, seed)
    singletons = np.setdiff1d(np.flatnonzero(source < 0), source[source >= 0])
    row = {
        "docs": n,
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "load": f"{load_before} / {_load()}",
        "meta": meta,
        "wall": wall,
        "result": result,
        "kept": len(kept),
        "singletons_removed": sum(1 for s in singletons.tolist() if doc_id(seed, s) not in kept),
        "work_bytes": _dir_bytes(output_dir / "_work"),
        "report": json.loads((output_dir / "dedup_clusters.json").read_text()),
        "per_op": planted_recall(output_dir, source, ops, seed),
    }
    saved.write_text(json.dumps(row))
    return row


def planted_recall(output_dir: Path, source: np.ndarray, ops: np.ndarray, seed: int, sample: int = 300) -> list:
    """Per variant kind, on a sample of (original, copy) pairs: exact Jaccard and whether they share a cluster."""
    from pipeline.dedup.minhash import normalize_text

    def shingles(text: str) -> set[tuple[str, ...]]:
        words = normalize_text(text).split()
        return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}

    sig_dir, assign_dir = output_dir / "_work" / "signatures", output_dir / "_work" / "clusters" / "assign"
    ids = pa.concat_arrays(
        [pq.read_table(f, columns=["id"]).column(0).combine_chunks() for f in sorted(sig_dir.glob("*.parquet"))]
    )
    clusters = pa.concat_arrays(
        [
            pq.read_table(f, columns=["dup_cluster_id"]).column(0).combine_chunks()
            for f in sorted(assign_dir.glob("*.parquet"))
        ]
    )
    rng = np.random.default_rng(seed)
    gen = Generator(sentence_pool(realdata_dir()), seed)
    rows = []
    for code, op in enumerate(OPS):
        slots = np.flatnonzero(ops == code)
        chosen = rng.choice(slots, size=min(sample, len(slots)), replace=False)
        wanted = {doc_id(seed, int(s)) for s in chosen} | {doc_id(seed, int(source[s])) for s in chosen}
        mask = pc.is_in(ids, pa.array(sorted(wanted)))
        cluster_of = dict(zip(ids.filter(mask).to_pylist(), clusters.filter(mask).to_pylist(), strict=True))
        jaccards, found = [], []
        for slot in chosen.tolist():
            root = int(source[slot])
            original = gen.original(root)
            a, b = shingles(original), shingles(gen.variant(original, op, slot))
            jaccards.append(len(a & b) / max(len(a | b), 1))
            found.append(cluster_of[doc_id(seed, slot)] == cluster_of[doc_id(seed, root)])
        j = np.array(jaccards)
        f = np.array(found)
        rows.append(
            [op, len(slots), len(chosen), float(np.median(j)), float(j.min()), float(f.mean()),
             float(f[j >= 0.85].mean()) if (j >= 0.85).any() else float("nan")]
        )  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------- 3. grouping


def grouping_comparison(work_sig_dir: Path, bands: int, threads: int) -> list[list[object]]:
    """Candidate pairs of every band from the spilled band hashes: numpy sort vs DuckDB GROUP BY (same pairs)."""
    import duckdb

    from pipeline.dedup.clustering import bucket_pairs

    files = sorted(work_sig_dir.glob("part-*.parquet"))
    columns = [f"band_{b:03d}" for b in range(bands)]
    table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
    n = table.num_rows
    position = np.arange(n, dtype=np.int64)
    scope = np.zeros(n, dtype=np.int32)
    start = time.perf_counter()
    numpy_pairs = 0
    for c in columns:
        heads, _ = bucket_pairs(table.column(c).to_numpy(), scope, position)
        numpy_pairs += len(heads)
    numpy_s = time.perf_counter() - start

    con = duckdb.connect()
    con.execute(f"SET threads={threads}; SET memory_limit='2GB'; SET temp_directory='{work_sig_dir.parent / 'duck'}'")
    duck_pairs = 0
    start = time.perf_counter()
    for c in columns:
        band = pa.table({"l": position, "key": table.column(c)})  # noqa: F841 - read by DuckDB
        query = (
            "SELECT count(*) FROM band t JOIN (SELECT key, min(l) AS head FROM band GROUP BY key "
            "HAVING count(*) > 1) g USING (key) WHERE t.l <> g.head"
        )
        duck_pairs += con.execute(query).fetchone()[0]
    duck_s = time.perf_counter() - start
    if duck_pairs != numpy_pairs:
        raise SystemExit(f"grouping disagrees: numpy {numpy_pairs} pairs, DuckDB {duck_pairs}")
    return [
        ["numpy: lexsort per band (one process)", n, bands, numpy_pairs, numpy_s],
        [f"DuckDB {duckdb.__version__}: GROUP BY + join per band ({threads} threads, 2 GB limit)", n, bands,
         duck_pairs, duck_s],
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------- report


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _mb(kb: int) -> float:
    return kb / 1024


def render(args: argparse.Namespace, sig_rows: list, pass_rows: list[dict], grouping: list) -> str:
    from importlib.metadata import version

    lines = [
        "## Dedup: MinHash signatures and the full pass",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {machine_info()}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM",
        f"- packages: numpy {version('numpy')}, pyarrow {version('pyarrow')}, xxhash {version('xxhash')}, "
        f"datatrove {version('datatrove')}, datasketch {version('datasketch')}",
        f"- command: `python -m bench.bench_dedup {shlex.join(sys.argv[1:])}`",
        f"- load average (1, 5, 15 min) at start / end: {args.load_start} / {_load()} (the machine is shared; "
        "signature rows are the best of 3 rounds)",
        "",
    ]
    if sig_rows:
        lines += [
            "### 1. Signature throughput (one process, same documents, 112 permutations, 5-grams)",
            "",
            markdown_table(["implementation", "docs", "seconds", "docs/s", "x ours' time"], sig_rows),
            "",
        ]
    if pass_rows:
        table = []
        for r in pass_rows:
            s = r["result"]["seconds"]
            summary = r["result"]["summary"]
            table.append(
                [
                    r["docs"],
                    r["meta"]["text_bytes"] / 1e9,
                    r["wall"],
                    s["sign"],
                    s["cluster"],
                    s["apply"],
                    r["docs"] / r["wall"],
                    _mb(r["result"]["rss_main_kb"]),
                    _mb(r["result"]["rss_children_kb"]),
                    r["work_bytes"] / 1e9,
                    summary["exact_duplicates"],
                    summary["near_duplicates"],
                    r["kept"],
                ]
            )
        headers = ["docs", "text GB", "wall s", "sign s", "cluster s", "write s", "docs/s", "peak RSS main MB",
                   "peak RSS worker MB", "_work GB", "exact dups", "near dups", "kept"]  # fmt: skip
        lines += [
            f"### 2. Full dedup pass ({args.workers} workers for signing and writing, clustering in the main process)",
            "",
            markdown_table(headers, table),
            "",
        ]
        lines += [
            "Planted (original, copy) pairs per variant kind, a sample of each, checked against exact Jaccard "
            "(with our normalisation and 5-grams) and the cluster assignment:",
            "",
        ]
        for r in pass_rows:
            lines += [
                f"{r['docs']:,} docs:",
                "",
                markdown_table(
                    ["variant", "planted", "sampled", "median J", "min J", "same cluster", "same cluster, J >= 0.85"],
                    r["per_op"],
                ),
                "",
            ]
        lines += [
            "What each run removed (planted duplicates are copies; a copy may be the one kept of its cluster when "
            "it has the smallest id, so removed = planted means every planted cluster was found whole):",
            "",
        ]
        for r in pass_rows:
            meta = r["meta"]
            removed_total = r["docs"] - r["kept"]
            expected_removed = meta["planted_duplicates"]
            top = r["report"]["top_clusters"][:1]
            lines.append(
                f"- {r['docs']:,} docs: {meta['planted_duplicates']:,} planted duplicates in "
                f"{meta['planted_clusters']:,} clusters (largest {meta['largest_planted_cluster']:,}); removed "
                f"{removed_total:,} ({removed_total / max(expected_removed, 1):.1%} of planted); unique documents "
                f"removed: {r['singletons_removed']:,}; biggest cluster found: {top[0]['size'] if top else 0:,}; "
                f"candidate pairs {r['report']['pairs'].get('candidates', 0):,}, linked "
                f"{r['report']['pairs'].get('linked', 0):,}; data generation {meta['seconds']:.0f} s (not in wall); "
                f"measured {r['date']}, load average before / after {r['load']}"
                + (f"; {r['rss_note']}." if r.get("rss_note") else ".")
            )
        lines.append("")
    if grouping:
        lines += [
            "### 3. Band grouping: numpy vs DuckDB (all bands of the largest run, candidate pairs only)",
            "",
            markdown_table(["engine", "docs", "bands", "pairs", "seconds"], grouping),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="*", default=[100_000], help="Full-pass sizes.")
    parser.add_argument("--sig-docs", type=int, default=20_000, help="Documents for our signature throughput.")
    parser.add_argument("--datatrove-docs", type=int, default=1_000, help="Documents for the side-by-side rows.")
    parser.add_argument("--skip-signatures", action="store_true")
    parser.add_argument("--skip-grouping", action="store_true")
    parser.add_argument(
        "--reuse", action="store_true", help="Report saved measurements (signatures, passes) instead of rerunning."
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--data", type=Path, default=Path("/tmp/cc-refinery-bench/dedup"), help="Generated data.")
    parser.add_argument("--output", default="dedup.md", help="File name under bench/results/.")
    parser.add_argument("--run-pass", nargs=2, type=Path, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args.load_start = _load()
    if args.run_pass:
        print(json.dumps(run_pass(args.run_pass[0], args.run_pass[1], args.workers)))
        return

    sig_rows: list = []
    if not args.skip_signatures:
        saved = args.data / "signatures-result.json"
        if args.reuse and saved.exists():
            sig_rows = json.loads(saved.read_text())
        else:
            gen = Generator(sentence_pool(realdata_dir()), args.seed)
            texts = [gen.original(k) for k in range(args.sig_docs)]
            log.info("signatures: %d docs, %.0f bytes on average", len(texts), sum(map(len, texts)) / len(texts))
            sig_rows = signature_throughput(texts, min(args.datatrove_docs, len(texts)))
            args.data.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(sig_rows))
    pass_rows = []
    for n in args.docs:
        log.info("full pass: %d docs", n)
        pass_rows.append(full_pass(args.data, n, args.seed, args.workers, args.reuse))
        log.info("%d docs: %.1f s", n, pass_rows[-1]["wall"])
    grouping: list = []
    if pass_rows and not args.skip_grouping:
        largest = max(args.docs)
        grouping = grouping_comparison(args.data / f"output-{largest}" / "_work" / "signatures", 14, args.workers)
    text = render(args, sig_rows, pass_rows, grouping)
    path = write_result(args.output, text + "\n")
    print(text)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
