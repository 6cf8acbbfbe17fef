"""CLI for token shards (``refinery shards ...``, ``refinery validate-shards``) and tokenizer assets
(``refinery tokenizer ...``).

Mounted by the main CLI: ``app.add_typer(shards_app, name="shards")`` and
``app.add_typer(tokenizer_app, name="tokenizer")``; ``validate-shards`` runs :func:`validate_shards_main`.

Shard folders may be store URLs. The validation job (``validation.validate``, which runs on training nodes
without the pipeline) reads local files only, so for a folder on a store the shards are first downloaded to
a scratch folder (:func:`local_shard_folder`) and the job's output folder is uploaded afterwards
(:func:`publish_validation`), with the same layout as on local disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline.app.cli_common import EXIT_USAGE, StoreConfigOpt, VerboseOpt, errors, fail, setup_logging
from pipeline.app.config import ConfigError, load_config
from pipeline.core.storage import (
    Location,
    StorageError,
    check_readable,
    check_writable,
    describe_storage_error,
    is_remote,
    list_names,
    local_copy,
    location,
    scratch_dir,
    write_bytes_atomic,
)
from tokenization.shards import (
    MANIFEST_NAME,
    ShardError,
    load_tokens,
    read_header,
    read_manifest,
    scan_tokens,
    verify_shards,
)

shards_app = typer.Typer(
    help="Build and inspect llm.c token shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tokenizer_app = typer.Typer(
    help="Tokenizer assets (rank files), fetched once for offline use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger(__name__)

VALIDATION_REPORT = "validation.json"
"""What the validation job writes in its output folder (``validation.validate.REPORT_NAME``), beside its plot."""


# ---------------------------------------------------------------- shard folders on a store


@contextlib.contextmanager
def local_shard_folder(shard_dir: Location | str) -> Iterator[Path]:
    """``shard_dir`` as a local folder: itself on local disk; from a store, its ``manifest.json`` and every
    ``*.bin`` shard (the checks read them all) downloaded into a scratch folder, removed afterwards.

    Raises StorageError (one line) when the folder is missing, unreadable or holds no shards.
    """
    shard_dir = location(shard_dir)
    if not is_remote(shard_dir):
        yield shard_dir
        return
    check_readable(shard_dir)
    try:
        names = [n for n in list_names(shard_dir) if n == MANIFEST_NAME or n.endswith(".bin")]
    except Exception as e:  # every store library has its own exception types
        raise StorageError(describe_storage_error(e, shard_dir)) from e
    if not names:
        raise StorageError(f"{shard_dir}: no {MANIFEST_NAME} and no *.bin shards there: not a shard folder")
    folder = Path(tempfile.mkdtemp(prefix="shards-", dir=scratch_dir()))
    try:
        local = folder / shard_dir.name
        local.mkdir()
        log.info("downloading %d files of %s to %s", len(names), shard_dir, local)
        for name in names:
            source = shard_dir / name
            try:
                source.fs.get_file(source.path, str(local / name))
            except Exception as e:
                raise StorageError(describe_storage_error(e, source)) from e
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish_validation(local_out: Path, out_dir: Location | str, shard_dir: Location | str) -> None:
    """The validation job's local output folder to ``out_dir`` (same file names), ``validation.json`` last, with
    the shard folder and file paths it names rewritten to where they are now (not the scratch copies)."""
    out_dir, shard_dir = location(out_dir), location(shard_dir)
    if not local_out.is_dir():
        return
    names = sorted(p.name for p in local_out.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in names:
        if name != VALIDATION_REPORT:
            write_bytes_atomic(out_dir / name, (local_out / name).read_bytes())
    if VALIDATION_REPORT in names:
        report = json.loads((local_out / VALIDATION_REPORT).read_text())
        report["shard_dir"] = str(shard_dir)
        report["files"] = {key: str(out_dir / Path(value).name) for key, value in report.get("files", {}).items()}
        write_bytes_atomic(out_dir / VALIDATION_REPORT, (json.dumps(report, indent=1) + "\n").encode())
    log.info("validation outputs %s written to %s", names, out_dir)


def validate_shards_main(argv: list[str]) -> int:
    """``refinery validate-shards ARGS``: the validation job's own CLI, with store URLs for the shard folder
    and ``--output`` (default: the shard folder's sibling ``validation/``). Exit 0 PASS, 1 FAIL, 2 usage."""
    try:
        from validation.validate import build_parser
        from validation.validate import main as validate_main
    except ImportError as e:
        typer.secho(f"validate-shards needs torch: pip install 'cc-refinery[train]' ({e})", fg=typer.colors.RED,
                    err=True)  # fmt: skip
        return EXIT_USAGE
    parser = build_parser()
    for action in parser._actions:  # keep URLs as typed: a Path would fold "s3://" into "s3:/"
        if action.dest in ("shard_dir", "output"):
            action.type = str
            action.help = f"{action.help}: a local path or a store URL (s3://bucket/...)"
    parser.add_argument(
        "--config", "-c", dest="run_config", help="run config (YAML) whose storage_options reach the store"
    )
    args = parser.parse_args(argv)
    argv = without_option(argv, ("--config", "-c"))  # the job's own parser does not know it
    try:
        if args.run_config is not None:
            with errors(f"reading {args.run_config}", args.verbose, usage=(ConfigError,)):
                load_config(args.run_config, require_model=False)  # installs its storage_options; no classifier here
        if not is_remote(args.shard_dir) and not (args.output and is_remote(args.output)):
            return validate_main(argv)
        setup_logging(args.verbose)
        with errors(f"validating {args.shard_dir}", args.verbose):
            return _validate_on_store(argv, args.shard_dir, args.output, validate_main)
    except typer.Exit as e:
        return e.exit_code


def without_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the option ``names`` and its value, in each form argparse took it: ``--name VALUE``,
    ``--name=VALUE``, a prefix of a long name (``--conf``: argparse already refused an ambiguous one) and
    ``-nVALUE``. Arguments after ``--`` are positional and stay."""
    out: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--":
            return out + argv[index:]
        flag, equals, _ = arg.partition("=")
        if len(flag) > 2 and flag.startswith("--") and any(n.startswith(flag) for n in names if n.startswith("--")):
            skip = not equals
        elif any(len(n) == 2 and arg.startswith(n) and not n.startswith("--") for n in names):
            skip = arg in names
        else:
            out.append(arg)
    return out


def _validate_on_store(argv: list[str], shard_text: str, out_text: str | None, validate_main: Any) -> int:
    shard_dir = location(shard_text.rstrip("/"))
    out_dir = location(out_text) if out_text else shard_dir.parent / "validation"
    with (
        local_shard_folder(shard_dir) as local_dir,
        tempfile.TemporaryDirectory(prefix="validation-", dir=scratch_dir()) as tmp,
    ):
        local_out = Path(tmp) / "validation"
        job_argv = [str(local_dir) if arg == shard_text else arg for arg in argv] + ["--output", str(local_out)]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = validate_main(job_argv)
        publish_validation(local_out, out_dir, shard_dir)
    # what the job printed, naming the store instead of the scratch copies
    text = printed.getvalue().replace(str(local_out), str(out_dir)).replace(str(local_dir), str(shard_dir))
    sys.stdout.write(text)
    return code


def _preview(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars] + " ..."


def _inspect_file(path: Path, name: str | None = None) -> None:
    """One shard without a manifest: header, size check, token range."""
    try:
        header = read_header(path)
    except ShardError as e:
        fail(str(e))
    tokens = load_tokens(path)
    low, high, _ = scan_tokens(tokens, -1)
    typer.echo(
        f"{name or path.name}: magic {header.magic}, version {header.version}, {np.dtype(header.dtype).name}, "
        f"{header.num_tokens:,} tokens, ids in [{low}, {high}], size OK ({header.nbytes:,} bytes)"
    )


def _shard_rows(shard_dir: Path, manifest: dict[str, Any]) -> list[str]:
    rows = [f"{'shard':<20} {'split':<6} {'magic':>9} {'ver':>4} {'dtype':<7} {'tokens':>13} {'docs':>10} {'MB':>9}"]
    for entry in manifest["shards"]:
        try:
            header = read_header(shard_dir / entry["name"])
            magic, version = str(header.magic), str(header.version)
        except ShardError:
            magic, version = "BAD", "-"
        rows.append(
            f"{entry['name']:<20} {entry['split']:<6} {magic:>9} {version:>4} {entry['dtype']:<7} "
            f"{entry['num_tokens']:>13,} {entry['num_documents']:>10,} {entry.get('bytes', 0) / 1e6:>9.1f}"
        )
    return rows


@shards_app.command("inspect")
def inspect(
    path: Annotated[
        str, typer.Argument(help="A shard directory (with manifest.json) or a single .bin shard; a path or a URL.")
    ],
    sample: Annotated[int, typer.Option("--sample", "-n", help="Documents to decode and print.")] = 2,
    chars: Annotated[int, typer.Option("--chars", help="Characters shown per decoded document.")] = 300,
    checksums: Annotated[bool, typer.Option("--checksums/--no-checksums", help="Verify sha256 of every shard.")] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Validate shards (header, size, dtype, token range, counts, sha256) and decode a sample.

    Exits 1 if any problem is found.

    Examples:

    * `refinery shards inspect out/sample/tokens`

    * `refinery shards inspect out/sample/tokens/val_000000.bin`

    * `refinery shards inspect s3://bucket/run/tokens` (downloads the shards to scratch first)
    """
    setup_logging(verbose)
    with errors(f"reading {path}", verbose):
        where = location(path)
        if is_remote(where):
            check_readable(where)
            if where.is_file():
                with local_copy(where) as local:
                    _inspect_file(local, where.name)
            else:
                with local_shard_folder(where) as local:
                    _inspect(local, sample, chars, checksums)
            return
    _inspect(where, sample, chars, checksums)


def _inspect(path: Path, sample: int, chars: int, checksums: bool) -> None:
    if path.is_file():
        _inspect_file(path)
        return
    if not (path / MANIFEST_NAME).is_file():
        fail(f"{path}: no {MANIFEST_NAME}; not a shard directory")
    try:
        manifest = read_manifest(path)
    except ShardError as e:
        fail(str(e))
    tok, totals = manifest["tokenizer"], manifest.get("totals", {})
    typer.echo(
        f"tokenizer {tok['name']} (rank file sha256 {tok['sha256'][:16]}...), vocab {manifest['vocab_size']:,}, "
        f"end-of-text {manifest['eot_token']}, {manifest.get('dtype', '?')}"
    )
    typer.echo("\n".join(_shard_rows(path, manifest)))
    typer.echo(
        f"total: {totals.get('num_shards', 0)} shards, {totals.get('num_tokens', 0):,} tokens "
        f"(val {totals.get('val_tokens', 0):,}, train {totals.get('train_tokens', 0):,}), "
        f"{totals.get('num_documents', 0):,} documents"
    )
    problems = verify_shards(path, checksums=checksums)
    what = "headers, sizes, token range, counts" + (", sha256" if checksums else "")
    if problems:
        typer.secho(f"{len(problems)} problem(s):", fg=typer.colors.RED)
        for problem in problems:
            typer.echo(f"  - {problem}")
    else:
        typer.secho(f"verified: {what} OK", fg=typer.colors.GREEN)
    if sample > 0 and not problems:
        from tokenization.encoders import TokenizerAssetError, decode_sample

        try:
            texts = decode_sample(path, sample)
        except TokenizerAssetError as e:
            typer.echo(f"(no sample: {e})")
            texts = []
        for i, text in enumerate(texts):
            typer.echo(f"\n--- document {i} ({len(text):,} chars)\n{_preview(text, chars)}")
    if problems:
        raise typer.Exit(1)


@shards_app.command("build")
def build(
    input_dir: Annotated[
        str, typer.Argument(help="A pass's output folder (documents/ + markers/): a local path or a store URL.")
    ],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Shard folder, a path or a store URL (default: INPUT/tokens).")
    ] = None,
    tokenizer: Annotated[str, typer.Option("--tokenizer", "-t", help="gpt2 (r50k_base) or cl100k_base.")] = "gpt2",
    shard_size: Annotated[int, typer.Option("--shard-size", help="Tokens per shard.")] = 100_000_000,
    val_tokens: Annotated[int | None, typer.Option("--val-tokens", help="Tokens in the val shard.")] = None,
    no_val: Annotated[bool, typer.Option("--no-val", help="No val shard: every shard is train.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Processes tokenizing parts at once.")] = 1,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    run_config: StoreConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Tokenize a pass's documents into llm.c shards (resumable: rerun to continue).

    Examples:

    * `refinery shards build out/sample --workers 2 --shard-size 1000000`

    * `refinery shards build s3://bucket/run -o s3://bucket/run/tokens-cl100k -t cl100k_base` (credentials from
      AWS_* or ~/.aws, or `--config run.yaml` with storage_options)
    """
    setup_logging(verbose)
    from pydantic import ValidationError

    from tokenization.encoders import TokenizerAssetError, TokenizerConfig
    from tokenization.tokenize_pass import run_tokenize

    try:
        config = TokenizerConfig(
            name=tokenizer,
            shard_size_tokens=shard_size,
            val_shard=not no_val,
            val_shard_tokens=val_tokens,
            workers=workers,
        )
    except ValidationError as e:
        fail(f"invalid options: {e}", 2)
    with errors("reading the options", verbose, usage=(ConfigError,)):  # an unknown URL scheme: StorageError, exit 2
        if run_config is not None:
            load_config(run_config, require_model=False)  # installs its storage_options; no classifier here
        source = location(input_dir)
        out = location(output) if output else source / "tokens"
    with errors(f"tokenizing into {out}", verbose, usage=(TokenizerAssetError,)):
        check_readable(source)
        check_writable(out)
        result = run_tokenize(source, out, config, progress=not no_progress)
    totals = result["manifest"]["totals"]
    typer.echo(
        f"{totals['num_shards']} shards, {totals['num_tokens']:,} tokens, {totals['num_documents']:,} documents "
        f"in {out} ({result['tokens_per_second']:,.0f} tokens/s; {result['parts_tokenized']} parts tokenized, "
        f"{result['parts_reused']} reused)"
    )


@tokenizer_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="gpt2, cl100k_base, or all.")] = "gpt2",
    verbose: VerboseOpt = False,
) -> None:
    """Find or fetch a tokenizer's rank file, verify its sha256 and cache it, so runs work offline.

    GPT-2's comes from tiktoken's download when reachable, else from the openai-whisper source distribution.
    """
    setup_logging(verbose)
    from tokenization.encoders import SPECS, TokenizerAssetError, fetch_rank_file

    names = sorted(SPECS) if name == "all" else [name]
    for one in names:
        try:
            path = fetch_rank_file(one)
        except (TokenizerAssetError, ValueError) as e:
            fail(f"error: {e}")
        typer.echo(f"{one}: {path}")


def fetch_tokenizer_assets(names: tuple[str, ...] = ("gpt2", "cl100k_base")) -> list[Path]:
    """Callable form of ``refinery tokenizer fetch all`` (for an install step)."""
    from tokenization.encoders import fetch_rank_file

    return [fetch_rank_file(name) for name in names]
