"""llm.c-compatible token shards: write, read, validate. Depends on numpy only.

A shard is a 256 x int32 header (1,024 bytes: [0] magic, [1] version, [2] token count, rest zero)
followed by the tokens, exactly as llm.c's ``dev/data/data_common.py`` writes them:

- vocabularies below 65,536 ids (GPT-2): magic 20240520, version 1, uint16 tokens - the only variant
  llm.c's C loader accepts (it checks file size == 1024 + 2 x count);
- larger vocabularies: llm.c's llama-3 convention, magic 20240801, version 7, uint32 tokens.

Every document is *prefixed* by the end-of-text token, so the number of end-of-text tokens in a shard
is the number of documents that start in it (a document may continue into the next shard, as in
llm.c's ``fineweb.py``). The first shard is ``val_000000.bin``, the rest ``train_000001.bin``, ...

``manifest.json`` next to the shards records, per shard, its split, token and document counts, dtype
and sha256, plus the tokenizer (name, sha256 of its rank file), vocab size and end-of-text id.
This module imports nothing else from the project, so a training node can use it on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4  # 1024
GPT2_MAGIC = 20240520
GPT2_VERSION = 1
LLAMA3_MAGIC = 20240801
LLAMA3_VERSION = 7
UINT16_LIMIT = 2**16

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "llm.c"
VAL_SPLIT = "val"
TRAIN_SPLIT = "train"

_FORMATS: dict[tuple[int, int], type[np.unsignedinteger]] = {
    (GPT2_MAGIC, GPT2_VERSION): np.uint16,
    (LLAMA3_MAGIC, LLAMA3_VERSION): np.uint32,
}
_CHUNK = 1 << 22  # tokens per chunk when scanning a shard


class ShardError(ValueError):
    """A shard (or its manifest) is not what it claims to be."""


@dataclass(frozen=True)
class ShardHeader:
    magic: int
    version: int
    num_tokens: int

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        try:
            return _FORMATS[(self.magic, self.version)]
        except KeyError:
            raise ShardError(f"unknown shard format magic={self.magic} version={self.version}") from None

    @property
    def nbytes(self) -> int:
        """Size the file must have: header plus tokens."""
        return HEADER_BYTES + np.dtype(self.dtype).itemsize * self.num_tokens


def format_for_vocab(vocab_size: int) -> tuple[int, int, type[np.unsignedinteger]]:
    """(magic, version, dtype) llm.c uses for a vocabulary of this size."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= UINT16_LIMIT - 1:
        return GPT2_MAGIC, GPT2_VERSION, np.uint16
    if vocab_size <= 2**32:
        return LLAMA3_MAGIC, LLAMA3_VERSION, np.uint32
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 tokens")


def dtype_for_vocab(vocab_size: int) -> type[np.unsignedinteger]:
    return format_for_vocab(vocab_size)[2]


def _header_array(magic: int, version: int, num_tokens: int) -> np.ndarray:
    if num_tokens >= 2**31:
        raise ValueError(f"{num_tokens} tokens do not fit the int32 count of an llm.c header")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, num_tokens
    return header


def check_token_range(tokens: np.ndarray, vocab_size: int) -> None:
    """Raise ValueError unless every token is an integer in [0, vocab_size)."""
    if tokens.size == 0:
        return
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}), found range [{low}, {high}]")


class ShardWriter:
    """Stream tokens into one shard under a temporary name; :meth:`commit` fixes the header and publishes it.

    Lets a 100M-token shard be written chunk by chunk without holding it whole in memory. By default the
    temporary file sits beside ``path`` and is renamed into place; a subclass may write elsewhere (``tmp``,
    e.g. local scratch for a shard bound for an object store) and override :meth:`publish`.
    """

    def __init__(self, path: Path, vocab_size: int, tmp: Path | None = None) -> None:
        self.path = Path(path) if tmp is None else path
        self.vocab_size = vocab_size
        self.magic, self.version, self.dtype = format_for_vocab(vocab_size)
        self.num_tokens = 0
        if tmp is None:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._file.write(_header_array(self.magic, self.version, 0).tobytes())

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens)
        check_token_range(tokens, self.vocab_size)
        data = tokens.astype(np.dtype(self.dtype).newbyteorder("<"), copy=False).tobytes()
        self._file.write(data)
        self.num_tokens += tokens.size

    def commit(self) -> tuple[ShardHeader, str]:
        """Finish the shard; returns its header and the sha256 of the whole file."""
        header = _header_array(self.magic, self.version, self.num_tokens).tobytes()
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # The header (with the count) is known only now, so hash the finished file: one sequential read.
        digest = sha256_file(self.tmp)
        self.publish()
        return ShardHeader(self.magic, self.version, self.num_tokens), digest

    def publish(self) -> None:
        """Make the finished temporary file visible as ``path`` in one step."""
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


