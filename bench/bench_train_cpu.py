"""CPU training throughput of the shard-validation job, on real GPT-2 shards.

Builds GPT-2 shards from the real English texts in ``../shared/realdata`` (AEB article bodies, CCNet/dolma
documents), then runs ``validate_shards`` with the tiny preset (what the tests run) and a ~10M-parameter
full-vocabulary configuration, and records tokens/s (training steps only: no eval, no first step) and the
verdict. Results go to ``bench/results/train_cpu.md``.

    python -m bench.bench_train_cpu                 # both configurations
    python -m bench.bench_train_cpu --small-steps 30
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from tokenization.encoders import load_tokenizer
from tokenization.shards import sha256_file, split_of, write_manifest, write_shard
from validation.validate import ValidationReport, preset, validate_shards

log = logging.getLogger("bench.train_cpu")


def real_texts(realdata: Path) -> list[str]:
    ground_truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    texts = [ground_truth[key]["articleBody"] for key in sorted(ground_truth)]
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f if line.strip())
    return [t for t in texts if t and t.strip()]


def build_shards(out: Path) -> Path:
    """val_000000.bin = every 5th document (up to 8,192 tokens), the rest in two train shards; manifest.json."""
    tokenizer = load_tokenizer("gpt2")
    docs = tokenizer.encode_arrays(real_texts(realdata_dir()))
    to_val = [i % 5 == 0 and len(d) <= 8192 for i, d in enumerate(docs)]
    train = [d for d, v in zip(docs, to_val, strict=True) if not v]
    groups = [[d for d, v in zip(docs, to_val, strict=True) if v], train[0::2], train[1::2]]
    entries = []
    for index, group in enumerate(groups):
        name = f"{'val' if index == 0 else 'train'}_{index:06d}.bin"
        tokens = np.concatenate([np.concatenate([[tokenizer.eot_token], d]) for d in group])
        header = write_shard(out / name, tokens, tokenizer.vocab_size)
        entries.append(
            {
                "name": name,
                "split": split_of(name),
                "num_tokens": header.num_tokens,
                "num_documents": len(group),
                "dtype": np.dtype(header.dtype).name,
                "sha256": sha256_file(out / name),
            }
        )
    manifest = {
        "tokenizer": {"name": tokenizer.name},
        "vocab_size": tokenizer.vocab_size,
        "eot_token": tokenizer.eot_token,
        "shards": entries,
    }
    write_manifest(out, manifest)
    return out


def row(name: str, threads: int, report: ValidationReport, wall: float) -> list[object]:
    model = report.model or {}
    tps = report.tokens_per_second or 0.0
    return [
        name,
        threads,
        model.get("params", 0),
        model.get("padded_vocab", 0),
        report.config["steps"],
        report.config["batch_size"] * report.config["block_size"],
        round(tps),
        tps * model.get("flops_per_token", 0) / 1e9,
        report.val_loss_over_unigram or float("nan"),
        report.verdict,
        wall,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-steps", type=int, default=12, help="steps of the ~10M-parameter run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cpus = os.cpu_count() or 1
    tiny = preset("tiny", device="cpu")
    small = replace(
        preset("small", device="cpu"),
        steps=args.small_steps,
        warmup_steps=max(1, args.small_steps // 10),
        eval_every=args.small_steps,
        eval_tokens=8192,
    )
    runs = [
        ("tiny (tests)", tiny, 1),
        ("tiny (tests)", replace(tiny, cpu_threads=cpus), cpus),
        ("~10M params, full vocabulary", replace(small, cpu_threads=1), 1),
        ("~10M params, full vocabulary", replace(small, cpu_threads=cpus), cpus),
    ]
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        shards = build_shards(Path(tmp) / "tokens")
        for name, config, threads in runs:
            started = time.perf_counter()
            report = validate_shards(shards, config)
            rows.append(row(name, threads, report, time.perf_counter() - started))
            log.info("%s, %d threads: %s tokens/s, %s", name, threads, rows[-1][6], report.verdict)
    headers = [
        "config",
        "threads",
        "params",
        "padded vocab",
        "steps",
        "tokens/step",
        "tokens/s",
        "GFLOP/s (model)",
        "val loss / unigram entropy",
        "verdict",
        "wall s",
    ]
    text = "\n".join(
        [
            "# Shard-validation training on CPU",
            "",
            f"Date: {time.strftime('%Y-%m-%d %H:%M')}  ",
            f"Machine: {machine_info()}, torch {torch.__version__}  ",
            f"Load average before the runs: {load_before:.2f} (other processes share these CPUs)  ",
            f"Command: `{' '.join(['python -m bench.bench_train_cpu', *(sys.argv[1:] if argv is None else argv)])}`",
            "",
            "Real GPT-2 shards (AEB article bodies + CCNet/dolma documents, ~234k tokens). tokens/s counts",
            "training steps only (forward, backward, AdamW), without evaluation or the first step. GFLOP/s uses",
            "the model's FLOPs per token (6 N + 6 L C T, llm.c's estimate). MFU is not reported on CPU.",
            "The ~10M-parameter rows measure throughput over a few steps; their verdict is not a validation",
            "result (the tiny preset's is). The tiny preset runs on one thread: its operations are too small",
            "to split, and where other processes load the CPUs, spin-waiting OpenMP threads slow each step down",
            "(compare the rows with 1 and with all threads).",
            "",
            markdown_table(headers, rows),
            "",
        ]
    )
    path = write_result("train_cpu.md", text)
    log.info("wrote %s", path)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
