"""The ``ablate`` flow: ``refinery ablate`` as a Prefect flow, so an ablation can be started from the UI's form.

Thin on purpose: :func:`pipeline.app.ablate.run_ablation` resolves the runs and the reference (folders or
store URLs), trains the same small GPT on each run for each seed and writes ``ablation.json`` and its page,
as the command does. This module runs it as one task, logs a line per trained model, and publishes the
verdicts and the loss table as a Markdown artifact. The training job needs torch (the ``train`` extra); it is
imported only when a run starts, so the deployments register on a machine without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.exceptions import ParameterTypeError
from prefect.states import State
from prefect.tasks import Task

from flows.artifacts import artifact_key, report_location
from flows.outputs import site_from_env
from flows.refinery_flow import pipeline_logs_to_run
from pipeline.app.ablate import ablation_config
from pipeline.core.storage import StorageError, absolute

if TYPE_CHECKING:
    from validation.ablate import AblationConfig, AblationReport, ModelResult

AblatePreset = Literal["auto", "tiny", "small", "gpt2-124m"]
"""The validation job's presets (``validation.validate.PRESETS``) and ``auto``: gpt2-124m on CUDA, tiny elsewhere."""

BAD_INPUT = (ParameterTypeError, StorageError, ImportError, ValueError)
"""What fails the run with "nothing was trained" (ValueError covers AblationInputError and AblationError)."""

TRAIN_RETRIES = 1
TRAIN_RETRY_DELAY_S = 30.0
"""Only an I/O error (a store's shards, a network hiccup) is retried once: training again fails the same way."""

ARTIFACT_KEY_CHARS = 100


