"""CLI for token shards (``refinery shards ...``) and tokenizer assets (``refinery tokenizer ...``).

Mounted by the main CLI: ``app.add_typer(shards_app, name="shards")`` and
``app.add_typer(tokenizer_app, name="tokenizer")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline.app.cli_common import VerboseOpt, errors, fail, setup_logging
from pipeline.core.storage import check_readable, check_writable, location
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


def _preview(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars] + " ..."


def _inspect_file(path: Path) -> None:
    """One shard without a manifest: header, size check, token range."""
    try:
        header = read_header(path)
    except ShardError as e:
        fail(str(e))
    tokens = load_tokens(path)
    low, high, _ = scan_tokens(tokens, -1)
    typer.echo(
        f"{path.name}: magic {header.magic}, version {header.version}, {np.dtype(header.dtype).name}, "
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
    path: Annotated[Path, typer.Argument(help="A shard directory (with manifest.json) or a single .bin shard.")],
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
    """
    setup_logging(verbose)
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
    verbose: VerboseOpt = False,
) -> None:
    """Tokenize a pass's documents into llm.c shards (resumable: rerun to continue).

    Examples:

    * `refinery shards build out/sample --workers 2 --shard-size 1000000`

    * `refinery shards build s3://bucket/run -o s3://bucket/run/tokens-cl100k -t cl100k_base`
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
    with errors("reading the options", verbose):  # an unknown URL scheme: StorageError, exit 2
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
