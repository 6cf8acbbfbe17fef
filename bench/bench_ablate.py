"""What an ablation costs: CPU time at the test size, tokens/s and MFU per preset on CPU, the GPU estimate.

1. The test-size ablation: runs A (default chain) and B (quality filters and dedup off) of the real WARC samples
   (``tests.samples.ablation_runs``), reference = the AEB benchmark's article bodies, ``refinery ablate``'s code
   path (``run_ablation``) with the tiny preset, 5 seeds, the default budget (the smaller run's train tokens).
   Wall and CPU seconds of the whole call (tokenizing the reference included).
2. Per preset on CPU: a few training steps on run A's shards (``train_one``, the job's own loop; tokens/s counts
   steps after the first), model FLOP/s from the FLOPs per token (llm.c's 6 N + 6 L C T), and MFU against
   this CPU's own measured fp32 matmul peak at the same thread count (no datasheet peak exists for a CPU).
3. The GPU preset (gpt2-124m) on an H100 / A100: tokens/s at the project's 40% MFU goal from its FLOPs per token
   and the datasheet peaks the job uses (``validation.hardware``); no GPU on this machine to measure.

    python -m bench.bench_ablate            # results in bench/results/ablate.md
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from validation.ablate import AblationConfig, load_run, shared_vocab, train_one
from validation.data import eval_windows
from validation.hardware import lookup_peak_tflops, plan_hardware
from validation.model import count_params, flops_per_token
from validation.validate import preset

log = logging.getLogger("bench.ablate")

MFU_GOAL = 0.4
CPU_STEPS = {"tiny": 30, "small": 6, "gpt2-124m": 4}
CPU_BATCH = {"small": (8, 1), "gpt2-124m": (1, 1)}
"""(micro-batch, grad accumulation) on CPU for the big presets: their GPU batches take minutes per step here."""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def matmul_peak_gflops(threads: int, n: int = 1024, rounds: int = 20) -> float:
    """This CPU's fp32 matmul rate at ``threads`` threads, best of ``rounds``: the denominator of CPU MFU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def reference_parquet(folder: Path) -> Path:
    truth = json.loads((realdata_dir() / "extraction_aeb" / "ground-truth.json").read_text())
    texts = [truth[k]["articleBody"] for k in sorted(truth) if truth[k]["articleBody"].strip()]
    path = folder / "aeb.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    return path


def test_size_ablation(runs: dict[str, Path], reference: Path, seeds: int) -> tuple[list[object], dict]:
    from pipeline.app.ablate import run_ablation

    config = AblationConfig(tokens=None, seeds=tuple(range(seeds)), train=preset("tiny", "cpu"),
                            reference_tokens=40_000)  # fmt: skip
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    report, _ = run_ablation([str(runs["a"]), str(runs["b"])], str(reference), config, str(runs["a"].parent / "abl"))
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    models = len(report.models)
    tokens = report.config["steps"] * config.train.tokens_per_step
    speeds = sorted(m["tokens_per_second"] for m in report.models)
    row = [f"2 runs x {seeds} seeds", models, tokens, round(speeds[len(speeds) // 2]), round(wall, 1), round(cpu, 1),
           round(cpu / models, 2), report.pairs[0]["text"]]  # fmt: skip
    return row, report.to_dict()


def preset_throughput(name: str, run_dir: Path, peak_1: float) -> list[object]:
    """A few steps of ``name`` on one thread: tokens/s, model GFLOP/s, MFU vs the measured matmul peak."""
    base = preset(name, "cpu")
    batch, accum = CPU_BATCH.get(name, (base.batch_size, base.grad_accum))
    train = replace(base, batch_size=batch, grad_accum=accum, cpu_threads=1, compile=False)
    steps = CPU_STEPS[name]
    config = AblationConfig(tokens=steps * train.tokens_per_step, seeds=(0,), train=train, curve_points=1)
    run = load_run("a", run_dir / "tokens", train.block_size)
    vocab = shared_vocab([run], train.vocab_cap, train.count_sample_tokens)
    windows = eval_windows(run.val, train.block_size, 4 * train.block_size, vocab)
    plan = plan_hardware("cpu", False, None)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_one(run, 0, config, plan, vocab, (windows, windows, windows))
    finally:
        torch.set_num_threads(previous)
    gpt = train.model_config(vocab.size)
    per_token = flops_per_token(gpt)
    tps = result.tokens_per_second or 0.0
    gflops = tps * per_token / 1e9
    return [name, f"{count_params(gpt):,}", gpt.padded_vocab, f"{batch} x {accum} x {train.block_size}", steps,
            round(tps), round(gflops, 2), f"{gflops / peak_1:.1%}"]  # fmt: skip


def gpu_estimate() -> list[list[object]]:
    gpt = preset("gpt2-124m", "cpu").model_config(50257)
    per_token = flops_per_token(gpt)
    rows = []
    for device in ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"):
        label, peak = lookup_peak_tflops(device) or (device, 0.0)
        tps = MFU_GOAL * peak * 1e12 / per_token
        rows.append([label, peak, f"{per_token / 1e6:.0f} M", f"{tps:,.0f}", f"{1e9 / tps / 3600:.1f} h"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the test-size ablation (default 5, as the test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from tests.samples import ablation_runs

    command = " ".join(["python -m bench.bench_ablate", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="bench-ablate-") as tmp:
        base = Path(tmp)
        runs = ablation_runs(realdata_dir(), base)
        reference = reference_parquet(base)
        ablation_row, _ = test_size_ablation(runs, reference, args.seeds)
        log.info("test-size ablation: %s", ablation_row)
        peak_1 = matmul_peak_gflops(1)
        preset_rows = [preset_throughput(name, runs["a"], peak_1) for name in CPU_STEPS]
        for row in preset_rows:
            log.info("preset %s", row)
    text = "\n".join(
        [
            "# Ablation cost",
            "",
            f"Date: {time.strftime('%Y-%m-%d %H:%M')} UTC  ",
            f"Machine: {machine_info()}, torch {torch.__version__}  ",
            f"Command: `{command}`",
            "",
            "## The test-size ablation (tiny preset, CPU)",
            "",
            markdown_table(
                [
                    "ablation",
                    "models",
                    "tokens per model",
                    "tokens/s (median model)",
                    "wall s",
                    "CPU s",
                    "CPU s per model",
                    "verdict",
                ],
                [ablation_row],
            ),  # fmt: skip
            "",
            f"## Presets on CPU (one thread; fp32 matmul peak measured at one thread: {peak_1:.1f} GFLOP/s)",
            "",
            markdown_table(
                [
                    "preset",
                    "params",
                    "padded vocab",
                    "batch x accum x block",
                    "steps",
                    "tokens/s",
                    "model GFLOP/s",
                    "MFU (vs measured matmul peak)",
                ],
                preset_rows,
            ),  # fmt: skip
            "",
            "## gpt2-124m on GPUs at the 40% MFU goal (estimate from FLOPs per token; no GPU here)",
            "",
            markdown_table(
                ["GPU", "peak TFLOP/s (bf16 dense)", "FLOPs per token", "tokens/s at 40% MFU", "1B tokens per model"],
                gpu_estimate(),
            ),  # fmt: skip
            "",
        ]
    )
    sys.stdout.write(text)
    log.info("wrote %s", write_result("ablate.md", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