def write_shard(path: Path, tokens: np.ndarray, vocab_size: int) -> ShardHeader:
    """Write ``tokens`` as one llm.c shard at ``path`` atomically (temporary file + rename).

    uint16 with the GPT-2 magic/version when vocab_size < 65,536, else uint32 with llama-3's.
    Raises ValueError if a token is outside [0, vocab_size).
    """
    writer = ShardWriter(path, vocab_size)
    try:
        writer.write(np.asarray(tokens))
        header, _ = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return header


def read_header(path: Path) -> ShardHeader:
    """Read and validate a shard's header: known magic/version and file size == 1024 + itemsize x count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            data = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard: {e}") from e
    return parse_header(data, size, path)


def parse_header(data: bytes, size: int, where: object) -> ShardHeader:
    """Validate a shard's first bytes ``data`` and its file ``size`` (``where`` names it in errors)."""
    if size < HEADER_BYTES or len(data) < HEADER_BYTES:
        raise ShardError(f"{where}: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.frombuffer(data[:HEADER_BYTES], dtype="<i4", count=HEADER_INTS)
    magic, version, count = (int(x) for x in header[:3])
    if (magic, version) not in _FORMATS:
        raise ShardError(
            f"{where}: bad magic/version {magic}/{version}; expected {GPT2_MAGIC}/{GPT2_VERSION} (uint16) "
            f"or {LLAMA3_MAGIC}/{LLAMA3_VERSION} (uint32)"
        )
    if count < 0:
        raise ShardError(f"{where}: negative token count {count} in header")
    result = ShardHeader(magic, version, count)
    if size != result.nbytes:
        raise ShardError(
            f"{where}: file is {size} bytes but the header promises {count} {np.dtype(result.dtype).name} tokens "
            f"({result.nbytes} bytes); truncated or padded"
        )
    return result


def load_tokens(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only memmap past the header (dtype from the header)."""
    header = read_header(path)
    if header.num_tokens == 0:
        return np.zeros(0, dtype=header.dtype)
    return np.memmap(path, dtype=np.dtype(header.dtype).newbyteorder("<"), mode="r", offset=HEADER_BYTES)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def shard_name(index: int, val_shard: bool = True) -> str:
    """llm.c's fineweb.py naming: shard 0 is ``val_000000.bin`` (when a val shard is wanted), then train."""
    split = VAL_SPLIT if (index == 0 and val_shard) else TRAIN_SPLIT
    return f"{split}_{index:06d}.bin"


def split_of(name: str) -> str:
    return VAL_SPLIT if name.startswith(VAL_SPLIT + "_") else TRAIN_SPLIT


def write_manifest(shard_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(shard_dir) / MANIFEST_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a shard directory; ShardError if missing or malformed.

    ``shard_dir`` may also be a path object of another filesystem (e.g. a ``upath.UPath`` on an object store):
    only ``/`` and ``read_text`` are used.
    """
    path = (Path(shard_dir) if isinstance(shard_dir, str | os.PathLike) else shard_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest (is {shard_dir} a shard directory?)") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: unreadable manifest: {e}") from e
    for key in ("shards", "vocab_size", "eot_token"):
        if key not in manifest:
            raise ShardError(f"{path}: manifest lacks {key!r}")
    return manifest


def shard_paths(shard_dir: Path, split: str | None = None) -> list[Path]:
    """Shard files listed in the manifest (optionally one split), in order."""
    manifest = read_manifest(shard_dir)
    return [
        Path(shard_dir) / s["name"]
        for s in manifest["shards"]
        if split is None or s.get("split", split_of(s["name"])) == split
    ]


def scan_tokens(tokens: np.ndarray, eot_token: int) -> tuple[int, int, int]:
    """(min token, max token, number of end-of-text tokens), chunk by chunk so a memmap stays cheap."""
    low, high, eots = 2**63, -1, 0
    for start in range(0, tokens.size, _CHUNK):
        chunk = np.asarray(tokens[start : start + _CHUNK])
        low = min(low, int(chunk.min()))
        high = max(high, int(chunk.max()))
        eots += int(np.count_nonzero(chunk == eot_token))
    return (low if tokens.size else 0), high, eots


def verify_shard(
    path: Path, entry: dict[str, Any], vocab_size: int, eot_token: int, checksums: bool = True, first: bool = False
) -> list[str]:
    """Problems with one shard against its manifest entry (empty list = OK).

    ``first``: the shard opens the dataset, so it must start with end-of-text (documents are prefixed by it).
    """
    name = Path(path).name
    try:
        header = read_header(path)
    except ShardError as e:
        return [str(e)]
    problems: list[str] = []
    dtype_name = np.dtype(header.dtype).name
    expected_dtype = np.dtype(dtype_for_vocab(vocab_size)).name
    if dtype_name != expected_dtype:
        problems.append(f"{name}: dtype {dtype_name} but vocab_size {vocab_size} needs {expected_dtype}")
    if entry.get("dtype") not in (None, dtype_name):
        problems.append(f"{name}: manifest says dtype {entry['dtype']}, header says {dtype_name}")
    if entry.get("num_tokens") != header.num_tokens:
        problems.append(f"{name}: manifest says {entry.get('num_tokens')} tokens, header says {header.num_tokens}")
    if checksums and entry.get("sha256"):
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{name}: sha256 {actual[:16]}... does not match manifest {entry['sha256'][:16]}...")
    tokens = load_tokens(path)
    low, high, eots = scan_tokens(tokens, eot_token)
    if tokens.size and (low < 0 or high >= vocab_size):
        problems.append(f"{name}: token ids out of range [0, {vocab_size}): found [{low}, {high}]")
    if first and tokens.size and int(tokens[0]) != eot_token:
        problems.append(f"{name}: first shard does not start with the end-of-text token {eot_token}")
    if "num_documents" in entry and entry["num_documents"] != eots:
        problems.append(
            f"{name}: manifest says {entry['num_documents']} documents, shard has {eots} end-of-text tokens"
        )
    return problems


def verify_shards(shard_dir: Path, checksums: bool = True) -> list[str]:
    """Check every shard of a directory against ``manifest.json``: header, size, dtype, sha256, token range,
    token and document counts, totals, and stray shard files. Returns the problems found (empty = OK)."""
    shard_dir = Path(shard_dir)
    try:
        manifest = read_manifest(shard_dir)
    except ShardError as e:
        return [str(e)]
    vocab_size, eot_token = int(manifest["vocab_size"]), int(manifest["eot_token"])
    problems: list[str] = []
    listed = set()
    total_tokens = total_docs = 0
    for position, entry in enumerate(manifest["shards"]):
        name = entry.get("name", "")
        listed.add(name)
        path = shard_dir / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
            continue
        problems.extend(verify_shard(path, entry, vocab_size, eot_token, checksums=checksums, first=position == 0))
        total_tokens += int(entry.get("num_tokens", 0))
        total_docs += int(entry.get("num_documents", 0))
    for path in sorted(shard_dir.glob("*.bin")):
        if path.name not in listed:
            problems.append(f"{path.name}: shard file not listed in the manifest")
    totals = manifest.get("totals", {})
    if "num_tokens" in totals and totals["num_tokens"] != total_tokens:
        problems.append(f"manifest totals say {totals['num_tokens']} tokens, shards add up to {total_tokens}")
    if "num_documents" in totals and totals["num_documents"] != total_docs:
        problems.append(f"manifest totals say {totals['num_documents']} documents, shards add up to {total_docs}")
    return problems


def iter_documents(shard_dir: Path, split: str | None = None) -> Iterator[np.ndarray]:
    """Token ids of each document (without its end-of-text prefix), in order, across shard boundaries.

    Documents are prefixed by end-of-text, so tokens before a shard's first end-of-text continue the previous
    shard's last document. With ``split`` set, a leading continuation whose start lies in another split is
    skipped (its beginning is not there).
    """
    manifest = read_manifest(shard_dir)
    eot = int(manifest["eot_token"])
    carry: list[np.ndarray] | None = None
    for path in shard_paths(shard_dir, split):
        tokens = load_tokens(path)
        starts = np.flatnonzero(tokens == eot)
        head_end = int(starts[0]) if starts.size else tokens.size
        if carry is not None and head_end:
            carry.append(np.asarray(tokens[:head_end]))
        if starts.size:
            if carry is not None:
                yield np.concatenate(carry) if len(carry) > 1 else carry[0]
            bounds = [*starts.tolist(), tokens.size]
            for begin, end in zip(bounds[:-2], bounds[1:-1], strict=True):
                yield np.asarray(tokens[begin + 1 : end])
            carry = [np.asarray(tokens[bounds[-2] + 1 :])]
    if carry is not None:
        yield np.concatenate(carry) if len(carry) > 1 else carry[0]
