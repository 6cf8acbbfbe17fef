"""``refinery ablate RUN_A RUN_B ...``: which run makes better training data, decided by training.

The training and the verdict are the ablation job's (``validation.ablate``, beside the shard-validation job,
torch only). This module takes what users have: run folders or token folders, on disk or on a store, and a
reference that is token shards, Parquet documents or JSONL text. It downloads store shards to scratch,
tokenizes a text reference with the runs' tokenizer, runs the job, uploads ``ablation.json`` and
``index.html``, and leaves a pointer in each run's ``ablations/`` folder so that
``refinery report RUN_A --compare RUN_B`` links the ablation of the pair.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pyarrow.parquet as pq
import typer
from tqdm import tqdm

from pipeline.app.cli_common import EXIT_USAGE, NoProgressOpt, VerboseOpt, errors, fail, setup_logging
from pipeline.app.shards_cli import local_shard_folder
from pipeline.core.parts import document_files
from pipeline.core.storage import (
    Location,
    StorageError,
    absolute,
    arrow_source,
    check_readable,
    describe_storage_error,
    list_names,
    local_copy,
    read_bytes,
    scratch_dir,
    write_bytes_atomic,
)
from pipeline.report.compare import ABLATIONS_DIR
from tokenization.shards import MANIFEST_NAME, ShardError, read_manifest, write_shard

if TYPE_CHECKING:
    from validation.ablate import AblationConfig, AblationReport, ModelResult

log = logging.getLogger(__name__)

TOKENS_DIR = "tokens"
TEXT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json.gz")


class AblationInputError(ValueError):
    """A run or reference the ablation cannot use: one line naming it."""


@dataclass(frozen=True)
class RunInput:
    """One run as the user named it: its name and its token folder."""

    name: str
    tokens: Location
    run_dir: Location | None
    """The run folder (holding tokens/), where the pointer to the ablation goes; None for a bare token folder."""


def _has_shards(folder: Location) -> bool:
    try:
        names = list_names(folder)
    except Exception:  # a missing folder: not a shard folder
        return False
    return MANIFEST_NAME in names or any(n.endswith(".bin") for n in names)


def resolve_run(text: str) -> RunInput:
    """``NAME=LOCATION`` or ``LOCATION``: a run folder (its ``tokens/``) or a token folder itself."""
    name, sep, rest = text.partition("=")
    if not (sep and name and "/" not in name and ":" not in name):
        name, rest = "", text
    given = absolute(rest.rstrip("/") or rest)
    check_readable(given)
    if _has_shards(given / TOKENS_DIR):
        run_dir, tokens = given, given / TOKENS_DIR
    elif _has_shards(given):
        run_dir = given.parent if given.name == TOKENS_DIR else None
        tokens = given
    else:
        raise AblationInputError(
            f"run {rest}: no token shards ({TOKENS_DIR}/manifest.json or *.bin): tokenize it first "
            "(`refinery run` with tokenize on, or `refinery shards build`)"
        )
    if not name:
        name = (run_dir or tokens).name
    return RunInput(name, tokens, run_dir)


def _slug(names: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-vs-".join(names))[:150]


def default_output(runs: list[RunInput]) -> Location:
    """``RUN_A/ablations/<a>-vs-<b>``; beside a bare token folder when the first run is one."""
    first = runs[0]
    base = first.run_dir if first.run_dir is not None else first.tokens.parent
    return base / ABLATIONS_DIR / _slug([r.name for r in runs])


# ---------------------------------------------------------------- the reference


def _reference_kind(reference: Location) -> str:
    """``shards`` (a .bin or a folder of them) or ``text`` (Parquet / JSONL documents with a text field)."""
    name = reference.name
    if name.endswith(".bin"):
        return "shards"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    try:
        names = list_names(reference)
    except Exception as e:
        raise StorageError(describe_storage_error(e, reference)) from e
    if any(n.endswith(".bin") for n in names):
        return "shards"
    if any(n.endswith(TEXT_SUFFIXES) for n in names):
        return "text"
    if "documents" in names:  # a run folder: its documents
        return "text"
    raise AblationInputError(
        f"reference {reference}: neither token shards (*.bin) nor documents (*.parquet, *.jsonl[.gz]) there"
    )


def _text_files(reference: Location) -> list[Location]:
    if reference.name.endswith(TEXT_SUFFIXES):
        return [reference]
    names = list_names(reference)
    if "documents" in names and not any(n.endswith(TEXT_SUFFIXES) for n in names):
        return document_files(reference)  # a run folder: its finished parts only
    return [reference / n for n in sorted(names) if n.endswith(TEXT_SUFFIXES) and not n.startswith((".", "_"))]


def read_reference_texts(reference: Location) -> list[str]:
    """The ``text`` of every document in the reference's Parquet or JSONL files."""
    texts: list[str] = []
    for path in _text_files(reference):
        if path.name.endswith(".parquet"):
            source, filesystem = arrow_source(path)
            names = pq.read_schema(source, filesystem=filesystem).names
            if "text" not in names:
                raise AblationInputError(f"reference {path}: no 'text' column (columns: {names})")
            table = pq.read_table(source, columns=["text"], filesystem=filesystem)
            texts.extend(t for t in table.column("text").to_pylist() if t and t.strip())
            continue
        data = read_bytes(path)
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                raise AblationInputError(f"reference {path}, line {number}: not a JSON object") from None
            if isinstance(text, str) and text.strip():
                texts.append(text)
    return texts


