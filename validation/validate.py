"""``refinery validate-shards``: check token shards, train a small GPT on them, and say whether they train.

The job is the pipeline's last step and runs where the GPU is, so it imports only the shard reader
(``tokenization.shards``), numpy and torch. It

1. checks the shards: header (magic, version, size), dtype, every token id < vocab_size, end-of-text
   count per shard == the manifest's document count, checksums (``tokenization.shards.verify_shards``);
2. trains a nanoGPT-style model for a configured number of steps on random contiguous windows of the
   train shards, evaluating on fixed windows of the val shard;
3. writes ``validation.json`` (loss curves, tokens/s, MFU on GPU, entropies, verdict) and a loss-curve PNG.

Verdict. ``unigram_entropy`` is the entropy (nats) of the val shard's token distribution, computed from its
token counts: the lowest loss any order-blind model can reach on those tokens, since no single distribution
has a lower cross-entropy with them. Shards whose tokens were shuffled carry nothing but those frequencies,
so no model trained on them gets below it; real text lets a model that reads the context go below. PASS
needs both

- ``val_loss < unigram_margin x unigram_entropy``. Default 0.9 ("well below"): the GPT-2 unigram entropy
  of English web text is about 7 nats (6.9-7.2 on the 25k-token val shards of the tests, where the
  plug-in estimate is still biased low) and a trained GPT-2 124M ends near 3.3: 0.9 x 7 = 6.3 asks for
  a first step of learning from context, far from what training reaches. The tiny CPU preset uses 1.0,
  the floor itself: measured on real English web text (three val splits x two seeds) real shards reach
  0.84-0.91 of the entropy, and one split in three fails 0.9; the same shards with their tokens shuffled
  stay at 1.07-1.09 (the model must also guess the val shard's frequencies from the train shards, which
  costs extra). 1.0 leaves about 8% on each side.
- ``val_loss < order_margin x val_loss_shuffled``, default 0.9, where ``val_loss_shuffled`` is the same
  model's loss on the same val tokens in random order. On shuffled shards both losses have the same
  expectation whatever the model learned, so the ratio is 1 up to noise (measured 0.999-1.001); on real
  text destroying the order costs the model a lot (tiny preset: 0.68-0.74; better-trained models lower).
  This null is exact at any scale, whereas a model trained long on shuffled shards approaches the unigram
  floor from above, so at scale it is this test that rejects them.

Small runs can cap the model's vocabulary (``vocab_cap``, the tiny CPU preset): the most frequent ids of
the train shards keep their own class and the rest share one. The 50,304-wide classifier is most of a tiny
model's compute; capping it makes a CPU run of seconds meaningful. Entropy and losses are then measured
in the same capped space, so the comparison stays like for like; the full-vocabulary entropy is reported
too. The GPU presets use the full padded vocabulary.

Project goal for the GPU path: MFU >= 40% on an H100 for the ``gpt2-124m`` preset (llm.c's anchor), with
bf16 autocast, flash attention (SDPA), ``torch.compile``, fused AdamW, TF32 and the vocabulary padded to
50,304 (see ``hardware.py`` and ``model.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenization.shards import ShardError, read_manifest
from validation.checks import GPT2_VOCAB_SIZE, CheckOptions, ShardCheck, check_shards
from validation.data import (
    Batches,
    VocabMap,
    entropy_nats,
    eval_windows,
    shuffled_windows,
    to_device,
    token_counts,
)
from validation.hardware import (
    HardwarePlan,
    autocast,
    configure_backends,
    make_optimizer,
    mfu,
    plan_hardware,
    synchronize,
)
from validation.model import GPT, GPTConfig, count_params, flops_per_token

log = logging.getLogger(__name__)

REPORT_NAME = "validation.json"
PLOT_NAME = "loss_curve.png"


@dataclass(frozen=True)
class TrainConfig:
    """Model shape, training schedule and verdict margins of one validation run."""

    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    block_size: int = 64
    vocab_cap: int | None = 512
    """Model vocabulary: the vocab_cap - 1 most frequent train ids + one shared class; None = full vocabulary."""
    batch_size: int = 16
    grad_accum: int = 1
    steps: int = 500
    lr: float = 1e-2
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_tokens: int = 16384
    """Val tokens scored per evaluation (fixed windows spread over the val shard)."""
    log_every: int = 10
    seed: int = 1337
    device: str = "auto"
    compile: bool | None = None
    """None: compile on CUDA only."""
    peak_tflops: float | None = None
    """Overrides the GPU table for MFU."""
    unigram_margin: float = 0.9
    order_margin: float = 0.9
    checksums: bool = True
    vocab_size: int | None = None
    """For shard directories without manifest.json (llm.c's own shards); GPT-2 shards default to 50,257."""
    eot_token: int | None = None
    count_sample_tokens: int = 50_000_000
    """Train tokens counted to choose the capped vocabulary."""
    cpu_threads: int | None = None
    """torch intra-op threads on CPU (None: torch's default). Tiny models run fastest on one: their ops are
    too small to split, and on a busy host spinning OpenMP threads make each step up to 40x slower."""

    def __post_init__(self) -> None:
        if self.vocab_cap is not None and self.vocab_cap < 2:
            raise ValueError("vocab_cap must be at least 2 (one kept id + the shared class)")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.block_size < 2:
            raise ValueError("steps, batch_size, grad_accum must be >= 1 and block_size >= 2")
        if self.unigram_margin <= 0 or self.order_margin <= 0:
            raise ValueError("margins must be positive")

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )

    def check_options(self) -> CheckOptions:
        return CheckOptions(self.block_size, self.checksums, self.vocab_size, self.eot_token)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.block_size


