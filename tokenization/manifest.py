"""Cut the per-part token streams into llm.c shards, in part order, and write ``manifest.json``.

Assembly only copies tokens (part files are memory-mapped), so it is cheap to redo: shards are a pure function
of the part files and the shard sizes, hence byte-identical however many processes tokenized the parts and
however often the pass was interrupted. The manifest carries a fingerprint of its inputs; when it matches and
the shards are intact, assembly is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenization.encoders import Tokenizer, TokenizerConfig
from tokenization.shards import (
    HEADER_BYTES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TRAIN_SPLIT,
    VAL_SPLIT,
    ShardError,
    ShardWriter,
    format_for_vocab,
    load_tokens,
    read_header,
    read_manifest,
    shard_name,
    split_of,
    write_manifest,
)

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 24  # tokens copied at a time (32-64 MB)


@dataclass
class PartTokens:
    """One tokenized input part: its token file and what it holds (also its completion marker's content)."""

    part: str
    num_documents: int
    """Documents tokenized (each is one end-of-text token plus its text's tokens)."""
    num_tokens: int
    """Tokens in the part file, end-of-text tokens included."""
    skipped_empty: int
    """Documents with null or empty text: no tokens, token_count 0."""
    sha256: str
    input_bytes: int
    input_mtime_ns: int
    tokenizer: str
    tokenizer_sha256: str
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartTokens:
        return cls(**data)

    @property
    def text_tokens(self) -> int:
        return self.num_tokens - self.num_documents


def fingerprint(parts: list[PartTokens], tokenizer: Tokenizer, config: TokenizerConfig) -> str:
    """What the shards are a function of: the part files (by hash), the tokenizer and the shard sizes."""
    key = {
        "tokenizer": [tokenizer.name, tokenizer.rank_sha256],
        "shard_size_tokens": config.shard_size_tokens,
        "val_shard": config.val_shard,
        "val_shard_tokens": config.val_shard_tokens,
        "parts": [[p.part, p.sha256, p.num_tokens] for p in parts],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _shard_capacity(index: int, config: TokenizerConfig) -> int:
    if index == 0 and config.val_shard and config.val_shard_tokens is not None:
        return config.val_shard_tokens
    return config.shard_size_tokens


def _intact(output_dir: Path, manifest: dict[str, Any]) -> bool:
    """Shards listed in an existing manifest are present with the promised headers and sizes (no rehash)."""
    try:
        for entry in manifest["shards"]:
            if read_header(output_dir / entry["name"]).num_tokens != entry["num_tokens"]:
                return False
    except (ShardError, KeyError, TypeError):
        return False
    return True


def _remove_stray_shards(output_dir: Path, keep: set[str]) -> None:
    for path in output_dir.glob("*.bin"):
        if path.name not in keep and split_of(path.name) in (VAL_SPLIT, TRAIN_SPLIT):
            log.info("removing %s: not part of the current manifest", path.name)
            path.unlink(missing_ok=True)
    for leftover in output_dir.glob(".*.bin.*.tmp"):
        leftover.unlink(missing_ok=True)


def assemble_shards(
    output_dir: Path,
    parts: list[tuple[PartTokens, Path]],
    tokenizer: Tokenizer,
    config: TokenizerConfig,
    source: str = "",
) -> dict[str, Any]:
    """Write shards from the part token files (in the given order) and the manifest; return the manifest."""
    output_dir = Path(output_dir)
    infos = [info for info, _ in parts]
    source_print = fingerprint(infos, tokenizer, config)
    try:
        existing = read_manifest(output_dir)
    except ShardError:
        existing = None
    if (
        existing is not None
        and existing.get("source", {}).get("fingerprint") == source_print
        and _intact(output_dir, existing)
    ):
        log.info("shards in %s are current; assembly skipped", output_dir)
        _remove_stray_shards(output_dir, {e["name"] for e in existing["shards"]})
        return existing
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)  # a crash from here on must not leave a stale manifest

    eot = tokenizer.eot_token
    entries: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    index = fill = docs = capacity = 0

    def close() -> None:
        nonlocal writer, index
        assert writer is not None
        header, sha = writer.commit()
        name = writer.path.name
        entries.append(
            {
                "name": name,
                "split": split_of(name),
                "num_tokens": header.num_tokens,
                "num_documents": docs,
                "dtype": np.dtype(header.dtype).name,
                "bytes": header.nbytes,
                "sha256": sha,
            }
        )
        writer = None
        index += 1

    try:
        for _, path in parts:
            tokens = load_tokens(path)
            pos = 0
            while pos < tokens.size:
                if writer is None:
                    writer = ShardWriter(output_dir / shard_name(index, config.val_shard), tokenizer.vocab_size)
                    fill = docs = 0
                    capacity = _shard_capacity(index, config)
                take = min(capacity - fill, tokens.size - pos, COPY_CHUNK)
                chunk = np.asarray(tokens[pos : pos + take])
                writer.write(chunk)
                docs += int(np.count_nonzero(chunk == eot))
                fill += take
                pos += take
                if fill == capacity:
                    close()
        if writer is not None:
            close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    magic, version, dtype = format_for_vocab(tokenizer.vocab_size)
    manifest = {
        "format": MANIFEST_FORMAT,
        "header_bytes": HEADER_BYTES,
        "magic": magic,
        "version": version,
        "dtype": np.dtype(dtype).name,
        "tokenizer": {
            "name": tokenizer.name,
            "rank_file": tokenizer.rank_file.name,
            "sha256": tokenizer.rank_sha256,
        },
        "vocab_size": tokenizer.vocab_size,
        "eot_token": eot,
        "documents_prefixed_by_eot": True,
        "shard_size_tokens": config.shard_size_tokens,
        "val_shard_tokens": config.val_shard_tokens if config.val_shard else None,
        "shards": entries,
        "totals": {
            "num_shards": len(entries),
            "num_tokens": sum(e["num_tokens"] for e in entries),
            "num_documents": sum(e["num_documents"] for e in entries),
            "val_tokens": sum(e["num_tokens"] for e in entries if e["split"] == VAL_SPLIT),
            "train_tokens": sum(e["num_tokens"] for e in entries if e["split"] == TRAIN_SPLIT),
            "skipped_empty": sum(p.skipped_empty for p in infos),
            "text_tokens": sum(p.text_tokens for p in infos),
        },
        "source": {
            "input": source,
            "fingerprint": source_print,
            "parts": [
                {"part": p.part, "num_documents": p.num_documents, "num_tokens": p.num_tokens, "sha256": p.sha256}
                for p in infos
            ],
        },
    }
    write_manifest(output_dir, manifest)
    _remove_stray_shards(output_dir, {e["name"] for e in entries})
    log.info("wrote %d shards, %d tokens to %s", len(entries), manifest["totals"]["num_tokens"], output_dir)
    return manifest