def runs_tokenizer(folder: Path) -> str:
    """The tokenizer name the run's manifest records (``gpt2`` for shards without a manifest)."""
    try:
        tokenizer = read_manifest(folder).get("tokenizer")
    except ShardError:
        return "gpt2"
    name = tokenizer.get("name") if isinstance(tokenizer, dict) else tokenizer
    return str(name or "gpt2")


def tokenize_reference(texts: list[str], tokenizer_name: str, folder: Path) -> Path:
    """The texts as one shard, each document after an end-of-text token (as the tokens pass writes them)."""
    from tokenization.encoders import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    eot = np.array([tokenizer.eot_token], dtype=np.uint32)
    pieces = [piece for array in tokenizer.encode_arrays(texts) for piece in (eot, array)]
    path = folder / "reference_000000.bin"
    write_shard(path, np.concatenate(pieces), tokenizer.vocab_size)
    log.info("reference: %d documents, %d tokens (%s)", len(texts), sum(p.size for p in pieces), tokenizer_name)
    return path


@contextlib.contextmanager
def local_reference(reference: Location, tokenizer_name: str) -> Iterator[Path]:
    """The reference as local token shards (tokenized into scratch when it is text)."""
    check_readable(reference)
    kind = _reference_kind(reference)
    if kind == "shards":
        if reference.name.endswith(".bin"):
            with local_copy(reference) as path:
                yield path
        else:
            with local_shard_folder(reference) as folder:
                yield folder
        return
    texts = read_reference_texts(reference)
    if not texts:
        raise AblationInputError(f"reference {reference}: empty (no document with text)")
    with tempfile.TemporaryDirectory(prefix="reference-", dir=scratch_dir()) as tmp:
        yield tokenize_reference(texts, tokenizer_name, Path(tmp))


# ---------------------------------------------------------------- running and publishing


def ablation_config(
    tokens: int | None,
    seeds: int,
    preset: str,
    device: str,
    confidence: float,
    min_delta: float,
    reference_tokens: int,
) -> AblationConfig:
    """The job's configuration from the command's flags or the flow's form (ImportError without torch, ValueError
    for values it rejects), seeds ``0..seeds-1``."""
    try:
        from validation.ablate import AblationConfig
        from validation.validate import preset as train_preset
    except ImportError as e:
        raise ImportError(f"the ablation needs torch: pip install 'cc-refinery[train]' ({e})") from e
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    return AblationConfig(
        tokens=tokens,
        seeds=tuple(range(seeds)),
        train=train_preset(preset, device),
        confidence=confidence,
        min_delta=min_delta,
        reference_tokens=reference_tokens,
    )


def run_ablation(
    run_texts: list[str],
    reference_text: str,
    config: AblationConfig,
    output: str | None = None,
    progress: Callable[[ModelResult], None] | None = None,
) -> tuple[AblationReport, Location]:
    """Resolve the inputs, train and compare (``validation.ablate``), publish; (report, output folder)."""
    from validation.ablate import PAGE_NAME, REPORT_NAME, AblationError, ablate, render_page, report_json

    runs = [resolve_run(text) for text in run_texts]
    if len(runs) < 2:
        raise AblationInputError("an ablation compares at least two runs")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise AblationInputError(f"two runs are named alike ({', '.join(names)}): name them NAME=LOCATION")
    out = absolute(output) if output else default_output(runs)
    reference = absolute(reference_text)
    with contextlib.ExitStack() as stack:
        local_runs = [(r.name, stack.enter_context(local_shard_folder(r.tokens))) for r in runs]
        ref = stack.enter_context(local_reference(reference, runs_tokenizer(local_runs[0][1])))
        try:
            report = ablate(local_runs, ref, config, progress)
        except AblationError as e:  # name what the user gave, not the scratch copies
            raise AblationInputError(_restore_names(str(e), local_runs, runs, ref, reference)) from None
    for entry, run in zip(report.runs, runs, strict=True):
        entry["shard_dir"] = str(run.tokens)
        entry["run_dir"] = None if run.run_dir is None else str(run.run_dir)
    report.reference["path"] = str(reference)
    report.files = {"page": str(out / PAGE_NAME), "report": str(out / REPORT_NAME)}
    write_bytes_atomic(out / PAGE_NAME, render_page(report).encode())
    write_bytes_atomic(out / REPORT_NAME, report_json(report).encode())  # last: the ablation is complete
    for run in runs:
        if run.run_dir is not None:
            write_pointer(run.run_dir, report, runs)
    return report, out