PRESETS: dict[str, TrainConfig] = {
    # seconds on a laptop CPU; what the tests run
    "tiny": TrainConfig(cpu_threads=1, unigram_margin=1.0),
    # ~10M parameters, full vocabulary: a CPU/MPS smoke run of minutes, or a quick GPU check
    "small": TrainConfig(
        n_layer=4,
        n_head=3,
        n_embd=192,
        block_size=256,
        vocab_cap=None,
        batch_size=16,
        steps=500,
        lr=3e-3,
        warmup_steps=50,
        weight_decay=0.1,
        eval_every=100,
        eval_tokens=65536,
    ),
    # GPT-2 124M as llm.c trains it (0.5M tokens per step with 16 x 1024 micro-batches x 32): the MFU anchor
    "gpt2-124m": TrainConfig(
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        vocab_cap=None,
        batch_size=16,
        grad_accum=32,
        steps=300,
        lr=6e-4,
        warmup_steps=30,
        weight_decay=0.1,
        eval_every=50,
        eval_tokens=20 * 16 * 1024,
        log_every=10,
    ),
}


def preset(name: str = "auto", device: str = "auto") -> TrainConfig:
    """A named configuration; ``auto`` is gpt2-124m on CUDA and tiny elsewhere."""
    if name == "auto":
        wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "gpt2-124m" if wants_cuda else "tiny"
    try:
        return replace(PRESETS[name], device=device)
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or auto") from None


# ------------------------------------------------------------------------------------------- training


