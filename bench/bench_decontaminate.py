"""Benchmark decontamination: index build time for a 20 MB benchmark file, and the stage's docs/s on real documents.

Run: ``.venv/bin/python -m bench.bench_decontaminate``; writes ``bench/results/decontaminate.md``.

The benchmark file (``--mb``, JSONL, also written as Parquet and as plain text) holds entries of 20-60 words drawn
from the vocabulary of the language-ID sentences of 75 languages (``../shared/realdata``), so nearly every n-gram is
distinct: the largest index a file of that size makes. Build time is the median of ``--rounds`` builds, each reading
the file. Documents are the PII bench's real texts (AEB article bodies, CC text samples and WET, one document of
sentences per language, trafilatura's text of the genuine CC records), once as they are and once with a benchmark
entry planted into every tenth; the stage runs inside ``run_chain`` on Arrow batches of ``--batch-size`` with the
20 MB index. datatrove's ``NGramsDecontFilter`` (one document at a time, its index loaded from the hashes file its
indexer writes, built here with its own normalisation, word tokenizer and hash) runs on the same documents with the
same entries indexed, for comparison (``--no-datatrove`` skips it).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_pii import real_texts
from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.config import DecontaminateConfig
from filters.decontaminate import BenchmarkIndex, DecontaminateStage, build_index
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats

log = logging.getLogger("bench.decontaminate")


def benchmark_entries(root: Path, size: int, seed: int = 0) -> list[str]:
    """Entries of 20-60 words from the vocabulary of real sentences, about ``size`` bytes of UTF-8 in all."""
    vocab: set[str] = set()
    for path in sorted((root / "langid_lingua" / "sentences").glob("*.txt")):
        vocab.update(path.read_text(encoding="utf-8").split())
    words, rng = sorted(vocab), random.Random(seed)
    entries, total = [], 0
    while total < size:
        entries.append(" ".join(rng.choices(words, k=rng.randint(20, 60))))
        total += len(entries[-1].encode()) + 12  # the JSON around it
    return entries


def write_files(entries: list[str], folder: Path) -> dict[str, Path]:
    files = {"jsonl": folder / "bench.jsonl", "parquet": folder / "bench.parquet", "text": folder / "bench.txt"}
    files["jsonl"].write_text("".join(json.dumps({"text": e}, ensure_ascii=False) + "\n" for e in entries), "utf-8")
    pq.write_table(pa.table({"text": entries}), files["parquet"])
    files["text"].write_text("\n".join(entries) + "\n", "utf-8")
    return files


def median_seconds(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_rows(files: dict[str, Path], rounds: int) -> tuple[list[list[object]], BenchmarkIndex]:
    rows, index = [], None
    for kind, path in files.items():
        config = DecontaminateConfig.model_validate({"benchmarks": [{"name": "bench", "path": str(path)}]})
        index = build_index(config)
        seconds = median_seconds(lambda config=config: build_index(config), rounds)
        mb = path.stat().st_size / 1e6
        pickled = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)
        ship = median_seconds(lambda pickled=pickled: pickle.loads(pickled), rounds)
        rows.append([kind, f"{mb:.1f}", f"{len(index):,}", f"{seconds:.2f}", f"{mb / seconds:.1f}",
                     f"{len(pickled) / 1e6:.1f}", f"{ship * 1000:.0f}"])  # fmt: skip
        log.info("%s: %.1f MB indexed in %.2f s (%d n-grams)", kind, mb, seconds, len(index))
    assert index is not None
    return rows, index


def planted(texts: list[str], entries: list[str]) -> list[str]:
    """Every tenth text with a benchmark entry in its middle."""
    out = []
    for i, text in enumerate(texts):
        if i % 10 == 0:
            middle = len(text) // 2
            text = f"{text[:middle]} {entries[i]} {text[middle:]}"
        out.append(text)
    return out


def ours(index: BenchmarkIndex, texts: list[str], batch_size: int) -> Callable[[], int]:
    stage = DecontaminateStage(DecontaminateConfig(), index)
    batches = [pa.table({"text": pa.array(texts[i : i + batch_size], pa.large_string())})
               for i in range(0, len(texts), batch_size)]  # fmt: skip

    def run() -> int:
        stats = PartStats("bench")
        for batch in batches:
            run_chain([stage], batch, stats)
        return sum(stats.stage("decontaminate").drops.values())

    return run


def theirs(entries: list[str], folder: Path) -> tuple[Callable[[list[str]], int], float]:
    """datatrove's filter with the same entries indexed as its indexer would; also its index build seconds."""
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    config = NGramsDecontConfig(n_grams=13)
    tokenizer, hash_func = load_word_tokenizer("en"), create_hash_func(config.hash_config)
    start = time.perf_counter()
    hashes: set[int] = set()
    for entry in entries:  # NGramsDecontIndexer.compute_hashes for a label without a query
        words = tokenizer.word_tokenize(simplify_text(entry, config.norm_config))
        hashes.update(map(hash_func, map(" ".join, ngrams(words, config.n_grams))))
    np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(folder / "bench.index.hashes")
    build_s = time.perf_counter() - start
    decont = NGramsDecontFilter(str(folder), config=config)
    decont.load_index_hashes()

    def run(texts: list[str]) -> int:
        return sum(decont.filter(Document(text=t, id=str(i))) is not True for i, t in enumerate(texts))

    return run, build_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="Size of the benchmark file (MB of JSONL).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--no-datatrove", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = realdata_dir()
    entries = benchmark_entries(root, int(args.mb * 1e6))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build, index = build_rows(write_files(entries, folder), args.rounds)
        texts = real_texts(root)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        sets = {"real texts": texts, "real texts, 1 in 10 planted": planted(texts, entries)}
        speed = []
        if not args.no_datatrove:
            (folder / "datatrove").mkdir()
            dt_run, dt_build = theirs(entries, folder / "datatrove")
            log.info("datatrove index built in %.1f s", dt_build)
        for name, docs in sets.items():
            run = ours(index, docs, args.batch_size)
            dropped = run()
            seconds = median_seconds(run, args.rounds)
            row = [name, len(docs), f"{mb:.1f}", dropped, f"{len(docs) / seconds:,.0f}", f"{mb / seconds:.1f}"]
            if not args.no_datatrove:
                dt_dropped = dt_run(docs)
                dt_seconds = median_seconds(lambda docs=docs: dt_run(docs), 1)
                row += [dt_dropped, f"{len(docs) / dt_seconds:,.0f}", f"{dt_seconds / seconds:.1f}x", f"{dt_build:.1f}"]
            speed.append(row)
            log.info("%s: %s", name, row)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    build_table = markdown_table(["file", "MB", "n-grams", "build s", "MB/s", "pickled MB", "unpickle ms"], build)
    headers = ["documents", "docs", "MB", "dropped", "ours docs/s", "ours MB/s"]
    if not args.no_datatrove:
        headers += ["datatrove dropped", "datatrove docs/s", "speed-up", "datatrove index build s"]
    text = (
        f"# Benchmark decontamination ({when})\n\n{machine_info()}\n\n## Index build\n\n{build_table}\n\n"
        f"## Stage\n\n{markdown_table(headers, speed)}\n"
    )
    path = write_result("decontaminate.md", text)
    print(text)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