def _restore_names(
    text: str, local_runs: list[tuple[str, Path]], runs: list[RunInput], ref: Path, reference: Location
) -> str:
    for (_, local), run in zip(local_runs, runs, strict=True):
        text = text.replace(str(local), str(run.tokens))
    return text.replace(str(ref), str(reference))


def write_pointer(run_dir: Location, report: AblationReport, runs: list[RunInput]) -> None:
    """``RUN/ablations/<slug>.json``: which runs were compared, the verdicts, and where the page is."""
    pointer: dict[str, Any] = {
        "runs": [str(r.run_dir or r.tokens) for r in runs],
        "names": [r.name for r in runs],
        "page": report.files.get("page"),
        "report": report.files.get("report"),
        "verdicts": [{k: p[k] for k in ("a", "b", "verdict", "text")} for p in report.pairs],
        "created": time.time(),
    }
    path = run_dir / ABLATIONS_DIR / f"{_slug(pointer['names'])}.json"
    write_bytes_atomic(path, json.dumps(pointer, indent=1).encode())


# ---------------------------------------------------------------- the command


def ablate_command(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Two or more runs: run folders (their tokens/), token folders, or store URLs; NAME=LOCATION names one."
        ),
    ],
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            "-r",
            help="Held-out text every model is scored on: token shards (*.bin or a folder), Parquet or JSONL "
            "documents with a 'text' field, or a run folder (its documents); tokenized like the runs.",
        ),
    ],
    tokens: Annotated[
        int | None,
        typer.Option(
            "--tokens", "-n", help="Train tokens per model, the same for every run (default: the smallest run's)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", "-s", help="Seeds per run (0..S-1): models = runs x seeds.")] = 3,
    preset_name: Annotated[
        str,
        typer.Option("--preset", help="Model: tiny, small, gpt2-124m, or auto (gpt2-124m on CUDA, tiny elsewhere)."),
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto (cuda > mps > cpu), cuda, cuda:1, mps, cpu.")] = "auto",
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence of the paired t-test behind a verdict.")
    ] = 0.95,
    min_delta: Annotated[
        float, typer.Option("--min-delta", help="Smallest mean reference-loss difference (nats) called a difference.")
    ] = 0.0,
    reference_tokens: Annotated[
        int, typer.Option("--reference-tokens", help="Reference tokens scored per model (spread over all of it).")
    ] = 1_000_000,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Folder for ablation.json and index.html (default RUN_A/ablations/A-vs-B)."
        ),
    ] = None,
    verbose: VerboseOpt = False,
    no_progress: NoProgressOpt = False,
) -> None:
    """Which run makes better training data: train the same small GPT on each run (same token budget, same seeds)
    and compare their losses on one reference set.

        Writes ablation.json and index.html (loss curves side by side, reference loss per run as mean and spread
    over seeds, the verdict and its rule) and a pointer in each run's ablations/ folder, so
    `refinery report RUN_A --compare RUN_B` links it. Verdict per pair: a paired t-test over seeds on the final
    reference loss (A better / B better / no clear difference). Needs the train extra (torch).

        Example: `refinery ablate out/strict out/loose --reference heldout.parquet --tokens 2000000 --seeds 3`
    """
    setup_logging(verbose)
    try:
        config = ablation_config(tokens, seeds, preset_name, device, confidence, min_delta, reference_tokens)
    except ImportError as e:
        fail(str(e), EXIT_USAGE)
    except ValueError as e:  # AblationError, an unknown preset
        fail(f"error: {e}", EXIT_USAGE)
    from validation.ablate import AblationError, speed_line

    bar = tqdm(total=max(2, len(runs)) * len(config.seeds), unit="model", disable=no_progress, desc="ablation")

    def advance(result: ModelResult) -> None:
        bar.set_postfix_str(f"{result.run} seed {result.seed}: {result.reference_loss:.3f}")
        bar.update()

    with errors("running the ablation", verbose, usage=(AblationInputError, AblationError, ValueError)):
        try:
            report, out = run_ablation(runs, reference, config, output, progress=advance)
        finally:
            bar.close()
    for summary in report.summary:
        sd = summary["reference_loss_sd"]
        spread = f" +- {sd:.4f}" if sd is not None else ""
        typer.echo(
            f"{summary['run']}: reference loss {summary['reference_loss_mean']:.4f}{spread} "
            f"(own val {summary['val_loss_mean']:.4f}, epochs {summary['epochs']:.2f})"
        )
    speed = speed_line(report.models)
    if speed:
        device = report.hardware.get("device")
        typer.echo(f"{len(report.models)} models on {device}: {speed}, {report.seconds:.0f} s")
    for pair in report.pairs:
        typer.echo(pair["text"])
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"page:   {out / 'index.html'}")
    typer.echo(f"report: {out / 'ablation.json'}")