@dataclass
class ValidationReport:
    """What ``validation.json`` holds."""

    verdict: str
    reasons: list[str]
    shard_dir: str
    checks: dict[str, Any]
    config: dict[str, Any]
    hardware: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    unigram_entropy: float | None = None
    """Entropy (nats) of the val shard's token counts, in the model's vocabulary."""
    unigram_entropy_full_vocab: float | None = None
    val_loss: float | None = None
    val_loss_shuffled: float | None = None
    val_loss_over_unigram: float | None = None
    val_loss_over_shuffled: float | None = None
    train_curve: list[list[float]] = field(default_factory=list)
    """[step, train loss] pairs."""
    val_curve: list[list[float]] = field(default_factory=list)
    """[step, val loss] pairs."""
    tokens_per_second: float | None = None
    mfu: float | None = None
    train_tokens: int = 0
    train_seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio x lr (nanoGPT's schedule)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - floor)


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: np.ndarray, plan: HardwarePlan, batch_size: int) -> float:
    """Mean per-token loss (nats) over the windows."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        x, y = to_device(windows[start : start + batch_size], plan.torch_device)
        with autocast(plan):
            _, loss = model(x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train()
    return total / count


@dataclass
class TrainResult:
    train_curve: list[list[float]]
    val_curve: list[list[float]]
    val_loss: float
    val_loss_shuffled: float
    tokens_per_second: float | None
    train_tokens: int
    train_seconds: float
    diverged: bool


def train(
    model: torch.nn.Module,
    batches: Batches,
    val: np.ndarray,
    plan: HardwarePlan,
    config: TrainConfig,
) -> TrainResult:
    """The training loop: AdamW, warmup + cosine, grad clipping, bf16 autocast on GPU, periodic eval."""
    device = plan.torch_device
    optimizer = make_optimizer(model.named_parameters(), plan, config.lr, config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=plan.needs_grad_scaler)
    runner = torch.compile(model) if plan.compile else model
    eval_batch = max(1, config.batch_size)
    skip = 3 if plan.compile else 1  # first steps compile / warm caches: not in tokens/s
    train_curve: list[list[float]] = []
    val_curve: list[list[float]] = []
    timed_seconds, timed_tokens, diverged = 0.0, 0, False
    x, y = batches.next(config.batch_size)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        synchronize(device)
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for _ in range(config.grad_accum):
            with autocast(plan):
                _, loss = runner(x, y)
                loss = loss / config.grad_accum
            x, y = batches.next(config.batch_size)  # prefetch while the device works
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        last = step == config.steps - 1
        if step % config.log_every == 0 or last:
            value = float(loss_sum)  # synchronizes
            train_curve.append([step, value])
            if not math.isfinite(value):
                diverged = True
        synchronize(device)
        if step >= skip:
            timed_seconds += time.perf_counter() - started
            timed_tokens += config.tokens_per_step
        if diverged:
            break
        if (step > 0 and step % config.eval_every == 0) or last:
            val_curve.append([step, evaluate(model, val, plan, eval_batch)])  # eager: no recompiles for eval shapes
            log.info("step %d/%d train %.4f val %.4f", step + 1, config.steps, train_curve[-1][1], val_curve[-1][1])
    val_loss = val_curve[-1][1] if val_curve and not diverged else float("nan")
    shuffled = evaluate(model, shuffled_windows(val, config.seed), plan, eval_batch) if not diverged else float("nan")
    tokens = (step + 1) * config.tokens_per_step
    return TrainResult(
        train_curve,
        val_curve,
        val_loss,
        shuffled,
        timed_tokens / timed_seconds if timed_seconds > 0 else None,
        tokens,
        timed_seconds,
        diverged,
    )


def verdict(report: ValidationReport, config: TrainConfig) -> tuple[str, list[str]]:
    """PASS when the val loss is well below the unigram entropy and the model needs the token order."""
    reasons: list[str] = []
    h, loss, shuffled = report.unigram_entropy, report.val_loss, report.val_loss_shuffled
    if loss is None or not math.isfinite(loss) or shuffled is None or h is None:
        return "FAIL", ["training diverged (non-finite loss)"]
    if loss < config.unigram_margin * h:
        reasons.append(f"val loss {loss:.3f} < {config.unigram_margin} x unigram entropy {h:.3f} nats")
    else:
        reasons.append(
            f"val loss {loss:.3f} is not below {config.unigram_margin} x unigram entropy {h:.3f} nats "
            f"(= {config.unigram_margin * h:.3f}): the model learned little beyond token frequencies "
            "(shards without structure, or too few steps or tokens to learn it)"
        )
    if loss < config.order_margin * shuffled:
        reasons.append(f"val loss {loss:.3f} < {config.order_margin} x loss on shuffled val tokens {shuffled:.3f}")
    else:
        reasons.append(
            f"val loss {loss:.3f} is not below {config.order_margin} x loss on the same val tokens shuffled "
            f"({shuffled:.3f}): the model does not use the token order (shards without order, or too few steps)"
        )
    passed = loss < config.unigram_margin * h and loss < config.order_margin * shuffled
    return ("PASS" if passed else "FAIL"), reasons


def describe_plan(
    shard_dir: Path, config: TrainConfig, plan: HardwarePlan, vocab_size: int | None = None
) -> dict[str, Any]:
    """What a run would use (``--dry-run``): device, precision, compile, optimizer, model size, FLOPs, peak."""
    if vocab_size is None:
        try:
            vocab_size = int(read_manifest(shard_dir)["vocab_size"])
        except ShardError:
            vocab_size = config.vocab_size or GPT2_VOCAB_SIZE
    model_vocab = min(vocab_size, config.vocab_cap) if config.vocab_cap is not None else vocab_size
    gpt = config.model_config(model_vocab)
    per_token = flops_per_token(gpt)
    peak = plan.peak_tflops
    return {
        "device": plan.device,
        "device_name": plan.device_name,
        "autocast_dtype": plan.amp_dtype or "float32 (no autocast)",
        "tf32_matmul": plan.tf32,
        "torch_compile": plan.compile,
        "fused_adamw": plan.fused_adamw,
        "attention": "F.scaled_dot_product_attention (flash on CUDA)",
        "vocab_size": vocab_size,
        "model_vocab": gpt.vocab_size,
        "padded_vocab": gpt.padded_vocab,
        "model": {"n_layer": gpt.n_layer, "n_head": gpt.n_head, "n_embd": gpt.n_embd, "block_size": gpt.block_size},
        "params": count_params(gpt),
        "flops_per_token": per_token,
        "tokens_per_step": config.tokens_per_step,
        "steps": config.steps,
        "peak_tflops": peak,
        "peak_source": plan.peak_source,
        "tokens_per_second_for_40pct_mfu": None if peak is None else 0.4 * peak * 1e12 / per_token,
    }


def _failed(shard_dir: Path, config: TrainConfig, check: ShardCheck, reasons: list[str]) -> ValidationReport:
    return ValidationReport("FAIL", reasons, str(shard_dir), check.to_dict(), asdict(config))


def validate_shards(shard_dir: Path, config: TrainConfig, output_dir: Path | None = None) -> ValidationReport:
    """Check the shards, train on them, and return the report (also written to ``output_dir`` if given).

    Bad shards give a FAIL report with the problems, never an exception. An unavailable device is a usage
    error (ValueError), raised before anything is read.
    """
    shard_dir = Path(shard_dir)
    plan = plan_hardware(config.device, config.compile, config.peak_tflops)
    check = check_shards(shard_dir, config.check_options())
    if not check.ok:
        report = _failed(shard_dir, config, check, [f"shard check: {p}" for p in check.problems])
    else:
        report = _train_and_judge(shard_dir, config, check, plan)
    if output_dir is not None:
        write_outputs(report, Path(output_dir))
    log.info("verdict %s: %s", report.verdict, "; ".join(report.reasons))
    return report


def _train_and_judge(shard_dir: Path, config: TrainConfig, check: ShardCheck, plan: HardwarePlan) -> ValidationReport:
    configure_backends(plan)
    threads = torch.get_num_threads()
    if config.cpu_threads is not None and plan.torch_device.type == "cpu":
        torch.set_num_threads(config.cpu_threads)
    try:
        return _run(shard_dir, config, check, plan)
    except (RuntimeError, OSError, ShardError) as e:  # out of memory, a shard vanishing mid-run, ...
        log.exception("training failed")
        return _failed(shard_dir, config, check, [f"training failed: {type(e).__name__}: {e}"])
    finally:
        torch.set_num_threads(threads)


def _run(shard_dir: Path, config: TrainConfig, check: ShardCheck, plan: HardwarePlan) -> ValidationReport:
    torch.manual_seed(config.seed)
    full_val_counts = token_counts(check.val, check.vocab_size)
    if config.vocab_cap is None or config.vocab_cap >= check.vocab_size:
        vocab = VocabMap(None, check.vocab_size)
    else:
        train_counts = token_counts(check.train, check.vocab_size, limit=config.count_sample_tokens)
        vocab = VocabMap.build(train_counts, config.vocab_cap)
    gpt = config.model_config(vocab.size)
    model = GPT(gpt).to(plan.torch_device)
    val = eval_windows(check.val, config.block_size, config.eval_tokens, vocab)
    batches = Batches(check.train, config.block_size, vocab, plan.torch_device, config.seed)
    result = train(model, batches, val, plan, config)
    per_token = flops_per_token(gpt)
    report = ValidationReport(
        verdict="FAIL",
        reasons=[],
        shard_dir=str(shard_dir),
        checks=check.to_dict(),
        config=asdict(config),
        hardware=asdict(plan),
        model={**gpt.to_dict(), "params": count_params(gpt), "flops_per_token": per_token},
        unigram_entropy=entropy_nats(vocab.counts(full_val_counts)),
        unigram_entropy_full_vocab=entropy_nats(full_val_counts),
        val_loss=result.val_loss,
        val_loss_shuffled=result.val_loss_shuffled,
        train_curve=result.train_curve,
        val_curve=result.val_curve,
        tokens_per_second=result.tokens_per_second,
        mfu=None if result.tokens_per_second is None else mfu(per_token, result.tokens_per_second, plan.peak_tflops),
        train_tokens=result.train_tokens,
        train_seconds=result.train_seconds,
    )
    if report.unigram_entropy and math.isfinite(result.val_loss):
        report.val_loss_over_unigram = result.val_loss / report.unigram_entropy
        report.val_loss_over_shuffled = result.val_loss / result.val_loss_shuffled
    report.verdict, report.reasons = verdict(report, config)
    return report


# -------------------------------------------------------------------------------------------- outputs


def json_safe(value: Any) -> Any:
    """NaN/inf become null so validation.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def plot_losses(report: ValidationReport, path: Path) -> bool:
    """Loss-curve PNG with the unigram entropy line; False (and a log line) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no %s", path.name)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if report.train_curve:
        steps, losses = zip(*report.train_curve, strict=True)
        ax.plot(steps, losses, label="train", color="tab:blue", alpha=0.8)
    if report.val_curve:
        steps, losses = zip(*report.val_curve, strict=True)
        ax.plot(steps, losses, "o-", label="val", color="tab:orange")
    if report.unigram_entropy is not None:
        ax.axhline(report.unigram_entropy, color="gray", ls="--", label="unigram entropy (val)")
        margin = report.config.get("unigram_margin")
        if margin and margin != 1.0:
            ax.axhline(margin * report.unigram_entropy, color="tab:red", ls=":", label=f"{margin} x entropy")
    if report.val_loss_shuffled is not None and report.val_curve:
        ax.plot(report.val_curve[-1][0], report.val_loss_shuffled, "s", color="tab:red", label="val, tokens shuffled")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    shard_dir = Path(report.shard_dir)
    ax.set_title(f"{shard_dir.parent.name}/{shard_dir.name}: {report.verdict}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(report: ValidationReport, output_dir: Path) -> None:
    """``validation.json`` and, when there is a curve, ``loss_curve.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if report.train_curve and plot_losses(report, output_dir / PLOT_NAME):
        report.files["loss_curve"] = str(output_dir / PLOT_NAME)
    report.files["report"] = str(output_dir / REPORT_NAME)
    tmp = output_dir / f".{REPORT_NAME}.tmp"
    tmp.write_text(json.dumps(json_safe(report.to_dict()), indent=1) + "\n")
    tmp.replace(output_dir / REPORT_NAME)


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinery validate-shards",
        description="Check token shards and train a small GPT on them; PASS when they train "
        "(val loss well below the val shard's unigram entropy).",
    )
    parser.add_argument("shard_dir", type=Path, help="directory with val_/train_*.bin shards (and manifest.json)")
    parser.add_argument(
        "--output", "-o", type=Path, help="where validation.json and the plot go (SHARD_DIR/../validation)"
    )
    parser.add_argument("--preset", default="auto", help=f"{', '.join(PRESETS)} or auto (gpt2-124m on CUDA, else tiny)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, cuda:1, mps, cpu")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false", help="no torch.compile")
    parser.add_argument("--peak-tflops", type=float, help="device peak (TFLOP/s) for MFU, instead of the GPU table")
    for name in ("steps", "batch_size", "grad_accum", "block_size", "n_layer", "n_head", "n_embd", "eval_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    parser.add_argument("--eval-tokens", type=int, dest="eval_tokens", help="val tokens scored per evaluation")
    parser.add_argument("--vocab-cap", type=int, dest="vocab_cap", help="model vocabulary cap (0: full vocabulary)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--unigram-margin", type=float, dest="unigram_margin", help="PASS needs val loss < this x entropy"
    )
    parser.add_argument("--order-margin", type=float, dest="order_margin", help="... and < this x shuffled-val loss")
    parser.add_argument("--vocab-size", type=int, dest="vocab_size", help="for shards without manifest.json")
    parser.add_argument("--eot-token", type=int, dest="eot_token", help="for shards without manifest.json")
    parser.add_argument("--no-checksums", dest="checksums", action="store_false", default=None, help="skip sha256")
    parser.add_argument("--dry-run", action="store_true", help="print what would be used and exit without training")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress to stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = preset(args.preset, args.device)
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and k != "device" and v is not None}
    if overrides.get("vocab_cap") == 0:
        overrides["vocab_cap"] = None
    if "steps" in overrides and "eval_every" not in overrides:
        overrides["eval_every"] = max(1, min(config.eval_every, overrides["steps"]))
    if "steps" in overrides and overrides["steps"] < config.warmup_steps:
        overrides["warmup_steps"] = max(1, overrides["steps"] // 10)
    return replace(config, **overrides)


def setup_job_logging(verbose: bool) -> None:
    """A job's own command line: progress (INFO) to stderr with ``-v``, warnings only otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 PASS, 1 FAIL (bad shards or no learning), 2 usage error."""
    args = build_parser().parse_args(argv)
    setup_job_logging(args.verbose)
    output = args.output or args.shard_dir.resolve().parent / "validation"
    try:
        config = config_from_args(args)
        if args.dry_run:
            plan = plan_hardware(config.device, config.compile, config.peak_tflops)
            for key, value in describe_plan(args.shard_dir, config, plan).items():
                print(f"{key}: {value}")
            return 0
        report = validate_shards(args.shard_dir, config, output)
    except ValueError as e:  # an unavailable device, an impossible configuration
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report.verdict}: {args.shard_dir}")
    for reason in report.reasons:
        print(f"  {reason}")
    if report.tokens_per_second is not None:
        mfu_text = "n/a" if report.mfu is None else f"{report.mfu:.1%}"
        print(f"  {report.tokens_per_second:,.0f} tokens/s, MFU {mfu_text}, report {output / REPORT_NAME}")
    else:
        print(f"  report {output / REPORT_NAME}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
