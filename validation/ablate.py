"""``refinery ablate``'s training job: which run makes better training data, decided by training.

FineWeb and DCLM chose their filters by training the same small model on each candidate dataset and
comparing losses. This job does that on token shards: for every run and every seed it trains the same GPT
(the validation job's presets and training loop: bf16, compile and MFU on GPU, tiny on CPU) on the same
token budget, then scores every model on one common reference set (held-out text the user trusts) and on
the run's own val shard.

Like for like by construction:

- the same architecture, optimizer, schedule and number of steps for every run (steps = budget / tokens
  per step); seed s gives every run the same initial weights and the same data-order seed;
- every run is read in non-overlapping windows in a seeded order, each token once per epoch; a run with
  fewer train tokens than the budget is read more than once and the report says how often (``epochs``);
- one model vocabulary for all runs (``vocab_cap``): the most frequent ids over the runs' train shards, each
  run weighted equally, never the reference's own counts (the reference stays held out);
- the same reference windows for every model.

Verdict per pair of runs (A, B), from the per-seed differences d_s = loss_B(s) - loss_A(s) of the final
reference loss (seeds are paired: same initial weights, same order seed): a two-sided paired t-test. A is
better when mean(d) > 0, p < 1 - confidence and mean(d) >= min_delta nats; B is better likewise with the
signs swapped; otherwise "no clear difference". One seed has no spread to test against, so it never decides.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenization.shards import ShardError, load_tokens, read_header, read_manifest
from validation.checks import CheckOptions, check_shards
from validation.data import VocabMap, eval_windows, to_device, token_counts
from validation.hardware import HardwarePlan, configure_backends, mfu, plan_hardware
from validation.model import GPT, count_params, flops_per_token
from validation.validate import PRESETS, TrainConfig, evaluate, json_safe, preset, setup_job_logging, train

log = logging.getLogger(__name__)

REPORT_NAME = "ablation.json"
PAGE_NAME = "index.html"
ABLATION_VERSION = 1


class AblationError(ValueError):
    """Input the ablation cannot run on (no shards, different tokenizers, empty reference): one line."""


# ------------------------------------------------------------------------------------------- inputs


@dataclass
class RunTokens:
    """One run's token shards, checked."""

    name: str
    shard_dir: Path
    train: list[Path]
    val: list[Path]
    vocab_size: int
    eot_token: int
    tokenizer: str | None

    @property
    def train_tokens(self) -> int:
        return sum(read_header(p).num_tokens for p in self.train)

    def window_tokens(self, block_size: int) -> int:
        """Train tokens in whole windows (what one epoch of :class:`EpochBatches` reads)."""
        return sum((read_header(p).num_tokens - 1) // block_size * block_size for p in self.train)


def load_run(name: str, shard_dir: Path, block_size: int, checksums: bool = True) -> RunTokens:
    """The run's shards after the validation job's checks; AblationError naming the run when they fail."""
    if not Path(shard_dir).is_dir():
        raise AblationError(f"run {name}: {shard_dir} is not a folder of token shards (tokenize the run first)")
    check = check_shards(Path(shard_dir), CheckOptions(block_size=block_size, checksums=checksums))
    if not check.ok:
        raise AblationError(f"run {name}: token shards in {shard_dir} unusable: {'; '.join(check.problems)}")
    return RunTokens(name, Path(shard_dir), check.train, check.val, check.vocab_size, check.eot_token, check.tokenizer)


def reference_paths(reference: Path) -> list[Path]:
    """A reference is a shard file or a folder of them (every ``*.bin``, train and val alike)."""
    reference = Path(reference)
    if reference.is_file():
        return [reference]
    if reference.is_dir():
        paths = sorted(reference.glob("*.bin"))
        if paths:
            return paths
    raise AblationError(f"reference {reference}: no token shards (*.bin) there")


def reference_tokenizer(reference: Path) -> tuple[str | None, int | None]:
    """(tokenizer name, vocab size) from the reference's manifest, (None, None) without one."""
    folder = reference if reference.is_dir() else reference.parent
    try:
        manifest = read_manifest(folder)
    except ShardError:
        return None, None
    tokenizer = manifest.get("tokenizer")
    return (tokenizer.get("name") if isinstance(tokenizer, dict) else tokenizer), int(manifest["vocab_size"])


def same_tokenizer(runs: list[RunTokens], reference: Path) -> None:
    """Losses over different vocabularies do not compare: every run and the reference must agree (a shard
    folder without a manifest names no tokenizer: its vocabulary size must agree)."""
    names = {r.tokenizer for r in runs if r.tokenizer}
    if len(names) > 1 or len({r.vocab_size for r in runs}) > 1:
        described = ", ".join(f"{r.name}: {r.tokenizer or '?'} ({r.vocab_size:,} ids)" for r in runs)
        raise AblationError(f"the runs were tokenized differently ({described}); ablate runs of one tokenizer")
    ref_name, ref_vocab = reference_tokenizer(reference)
    tokenizer, vocab_size = next(iter(names), None), runs[0].vocab_size
    if ref_vocab is not None and (ref_vocab != vocab_size or (ref_name and tokenizer and ref_name != tokenizer)):
        raise AblationError(
            f"reference {reference} was tokenized with {ref_name or '?'} ({ref_vocab:,} ids), "
            f"the runs with {tokenizer or '?'} ({vocab_size:,} ids)"
        )


# ------------------------------------------------------------------------------------------ batches


class EpochBatches:
    """Non-overlapping windows of the train shards in a seeded order: every token once per epoch.

    Random windows (the validation job's ``Batches``) see some tokens twice and others never, which is
    noise between runs; here a budget below the run's size sees distinct tokens only, and a budget above it
    counts the epochs.
    """

    def __init__(self, paths: list[Path], block_size: int, vocab: VocabMap, device: torch.device, seed: int) -> None:
        self.tokens = [load_tokens(p) for p in paths]
        self.starts = np.concatenate(
            [
                np.stack([np.full(n, i), np.arange(n) * block_size], axis=1)
                for i, t in enumerate(self.tokens)
                if (n := (t.size - 1) // block_size) > 0
            ]
            or [np.zeros((0, 2), dtype=np.int64)]
        )
        if len(self.starts) == 0:
            raise AblationError(f"no train window of {block_size + 1} tokens in {', '.join(map(str, paths))}")
        self.block_size, self.vocab, self.device = block_size, vocab, device
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.starts))
        self.position = 0

    @property
    def available_tokens(self) -> int:
        return len(self.starts) * self.block_size

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for _ in range(batch_size):
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(len(self.starts)), 0
            shard, start = self.starts[self.order[self.position]]
            rows.append(np.asarray(self.tokens[shard][start : start + self.block_size + 1]))
            self.position += 1
        return to_device(self.vocab.apply(np.stack(rows)), self.device)


