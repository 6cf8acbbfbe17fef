"""Checks a shard directory must pass before any training: format, token range, document counts, splits.

Uses only ``tokenization.shards`` (numpy), so it runs on a training node without the pipeline. With a
``manifest.json`` everything the manifest promises is verified (``verify_shards``: header, size, dtype,
sha256, token range, end-of-text count == document count, totals, stray files). llm.c's own shards come
without a manifest; then the files are checked against what their headers say, and GPT-2 is assumed for
the GPT-2 magic unless a vocabulary is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenization.shards import (
    GPT2_MAGIC,
    ShardError,
    dtype_for_vocab,
    load_tokens,
    read_header,
    read_manifest,
    scan_tokens,
    verify_shards,
)

GPT2_VOCAB_SIZE = 50257
GPT2_EOT_TOKEN = 50256


@dataclass(frozen=True)
class CheckOptions:
    block_size: int = 64
    """Every split needs at least one window of block_size + 1 tokens."""
    checksums: bool = True
    vocab_size: int | None = None
    """For directories without manifest.json; must agree with the manifest when there is one."""
    eot_token: int | None = None


@dataclass
class ShardCheck:
    """Result of checking a shard directory: what was found and what is wrong with it."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vocab_size: int = GPT2_VOCAB_SIZE
    eot_token: int = GPT2_EOT_TOKEN
    tokenizer: str | None = None
    val: list[Path] = field(default_factory=list)
    train: list[Path] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "vocab_size": self.vocab_size,
            "eot_token": self.eot_token,
            "tokenizer": self.tokenizer,
            "shards": self.shards,
        }


def _is_val(name: str) -> bool:
    return name.startswith("val_") or "_val_" in name


def _shard_order(path: Path) -> tuple[int, str]:
    """Shard files in index order (``*_val_000000.bin`` before ``*_train_000001.bin``), names as tie-break."""
    digits = re.search(r"(\d+)\.bin$", path.name)
    return (int(digits.group(1)) if digits else -1, path.name)


def _check_with_manifest(shard_dir: Path, manifest: dict[str, Any], options: CheckOptions, check: ShardCheck) -> None:
    check.vocab_size, check.eot_token = int(manifest["vocab_size"]), int(manifest["eot_token"])
    tokenizer = manifest.get("tokenizer")
    check.tokenizer = tokenizer.get("name") if isinstance(tokenizer, dict) else tokenizer
    for key, override in (("vocab_size", options.vocab_size), ("eot_token", options.eot_token)):
        if override is not None and override != manifest[key]:
            check.problems.append(f"manifest says {key} {manifest[key]}, option says {override}")
    check.problems.extend(verify_shards(shard_dir, checksums=options.checksums))
    for entry in manifest["shards"]:
        path = shard_dir / str(entry.get("name", ""))
        split = entry.get("split") or ("val" if _is_val(path.name) else "train")
        check.shards.append({k: entry.get(k) for k in ("name", "split", "num_tokens", "num_documents", "dtype")})
        if path.is_file():
            (check.val if split == "val" else check.train).append(path)


def _check_without_manifest(shard_dir: Path, options: CheckOptions, check: ShardCheck) -> None:
    """llm.c's own shards (e.g. fineweb_val_000000.bin) come without a manifest: check what the files say."""
    paths = sorted(shard_dir.glob("*.bin"), key=_shard_order)
    if not paths:
        check.problems.append(f"{shard_dir}: no manifest.json and no *.bin shards")
        return
    check.notes.append("no manifest.json: checksums and document counts not checked")
    try:
        first = read_header(paths[0])
    except ShardError as e:
        check.problems.append(str(e))
        return
    if options.vocab_size is not None:
        check.vocab_size = options.vocab_size
    elif first.magic != GPT2_MAGIC:
        check.problems.append(f"{paths[0].name}: not a GPT-2 shard and no manifest; pass --vocab-size/--eot-token")
        return
    check.eot_token = options.eot_token if options.eot_token is not None else check.vocab_size - 1
    for path in paths:
        try:
            header = read_header(path)
        except ShardError as e:
            check.problems.append(str(e))
            continue
        dtype = np.dtype(header.dtype).name
        if dtype != np.dtype(dtype_for_vocab(check.vocab_size)).name:
            check.problems.append(f"{path.name}: dtype {dtype} does not match vocab_size {check.vocab_size}")
        low, high, eots = scan_tokens(load_tokens(path), check.eot_token)
        if header.num_tokens and (low < 0 or high >= check.vocab_size):
            check.problems.append(f"{path.name}: token ids out of range [0, {check.vocab_size}): found [{low}, {high}]")
        if header.num_tokens and eots == 0:
            check.problems.append(
                f"{path.name}: no end-of-text token ({check.eot_token}) in {header.num_tokens} tokens"
            )
        split = "val" if _is_val(path.name) else "train"
        check.shards.append(
            {"name": path.name, "split": split, "num_tokens": header.num_tokens, "num_documents": eots, "dtype": dtype}
        )
        (check.val if split == "val" else check.train).append(path)


def check_shards(shard_dir: Path, options: CheckOptions | None = None) -> ShardCheck:
    """Everything that must hold before training: format, token range, document counts, splits, sizes."""
    shard_dir = Path(shard_dir)
    options = options or CheckOptions()
    check = ShardCheck()
    if not shard_dir.is_dir():
        check.problems.append(f"{shard_dir}: not a directory")
        return check
    try:
        manifest = read_manifest(shard_dir)
    except ShardError as e:
        if (shard_dir / "manifest.json").exists():
            check.problems.append(str(e))
            return check
        manifest = None
    if manifest is not None:
        _check_with_manifest(shard_dir, manifest, options, check)
    else:
        _check_without_manifest(shard_dir, options, check)
    if check.problems:
        return check
    need = options.block_size + 1
    sizes = {p: read_header(p).num_tokens for p in check.val + check.train}
    if not check.val:
        check.problems.append("no val shard (val_NNNNNN.bin)")
    elif sum(sizes[p] for p in check.val) < need:
        check.problems.append(f"val shards hold {sum(sizes[p] for p in check.val)} tokens, fewer than {need}")
    if not check.train:
        check.problems.append("no train shard (train_NNNNNN.bin): the val shard takes all tokens; use smaller shards")
    elif not any(sizes[p] >= need for p in check.train):
        check.problems.append(f"no train shard holds a window of block_size + 1 = {need} tokens")
    return check
