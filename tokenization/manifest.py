"""Cut the per-part token streams into llm.c shards, in part order, and write ``manifest.json``.

Assembly only copies tokens (part files are memory-mapped), so it is cheap to redo: shards are a pure function
of the part files and the shard sizes, hence byte-identical however many processes tokenized the parts and
however often the pass was interrupted. The manifest carries a fingerprint of its inputs; when it matches and
the shards are intact, assembly is skipped.

The folder may be on an object store: part files are then streamed from it, each shard is written to a local
temporary file (plain writes, never a memory map: a full scratch disk raises ENOSPC, not SIGBUS) and uploaded
as one object, and ``manifest.json`` is uploaded last, so a manifest always describes complete shards. A rerun
after a crash rewrites the shards of the missing manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.core.storage import (
    Location,
    is_remote,
    list_files,
    list_names,
    location,
    publish,
    remove,
    temp_path_for,
    write_bytes_atomic,
)
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
    parse_header,
    read_header,
    read_manifest,
    shard_name,
    split_of,
)

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 24  # tokens copied at a time (32-64 MB)
STREAM_CHUNK = 1 << 22  # tokens read at a time from a part file on a store (8-16 MB)


class AtomicShardWriter(ShardWriter):
    """A shard bound for a location: written to a local temporary file, then renamed into place (local disk)
    or uploaded as one object (a store), so it is visible only once complete."""

    def __init__(self, path: Location | str, vocab_size: int) -> None:
        path = location(path)
        super().__init__(path, vocab_size, tmp=temp_path_for(path))

    def publish(self) -> None:
        publish(self.tmp, self.path)


def token_chunks(path: Location) -> Iterator[np.ndarray]:
    """The tokens of a shard-format file, a chunk at a time: memory-mapped on local disk, streamed from a store."""
    if not is_remote(path):
        tokens = load_tokens(path)
        for start in range(0, tokens.size, COPY_CHUNK):
            yield np.asarray(tokens[start : start + COPY_CHUNK])
        return
    with path.fs.open(path.path, "rb") as f:
        header = parse_header(f.read(HEADER_BYTES), f.size, path)
        dtype = np.dtype(header.dtype).newbyteorder("<")
        remaining = header.num_tokens
        while remaining:
            take = min(remaining, STREAM_CHUNK)
            data = f.read(take * dtype.itemsize)
            if len(data) != take * dtype.itemsize:
                raise ShardError(f"{path}: ended {remaining - len(data) // dtype.itemsize} tokens early")
            yield np.frombuffer(data, dtype=dtype)
            remaining -= take


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
    input_etag: str = ""
    """On an object store: the input object's ETag (the input is identified by size + ETag; mtime is 0)."""

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


def _intact(output_dir: Location, manifest: dict[str, Any]) -> bool:
    """Shards listed in an existing manifest are present with the promised headers and sizes (no rehash).

    On a store the sizes come from one listing of the folder (the size is the header's promise in bytes)."""
    try:
        if is_remote(output_dir):
            sizes = {name: info.size for name, info in list_files(output_dir).items()}
            return all(sizes.get(entry["name"]) == entry["bytes"] for entry in manifest["shards"])
        for entry in manifest["shards"]:
            if read_header(output_dir / entry["name"]).num_tokens != entry["num_tokens"]:
                return False
    except (ShardError, KeyError, TypeError):
        return False
    return True


def _remove_stray_shards(output_dir: Location, keep: set[str]) -> None:
    for name in list_names(output_dir, ".bin"):
        if name not in keep and split_of(name) in (VAL_SPLIT, TRAIN_SPLIT):
            log.info("removing %s: not part of the current manifest", name)
            remove(output_dir / name)
    if not is_remote(output_dir):  # a store has no temporary objects: they are local until uploaded
        for leftover in output_dir.glob(".*.bin.*.tmp"):
            leftover.unlink(missing_ok=True)


def write_manifest_atomic(output_dir: Location, manifest: dict[str, Any]) -> Location:
    """``manifest.json`` in one step (rename, or one upload); the same bytes as ``shards.write_manifest``."""
    path = output_dir / MANIFEST_NAME
    write_bytes_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return path


def assemble_shards(
    output_dir: Location | str,
    parts: list[tuple[PartTokens, Location]],
    tokenizer: Tokenizer,
    config: TokenizerConfig,
    source: str = "",
) -> dict[str, Any]:
    """Write shards from the part token files (in the given order) and the manifest; return the manifest."""
    output_dir = location(output_dir)
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
    remove(output_dir / MANIFEST_NAME)  # a crash from here on must not leave a stale manifest

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
            for tokens in token_chunks(path):
                pos = 0
                while pos < tokens.size:
                    if writer is None:
                        writer = AtomicShardWriter(
                            output_dir / shard_name(index, config.val_shard), tokenizer.vocab_size
                        )
                        fill = docs = 0
                        capacity = _shard_capacity(index, config)
                    take = min(capacity - fill, tokens.size - pos)
                    chunk = tokens[pos : pos + take]
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
    write_manifest_atomic(output_dir, manifest)
    _remove_stray_shards(output_dir, {e["name"] for e in entries})
    log.info("wrote %d shards, %d tokens to %s", len(entries), manifest["totals"]["num_tokens"], output_dir)
    return manifest