def shared_vocab(runs: list[RunTokens], cap: int | None, sample_tokens: int) -> VocabMap:
    """One model vocabulary for every run: the cap - 1 most frequent ids, each run's counts weighted equally."""
    vocab_size = runs[0].vocab_size
    if cap is None or cap >= vocab_size:
        return VocabMap(None, vocab_size)
    pooled = np.zeros(vocab_size, dtype=np.float64)
    for run in runs:
        counts = token_counts(run.train, vocab_size, limit=sample_tokens).astype(np.float64)
        pooled += counts / max(1.0, counts.sum())
    return VocabMap.build(pooled, cap)


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class AblationConfig:
    """The budget, the seeds, the model (a validation preset) and the decision rule."""

    tokens: int | None
    """Train tokens per model (the same for every run), rounded up to whole steps by :func:`ablate`; None: the
    smallest run's train tokens, in whole steps."""
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=lambda: PRESETS["tiny"])
    confidence: float = 0.95
    min_delta: float = 0.0
    """Smallest mean reference-loss difference (nats) called a difference at all."""
    reference_tokens: int = 1_000_000
    """Reference tokens scored at the end (windows spread over the whole reference)."""
    curve_points: int = 10

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < self.train.tokens_per_step:
            raise AblationError(
                f"--tokens {self.tokens:,} is below one step of the preset ({self.train.tokens_per_step:,} tokens)"
            )
        if not self.seeds:
            raise AblationError("at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise AblationError(f"seeds repeat: {list(self.seeds)}")
        if not 0.5 <= self.confidence < 1:
            raise AblationError("confidence must be in [0.5, 1)")
        if self.min_delta < 0 or self.reference_tokens < 1:
            raise AblationError("min_delta must be >= 0 and reference_tokens >= 1")

    @property
    def curve_tokens(self) -> int:
        """Reference tokens scored at each curve point: about 1/12 of the budget (the curve's points then
        cost about a quarter of the training), at least 16 windows, at most the preset's ``eval_tokens``."""
        budget = self.tokens or 0
        return max(16 * self.train.block_size, min(self.train.eval_tokens, budget // 12))

    @property
    def steps(self) -> int:
        if self.tokens is None:
            raise AblationError("the token budget is chosen from the runs: call ablate()")
        return math.ceil(self.tokens / self.train.tokens_per_step)

    def model_train_config(self, seed: int) -> TrainConfig:
        """The preset with the ablation's steps, a schedule scaled to them, and the seed."""
        steps = self.steps
        return replace(
            self.train,
            steps=steps,
            warmup_steps=max(1, min(self.train.warmup_steps, steps // 10)),
            eval_every=max(1, steps // self.curve_points),
            log_every=max(1, min(self.train.log_every, steps // 50 or 1)),
            seed=seed,
        )


# ------------------------------------------------------------------------------------------ training


@dataclass
class ModelResult:
    """One model: one run, one seed."""

    run: str
    seed: int
    reference_loss: float
    val_loss: float
    train_curve: list[list[float]]
    reference_curve: list[list[float]]
    """[step, reference loss] on the curve's subset of the reference windows."""
    train_tokens: int
    epochs: float
    tokens_per_second: float | None
    mfu: float | None
    seconds: float
    diverged: bool


def train_one(
    run: RunTokens,
    seed: int,
    config: AblationConfig,
    plan: HardwarePlan,
    vocab: VocabMap,
    windows: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> ModelResult:
    """Train the ablation model on one run with one seed; score it on the reference and the run's val shard.

    ``windows``: (reference, reference subset for the curve, the run's val), in the model's vocabulary."""
    reference, reference_curve, val = windows
    train_config = config.model_train_config(seed)
    torch.manual_seed(seed)
    gpt = train_config.model_config(vocab.size)
    model = GPT(gpt).to(plan.torch_device)
    batches = EpochBatches(run.train, train_config.block_size, vocab, plan.torch_device, seed)
    started = time.perf_counter()
    result = train(model, batches, reference_curve, plan, train_config)  # type: ignore[arg-type]
    batch = max(1, train_config.batch_size)
    reference_loss = evaluate(model, reference, plan, batch) if not result.diverged else float("nan")
    val_loss = evaluate(model, val, plan, batch) if not result.diverged else float("nan")
    per_token = flops_per_token(gpt)
    return ModelResult(
        run=run.name,
        seed=seed,
        reference_loss=reference_loss,
        val_loss=val_loss,
        train_curve=result.train_curve,
        reference_curve=result.val_curve,
        train_tokens=result.train_tokens,
        epochs=round(result.train_tokens / batches.available_tokens, 4),
        tokens_per_second=result.tokens_per_second,
        mfu=None if result.tokens_per_second is None else mfu(per_token, result.tokens_per_second, plan.peak_tflops),
        seconds=time.perf_counter() - started,
        diverged=result.diverged,
    )


# ------------------------------------------------------------------------------------------ verdict


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_test_p(diffs: list[float]) -> float | None:
    """Two-sided p-value of a paired t-test that the mean difference is 0; None with fewer than 2 values."""
    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return regularized_beta(df / 2, 0.5, df / (df + t * t))


def rule_text(config: AblationConfig) -> str:
    return (
        f"paired two-sided t-test over {len(config.seeds)} seed(s) on the final reference loss: a run is better when "
        f"its mean loss is lower, p < {1 - config.confidence:.2g} (confidence {config.confidence:.0%}) and the mean "
        f"difference is at least {config.min_delta:g} nats; otherwise no clear difference (one seed never decides)"
    )


def compare_pair(a: str, b: str, results: list[ModelResult], config: AblationConfig) -> dict[str, Any]:
    """The verdict for runs a and b from their per-seed reference losses."""
    loss = {(r.run, r.seed): r.reference_loss for r in results}
    diffs = [loss[(b, s)] - loss[(a, s)] for s in config.seeds]
    finite = all(math.isfinite(d) for d in diffs)
    mean = sum(diffs) / len(diffs) if finite else float("nan")
    sd = float(np.std(diffs, ddof=1)) if finite and len(diffs) > 1 else None
    p = t_test_p(diffs) if finite else None
    winner = None
    if p is not None and p < 1 - config.confidence and abs(mean) >= config.min_delta and mean != 0:
        winner = a if mean > 0 else b
    if not finite:
        text = f"no verdict: a model diverged ({a} vs {b})"
    elif winner is None:
        why = "one seed has no spread" if p is None else f"p = {p:.3g}, mean difference {abs(mean):.4f} nats"
        text = f"no clear difference between {a} and {b} ({why})"
    else:
        loser = b if winner == a else a
        wins = sum(1 for d in diffs if (d > 0) == (winner == a) and d != 0)
        text = (
            f"{winner} better than {loser}: reference loss {abs(mean):.4f} nats lower on average, "
            f"lower for {wins} of {len(diffs)} seeds (p = {p:.3g})"
        )
    return {
        "a": a,
        "b": b,
        "diffs_b_minus_a": diffs,
        "mean_diff": mean,
        "sd_diff": sd,
        "p_value": p,
        "winner": winner,
        "verdict": "a" if winner == a else "b" if winner == b else "none",
        "text": text,
    }


# ------------------------------------------------------------------------------------------ the job


@dataclass
class AblationReport:
    """What ``ablation.json`` holds."""

    runs: list[dict[str, Any]]
    reference: dict[str, Any]
    config: dict[str, Any]
    rule: str
    models: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    """Per run: reference loss mean / sd / min / max over seeds, val loss mean, epochs."""
    pairs: list[dict[str, Any]]
    hardware: dict[str, Any]
    model: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    version: int = ABLATION_VERSION
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(name: str, results: list[ModelResult]) -> dict[str, Any]:
    losses = np.array([r.reference_loss for r in results if r.run == name], dtype=np.float64)
    vals = np.array([r.val_loss for r in results if r.run == name], dtype=np.float64)
    epochs = max(r.epochs for r in results if r.run == name)
    return {
        "run": name,
        "reference_loss_mean": float(losses.mean()),
        "reference_loss_sd": float(losses.std(ddof=1)) if losses.size > 1 else None,
        "reference_loss_min": float(losses.min()),
        "reference_loss_max": float(losses.max()),
        "val_loss_mean": float(vals.mean()),
        "epochs": epochs,
    }


def ablate(
    runs: list[tuple[str, Path]],
    reference: Path,
    config: AblationConfig,
    progress: Callable[[ModelResult], None] | None = None,
) -> AblationReport:
    """Train every (run, seed) model and compare the runs; AblationError for input it cannot run on.

    ``progress`` is called after each model (len(runs) x len(seeds) calls)."""
    if len(runs) < 2:
        raise AblationError("an ablation compares at least two runs")
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise AblationError(f"run names repeat: {names}; name them apart (NAME=DIR)")
    block = config.train.block_size
    loaded = [load_run(name, path, block, config.train.checksums) for name, path in runs]
    paths = reference_paths(reference)
    same_tokenizer(loaded, reference)
    vocab_size = loaded[0].vocab_size
    ref_tokens = sum(read_header(p).num_tokens for p in paths)
    if ref_tokens < block + 1:
        raise AblationError(f"reference {reference}: {ref_tokens} tokens, fewer than one window of {block + 1}")
    if config.tokens is None:  # the smallest run once, in whole steps
        smallest = min(loaded, key=lambda r: r.window_tokens(block))
        step = config.train.tokens_per_step
        if smallest.window_tokens(block) < step:
            raise AblationError(
                f"run {smallest.name} has {smallest.train_tokens:,} train tokens, fewer than one step "
                f"({step:,}); give --tokens to read it several times"
            )
        config = replace(config, tokens=smallest.window_tokens(block) // step * step)
    config = replace(config, tokens=config.steps * config.train.tokens_per_step)  # what every model trains on
    for path in paths:
        tokens = load_tokens(path)
        if tokens.size and int(tokens.max()) >= vocab_size:
            raise AblationError(f"reference {path}: token id {int(tokens.max())} >= the runs' vocabulary {vocab_size}")

    started = time.perf_counter()
    plan = plan_hardware(config.train.device, config.train.compile, config.train.peak_tflops)
    configure_backends(plan)
    threads = torch.get_num_threads()
    if config.train.cpu_threads is not None and plan.torch_device.type == "cpu":
        torch.set_num_threads(config.train.cpu_threads)
    try:
        vocab = shared_vocab(loaded, config.train.vocab_cap, config.train.count_sample_tokens)
        ref_windows = eval_windows(paths, block, config.reference_tokens, vocab)
        curve_count = min(len(ref_windows), max(1, config.curve_tokens // block))
        curve_windows = ref_windows[np.linspace(0, len(ref_windows) - 1, curve_count).astype(np.int64)]
        val_windows = {run.name: eval_windows(run.val, block, config.reference_tokens, vocab) for run in loaded}
        results: list[ModelResult] = []
        for seed in config.seeds:  # seed-major: a stopped ablation has every run at the first seeds
            for run in loaded:
                log.info("training on %s, seed %d (%d steps)", run.name, seed, config.steps)
                windows = (ref_windows, curve_windows, val_windows[run.name])
                results.append(train_one(run, seed, config, plan, vocab, windows))
                if progress is not None:
                    progress(results[-1])
    finally:
        torch.set_num_threads(threads)

    warnings = []
    for run in loaded:
        available = run.window_tokens(block)
        if available < config.tokens:
            warnings.append(
                f"run {run.name} has {available:,} train tokens, fewer than the budget {config.tokens:,}: "
                f"its tokens were read {config.tokens / max(1, available):.2f} times"
            )
    for r in results:
        if r.diverged:
            warnings.append(f"run {r.run}, seed {r.seed}: training diverged (non-finite loss)")
    gpt = config.train.model_config(vocab.size)
    pairs = [compare_pair(a.name, b.name, results, config) for i, a in enumerate(loaded) for b in loaded[i + 1 :]]
    return AblationReport(
        runs=[
            {
                "name": r.name,
                "shard_dir": str(r.shard_dir),
                "train_tokens": r.train_tokens,
                "val_tokens": sum(read_header(p).num_tokens for p in r.val),
                "tokenizer": r.tokenizer,
            }
            for r in loaded
        ],
        reference={
            "path": str(reference),
            "tokens": ref_tokens,
            "scored_tokens": int(ref_windows.shape[0] * block),
            "curve_tokens": int(curve_windows.shape[0] * block),
        },
        config={
            "tokens": config.tokens,
            "steps": config.steps,
            "seeds": list(config.seeds),
            "confidence": config.confidence,
            "min_delta": config.min_delta,
            "reference_tokens": config.reference_tokens,
            "train": asdict(config.train),
        },
        rule=rule_text(config),
        models=[asdict(r) for r in results],
        summary=[summarise(r.name, results) for r in loaded],
        pairs=pairs,
        hardware=asdict(plan),
        model={**gpt.to_dict(), "params": count_params(gpt), "flops_per_token": flops_per_token(gpt)},
        warnings=warnings,
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------------------ outputs


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def curves_svg(report: AblationReport) -> str | None:
    """Reference-loss and train-loss curves of every run side by side (one line per seed), as inline SVG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no loss curves on the page")
        return None
    fig, (ref_ax, train_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, run in enumerate(r["name"] for r in report.runs):
        color = COLORS[index % len(COLORS)]
        for n, model in enumerate(m for m in report.models if m["run"] == run):
            label = run if n == 0 else None
            if model["reference_curve"]:
                steps, losses = zip(*model["reference_curve"], strict=True)
                ref_ax.plot(steps, losses, "o-", ms=3, color=color, alpha=0.7, label=label)
            if model["train_curve"]:
                steps, losses = zip(*model["train_curve"], strict=True)
                train_ax.plot(steps, losses, color=color, alpha=0.5, lw=1, label=label)
    ref_ax.set_title("reference loss (one line per seed)")
    train_ax.set_title("train loss (one line per seed)")
    for ax in (ref_ax, train_ax):
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.legend()
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]


def fmt_loss(value: float | None, digits: int = 4) -> str:
    """A loss for tables: ``-`` when missing or not finite."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def speed_line(models: list[dict[str, Any]]) -> str | None:
    """Median training tokens/s over the models, with MFU where the device's peak is known (GPUs); None
    without a timed step."""
    speeds = [m["tokens_per_second"] for m in models if m["tokens_per_second"]]
    if not speeds:
        return None
    mfus = [m["mfu"] for m in models if m["mfu"] is not None]
    mfu_text = f", MFU {float(np.median(mfus)):.1%}" if mfus else ""
    return f"{float(np.median(speeds)):,.0f} tokens/s (median over models){mfu_text}"


def render_page(report: AblationReport) -> str:
    """A self-contained HTML page: verdicts and the rule, the loss table, the curves."""
    e = html.escape
    verdicts = "".join(f"<li><b>{e(p['text'])}</b></li>" for p in report.pairs)
    warnings = "".join(f"<li>{e(w)}</li>" for w in report.warnings)
    rows = "".join(
        f"<tr><td>{e(s['run'])}</td><td>{fmt_loss(s['reference_loss_mean'])}</td><td>{fmt_loss(s['reference_loss_sd'])}</td>"
        f"<td>{fmt_loss(s['reference_loss_min'])} - {fmt_loss(s['reference_loss_max'])}</td>"
        f"<td>{fmt_loss(s['val_loss_mean'])}</td><td>{run['train_tokens']:,}</td><td>{s['epochs']:.2f}</td></tr>"
        for s, run in zip(report.summary, report.runs, strict=True)
    )
    seeds = report.config["seeds"]
    per_seed = "".join(
        f"<tr><td>{e(run['name'])}</td>"
        + "".join(
            f"<td>{fmt_loss(m['reference_loss'])}</td>"
            for s in seeds
            for m in report.models
            if m["run"] == run["name"] and m["seed"] == s
        )
        + "</tr>"
        for run in report.runs
    )
    svg = curves_svg(report) or "<p>(matplotlib not installed: no curves)</p>"
    model = report.model
    speed_text = speed_line(report.models) or "-"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Ablation: {e(" vs ".join(r["name"] for r in report.runs))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.rule{{color:#444}}</style></head><body>
<h1>Ablation: {e(" vs ".join(r["name"] for r in report.runs))}</h1>
<h2>Verdict</h2><ul>{verdicts}</ul>
<p class="rule">Rule: {e(report.rule)}.</p>
{f"<h3>Warnings</h3><ul>{warnings}</ul>" if warnings else ""}
<h2>Reference loss (nats/token, lower is better)</h2>
<table><tr><th>run</th><th>mean</th><th>sd over seeds</th><th>min - max</th><th>own val loss</th>
<th>train tokens available</th><th>epochs read</th></tr>{rows}</table>
<h3>Per seed</h3>
<table><tr><th>run</th>{"".join(f"<th>seed {s}</th>" for s in seeds)}</tr>{per_seed}</table>
<h2>Loss curves</h2>{svg}
<h2>Setup</h2>
<p>Budget {report.config["tokens"]:,} train tokens per model ({report.config["steps"]:,} steps), seeds {seeds};
model {model["n_layer"]} layers x {model["n_embd"]} wide, {model["params"]:,} parameters, vocabulary
{model["vocab_size"]:,}, block {model["block_size"]}; reference {e(report.reference["path"])}:
{report.reference["tokens"]:,} tokens, {report.reference["scored_tokens"]:,} scored;
device {e(str(report.hardware.get("device")))}; {speed_text}; {report.seconds:.1f} s in all.</p>
</body></html>
"""


def report_json(report: AblationReport) -> str:
    """``ablation.json``'s text (NaN and infinities as null)."""
    return json.dumps(json_safe(report.to_dict()), indent=1) + "\n"


def write_outputs(report: AblationReport, output_dir: Path) -> None:
    """``index.html`` and ``ablation.json`` (last) into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    report.files = {"page": str(output_dir / PAGE_NAME), "report": str(output_dir / REPORT_NAME)}
    (output_dir / PAGE_NAME).write_text(render_page(report))
    tmp = output_dir / f".{REPORT_NAME}.tmp"
    tmp.write_text(report_json(report))
    tmp.replace(output_dir / REPORT_NAME)


# ------------------------------------------------------------------------------------------ CLI


def parse_run(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` (named after its parent folder, the run's name for RUN/tokens)."""
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    folder = Path(text)
    return (folder.parent.name if folder.name == "tokens" else folder.name) or str(folder), folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m validation.ablate",
        description="Train the same small GPT on each run's token shards (same budget, same seeds) and compare "
        "their losses on a common reference set. `refinery ablate` runs this on run folders and store URLs.",
    )
    parser.add_argument("runs", nargs="+", help="token shard folders, NAME=DIR or DIR (at least two)")
    parser.add_argument("--reference", type=Path, required=True, help="reference token shards (a .bin or a folder)")
    parser.add_argument("--tokens", type=int, help="train tokens per model (default: the smallest run's train tokens)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..S-1), default 3")
    parser.add_argument("--preset", default="auto", help=f"{', '.join(PRESETS)} or auto (gpt2-124m on CUDA, else tiny)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, cpu, ...")
    parser.add_argument("--confidence", type=float, default=0.95, help="t-test confidence for a verdict")
    parser.add_argument("--min-delta", type=float, default=0.0, help="smallest mean loss difference (nats) that counts")
    parser.add_argument("--reference-tokens", type=int, default=1_000_000, help="reference tokens scored at the end")
    parser.add_argument("--output", "-o", type=Path, required=True, help="folder for ablation.json and index.html")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    try:
        train_config = preset(args.preset, args.device)
    except ValueError as e:
        raise AblationError(str(e)) from None
    if args.seeds < 1:
        raise AblationError("--seeds must be at least 1")
    return AblationConfig(
        tokens=args.tokens,
        seeds=tuple(range(args.seeds)),
        train=train_config,
        confidence=args.confidence,
        min_delta=args.min_delta,
        reference_tokens=args.reference_tokens,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done (whatever the verdict), 2 input it cannot run on."""
    args = build_parser().parse_args(argv)
    setup_job_logging(args.verbose)
    try:
        config = config_from_args(args)
        report = ablate([parse_run(r) for r in args.runs], args.reference, config)
    except ValueError as e:  # AblationError, an unavailable device
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_outputs(report, args.output)
    for pair in report.pairs:
        print(pair["text"])
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"report: {args.output / PAGE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