def worth_retrying(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an I/O error that waiting can fix; not bad input, a missing file or a failed training step."""
    exc = state.result(raise_on_failure=False)
    missing = FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    return isinstance(exc, OSError) and not isinstance(exc, missing) and not isinstance(exc, BAD_INPUT)


def model_line(result: ModelResult, done: int, total: int) -> str:
    """One trained model as the run's log shows it."""
    from validation.ablate import fmt_loss as _fmt

    speed = f", {result.tokens_per_second:,.0f} tokens/s" if result.tokens_per_second else ""
    mfu = f", MFU {result.mfu:.1%}" if result.mfu is not None else ""
    diverged = " (diverged)" if result.diverged else ""
    return (
        f"model {done}/{total}: {result.run} seed {result.seed}: reference loss {_fmt(result.reference_loss)}, "
        f"own val loss {_fmt(result.val_loss)}, epochs {result.epochs:.2f}{speed}{mfu}, "
        f"{result.seconds:.1f} s{diverged}"
    )


def _train(runs: list[str], reference: str, config: AblationConfig, output: str | None) -> tuple[AblationReport, str]:
    """Train and compare (``run_ablation``), logging each model as it finishes; (report, output folder)."""
    from pipeline.app.ablate import run_ablation

    logger = get_run_logger()
    total = len(runs) * len(config.seeds)
    done = 0

    def progress(result: ModelResult) -> None:
        nonlocal done
        done += 1
        logger.info("%s", model_line(result, done, total))

    report, out = run_ablation(runs, reference, config, output, progress=progress)
    return report, str(out)


train_task = task(
    _train,
    name="train-and-compare",
    task_run_name="train and compare",
    retries=TRAIN_RETRIES,
    retry_delay_seconds=TRAIN_RETRY_DELAY_S,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # an ablation is redone when asked; its output folder says what is there
    persist_result=False,
)


def ablation_markdown(report: AblationReport, page: str) -> str:
    """Verdicts, the reference loss per run, warnings, the rule, the setup and where the page is."""
    from validation.ablate import fmt_loss as _fmt
    from validation.ablate import speed_line

    names = [r["name"] for r in report.runs]
    lines = [f"## Ablation: {' vs '.join(f'`{n}`' for n in names)}", ""]
    lines += [f"- **{p['text']}**" for p in report.pairs]
    lines += [
        "",
        "Reference loss (nats/token, lower is better):",
        "",
        "| run | mean | sd over seeds | own val loss | epochs read |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in report.summary:
        lines.append(
            f"| {s['run']} | {_fmt(s['reference_loss_mean'])} | {_fmt(s['reference_loss_sd'])} "
            f"| {_fmt(s['val_loss_mean'])} | {s['epochs']:.2f} |"
        )
    if report.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in report.warnings]
    model, config = report.model, report.config
    lines += [
        "",
        f"Rule: {report.rule}.",
        "",
        f"Setup: {config['tokens']:,} train tokens per model ({config['steps']:,} steps), seeds {config['seeds']}; "
        f"model {model['n_layer']} layers x {model['n_embd']} wide, {model['params']:,} parameters; "
        f"device {report.hardware.get('device')}; {speed_line(report.models) or '-'}; {report.seconds:.1f} s in all.",
        "",
        f"Page: {page}",
        "",
        f"Report: `{report.files.get('report')}`",
    ]
    return "\n".join(lines)


def publish_ablation_artifact(report: AblationReport) -> str:
    """The Markdown artifact of the ablation, keyed by the runs' names; return its key."""
    names = [r["name"] for r in report.runs]
    key = artifact_key("-vs-".join(names)[:ARTIFACT_KEY_CHARS], "ablation")
    page = report_location(absolute(report.files["page"]), site_from_env())
    create_markdown_artifact(
        ablation_markdown(report, page),
        key=key,
        description=f"Ablation of {', '.join(names)}: verdicts, reference loss per run, the rule, the page.",
    )
    return key


@flow(
    name="ablate",
    description="Which run makes better training data: train the same small GPT on each run's token shards (same "
    "token budget, same seeds), score every model on one reference set, and give a verdict per pair (paired "
    "t-test over seeds). Writes ablation.json and index.html, as `refinery ablate` does. Needs torch.",
    validate_parameters=False,  # validated in the run, so errors reach the run's log
)
def ablate(
    runs: list[str],
    reference: str,
    tokens: int | None = None,
    seeds: int = 3,
    preset: AblatePreset = "auto",
    device: str = "auto",
    confidence: float = 0.95,
    min_delta: float = 0.0,
    reference_tokens: int = 1_000_000,
    output: str | None = None,
) -> dict[str, Any]:
    """Train on each run and compare; the verdicts, the loss table and the page's location become an artifact.

    Args:
        runs: Two or more runs: run folders (their tokens/ folder), token folders, or store URLs
            (s3://bucket/runs/a); NAME=LOCATION names one. All tokenized with the same tokenizer.
        reference: Held-out text every model is scored on: token shards (a .bin file or a folder of them),
            Parquet or JSONL documents with a 'text' field, or a run folder (its documents).
        tokens: Train tokens per model, the same for every run (empty: the smallest run's train tokens).
        seeds: Seeds per run (0..seeds-1); models trained = runs x seeds. A verdict needs at least 2.
        preset: Model and schedule: tiny (seconds on a CPU), small, gpt2-124m (bf16, torch.compile and MFU on a
            GPU), or auto: gpt2-124m on a CUDA worker, tiny elsewhere.
        device: auto (cuda > mps > cpu), cuda, cuda:1, mps or cpu.
        confidence: Confidence of the paired t-test behind a verdict (in [0.5, 1)).
        min_delta: Smallest mean reference-loss difference (nats) called a difference.
        reference_tokens: Reference tokens scored per model (windows spread over all of it).
        output: Folder (or store URL) for ablation.json and index.html (empty: RUN_A/ablations/A-vs-B).
    """
    logger = get_run_logger()
    given = {
        "runs": runs,
        "reference": reference,
        "tokens": tokens,
        "seeds": seeds,
        "preset": preset,
        "device": device,
        "confidence": confidence,
        "min_delta": min_delta,
        "reference_tokens": reference_tokens,
        "output": output,
    }
    try:
        params = ablate.validate_parameters(given)
        if not str(params["reference"]).strip():
            raise ValueError("no reference: give the held-out text every model is scored on")
        config = ablation_config(
            params["tokens"],
            params["seeds"],
            params["preset"],
            params["device"],
            params["confidence"],
            params["min_delta"],
            params["reference_tokens"],
        )
    except BAD_INPUT as e:
        logger.error("nothing was trained: %s", e)
        raise
    train = config.train
    logger.info(
        "ablation of %d runs x %d seed(s): preset %s (%d layers x %d wide), device %s, %s train tokens per model",
        len(params["runs"]),
        len(config.seeds),
        params["preset"],
        train.n_layer,
        train.n_embd,
        train.device,
        f"{config.tokens:,}" if config.tokens else "the smallest run's",
    )
    with pipeline_logs_to_run():
        try:
            report, out = train_task(params["runs"], params["reference"], config, params["output"] or None)
        except BAD_INPUT as e:
            logger.error("nothing was trained: %s", e)
            raise
    key = publish_ablation_artifact(report)
    for pair in report.pairs:
        logger.info("%s", pair["text"])
    for warning in report.warnings:
        logger.warning("%s", warning)
    logger.info("page: %s (artifact %s)", report.files.get("page"), key)
    return {
        "output": out,
        "page": report.files.get("page"),
        "report": report.files.get("report"),
        "verdicts": [{k: p[k] for k in ("a", "b", "verdict", "text")} for p in report.pairs],
    }
