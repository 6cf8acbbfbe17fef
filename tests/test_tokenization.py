"""Tokenization into llm.c shards, on real text: round trip, llm.c's own loader, corruption, determinism, resume."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.app.shards_cli import shards_app, without_option
from pipeline.core.parts import PartWriter, total_stats
from pipeline.core.stats import PartStats
from tokenization.encoders import (
    GPT2_SHA256,
    SPECS,
    TokenizerAssetError,
    TokenizerConfig,
    decode_sample,
    extract_whisper_asset,
    fetch_rank_file,
    load_ranks,
    load_tokenizer,
)
from tokenization.shards import (
    GPT2_MAGIC,
    LLAMA3_MAGIC,
    ShardError,
    iter_documents,
    load_tokens,
    read_header,
    read_manifest,
    verify_shards,
    write_manifest,
    write_shard,
)
from tokenization.tokenize_pass import TokenizeError, read_token_counts, run_tokenize

REPO = Path(__file__).resolve().parents[1]
LANGS = ("ja", "zh", "ru", "ar", "hi", "ko", "el", "de")
SHARD = 20_000  # tokens per shard: the corpus below (~230k GPT-2 tokens) makes a dozen shards


# ---------------------------------------------------------------- real text and the pass input


@pytest.fixture(scope="module")
def corpus(realdata: Path) -> list[tuple[str, str | None]]:
    """(id, text) of real documents: CC text, human-annotated article bodies, sentences in 8 scripts/languages,
    plus the awkward cases (empty, null, a literal end-of-text string, control characters)."""
    docs: list[tuple[str, str | None]] = []
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                docs.append((f"{path.name}:{i}", json.loads(line)["text"]))
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    docs += [(key, truth[key]["articleBody"]) for key in sorted(truth)]
    for lang in LANGS:
        lines = (realdata / "langid_lingua" / "sentences" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        docs.append((f"lingua-{lang}", "\n".join(lines[:40])))
    docs.insert(5, ("empty", ""))
    docs.insert(40, ("null", None))
    docs.insert(60, ("literal-eot", "before <|endoftext|> after <|fim_prefix|>"))
    docs.append(("controls", "tab\there\r\nnul\x00 and \u200b zero-width, emoji \U0001f600"))
    return docs


def _write_pass(root: Path, docs: list[tuple[str, str | None]], n_parts: int = 3) -> Path:
    """A finished pass (documents/ + stats/ + markers/), as the pipeline writes it."""
    size = -(-len(docs) // n_parts)
    for index in range(n_parts):
        chunk = docs[index * size : (index + 1) * size]
        name = f"part-{index:05d}"
        with PartWriter(root, name) as writer:
            writer.write(
                pa.table({"id": [d[0] for d in chunk], "text": pa.array([d[1] for d in chunk], pa.large_string())})
            )
            writer.commit(PartStats(part=name))
    return root


@pytest.fixture(scope="module")
def pass_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[tuple[str, str | None]]) -> Path:
    return _write_pass(tmp_path_factory.mktemp("pass"), corpus)


@pytest.fixture(scope="module")
def gpt2_shards(tmp_path_factory: pytest.TempPathFactory, pass_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("gpt2") / "tokens"
    run_tokenize(pass_dir, out, TokenizerConfig(shard_size_tokens=SHARD), workers=1)
    return out


def _expected_stream(corpus: list[tuple[str, str | None]], name: str) -> np.ndarray:
    """What the shards must hold, computed with tiktoken directly: [EOT] + tokens per non-empty document."""
    tok = load_tokenizer(name)
    pieces = []
    for _, text in corpus:
        if text:
            pieces += [tok.eot_token, *tok.encoding.encode_ordinary(text)]
    return np.array(pieces, dtype=np.int64)


def _llmc_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a shard the way llm.c's data_common.py / _load_data_shard do, with numpy only (no project code)."""
    with open(path, "rb") as f:
        header = np.fromfile(f, dtype=np.int32, count=256)
    assert header[0] in (20240520, 20240801), f"magic number mismatch in {path}"
    dtype = np.uint16 if header[0] == 20240520 else np.uint32
    assert header[1] == (1 if dtype is np.uint16 else 7), "unsupported version"
    count = int(header[2])
    assert os.path.getsize(path) == 1024 + np.dtype(dtype).itemsize * count  # llm.c's C loader checks this
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=1024)
    assert len(tokens) == count, "number of tokens read does not match header"
    return header, tokens


# ---------------------------------------------------------------- tokenizer assets


def test_gpt2_rank_file_is_tiktokens_r50k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fetch_rank_file("gpt2")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == GPT2_SHA256
    tok = load_tokenizer("gpt2")
    assert (tok.vocab_size, tok.eot_token, tok.encoding.n_vocab) == (50257, 50256, 50257)
    assert tok.encode_batch(["hello world", " The"]) == [[31373, 995], [383]]  # GPT-2's well-known ids
    # tiktoken's own r50k_base, fed the same file through its cache, must tokenize identically
    import tiktoken
    from tiktoken_ext import openai_public

    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    shutil.copy(path, cache / hashlib.sha1(SPECS["gpt2"].url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    theirs = tiktoken.Encoding(**openai_public.r50k_base())
    text = "Zürich's naïve café — 東京 2024!\n\n  indented <|endoftext|>"
    assert tok.encoding.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_rank_file_hash_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = fetch_rank_file("gpt2").read_bytes()
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(good.replace(b" 50255", b" 50254", 1))
    with pytest.raises(TokenizerAssetError, match="sha256"):
        load_ranks(bad, GPT2_SHA256)
    # a tampered file in our cache is ignored, and with no other source there is a clear error
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    (tmp_path / "cache" / "tokenizers").mkdir(parents=True)
    shutil.copy(bad, tmp_path / "cache" / "tokenizers" / "gpt2.tiktoken")
    with pytest.raises(TokenizerAssetError, match="no gpt2 rank file found offline"):
        fetch_rank_file("gpt2", network=False, index=False)


def test_whisper_sdist_asset_extraction(tmp_path: Path) -> None:
    """Only ``whisper/assets/gpt2.tiktoken`` is taken from the source tarball, whatever else it holds."""
    data = fetch_rank_file("gpt2").read_bytes()
    sdist = tmp_path / "openai_whisper-20250625.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, payload in (
            ("openai_whisper-20250625/whisper/assets/multilingual.tiktoken", b"not this one"),
            ("openai_whisper-20250625/whisper/assets/gpt2.tiktoken", data),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert extract_whisper_asset(sdist) == data
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(TokenizerAssetError, match="does not contain"):
        extract_whisper_asset(empty)
    (tmp_path / "broken.tar.gz").write_bytes(sdist.read_bytes()[:200])
    with pytest.raises(TokenizerAssetError):
        extract_whisper_asset(tmp_path / "broken.tar.gz")


def test_gpt2_fetch_from_package_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real offline path: pip download of the openai-whisper sdist, verified and cached."""
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    path = fetch_rank_file("gpt2", network=False)
    assert path == tmp_path / "tokenizers" / "gpt2.tiktoken"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == GPT2_SHA256


# ---------------------------------------------------------------- shard format


def test_write_shard_formats_and_range(tmp_path: Path) -> None:
    header = write_shard(tmp_path / "a.bin", np.array([50256, 0, 50255]), vocab_size=50257)
    assert (header.magic, header.version, header.num_tokens, header.dtype) == (GPT2_MAGIC, 1, 3, np.uint16)
    assert (tmp_path / "a.bin").stat().st_size == 1024 + 2 * 3
    header = write_shard(tmp_path / "b.bin", np.array([100257, 70000]), vocab_size=100277)
    assert (header.magic, header.version, header.dtype) == (LLAMA3_MAGIC, 7, np.uint32)
    assert load_tokens(tmp_path / "b.bin").tolist() == [100257, 70000]
    for bad in ([50257], [-1], [1 << 20]):
        with pytest.raises(ValueError, match="token ids must be in"):
            write_shard(tmp_path / "c.bin", np.array(bad), vocab_size=50257)
    assert not (tmp_path / "c.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_gpt2_shards_load_like_llmc_and_round_trip(gpt2_shards: Path, corpus: list[tuple[str, str | None]]) -> None:
    manifest = read_manifest(gpt2_shards)
    names = [s["name"] for s in manifest["shards"]]
    assert names[0] == "val_000000.bin"
    assert names[1:] == [f"train_{i:06d}.bin" for i in range(1, len(names))]
    assert len(names) >= 8
    streams = []
    for entry in manifest["shards"]:
        header, tokens = _llmc_load(gpt2_shards / entry["name"])
        assert (header[0], header[1], header[2]) == (20240520, 1, entry["num_tokens"])
        assert not header[3:].any()
        assert entry["dtype"] == "uint16" and entry["num_documents"] == int((tokens == 50256).sum())
        streams.append(np.asarray(tokens, dtype=np.int64))
    assert all(s.size == SHARD for s in streams[:-1]) and 0 < streams[-1].size <= SHARD
    np.testing.assert_array_equal(np.concatenate(streams), _expected_stream(corpus, "gpt2"))
    # some document crosses a shard boundary (a shard not starting with end-of-text)...
    assert any(s[0] != 50256 for s in streams[1:])
    # ...and still decodes, per document, to exactly its original text
    tok = load_tokenizer("gpt2")
    decoded = [tok.decode(doc.tolist()) for doc in iter_documents(gpt2_shards)]
    assert decoded == [text for _, text in corpus if text]
    assert "before <|endoftext|> after <|fim_prefix|>" in decoded  # literal special strings stay text
    # one split alone: train skips the tail of the document val ends in; val yields that document cut short
    val = [tok.decode(d.tolist()) for d in iter_documents(gpt2_shards, split="val")]
    train = [tok.decode(d.tolist()) for d in iter_documents(gpt2_shards, split="train")]
    assert len(val) + len(train) == len(decoded) and train == decoded[len(val) :]
    assert val[:-1] == decoded[: len(val) - 1] and decoded[len(val) - 1].startswith(val[-1])
    assert manifest["totals"]["num_documents"] == len(decoded) and manifest["totals"]["skipped_empty"] == 2
    assert manifest["tokenizer"] == {"name": "gpt2", "rank_file": "gpt2.tiktoken", "sha256": GPT2_SHA256}
    assert verify_shards(gpt2_shards) == []


def test_token_counts_per_document(gpt2_shards: Path, corpus: list[tuple[str, str | None]]) -> None:
    counts = read_token_counts(gpt2_shards)
    tok = load_tokenizer("gpt2")
    assert counts.column("id").to_pylist() == [doc_id for doc_id, _ in corpus]
    expected = [len(tok.encoding.encode_ordinary(text)) if text else 0 for _, text in corpus]
    assert counts.column("token_count").to_pylist() == expected
    totals = read_manifest(gpt2_shards)["totals"]
    assert totals["text_tokens"] == sum(expected) and totals["num_tokens"] == sum(expected) + totals["num_documents"]
    # the pass's funnel reads like any other pass's
    funnel = total_stats(gpt2_shards).stage("tokenize")
    assert (funnel.docs_in, funnel.docs_out) == (len(corpus), len(corpus) - 2)
    assert dict(funnel.drops) == {"tokenize:empty_text": 2}
    assert funnel.bytes_in == sum(len(text.encode()) for _, text in corpus if text)


def test_cl100k_uint32_shards(tmp_path: Path, pass_dir: Path, corpus: list[tuple[str, str | None]]) -> None:
    out = tmp_path / "tokens"
    run_tokenize(pass_dir, out, TokenizerConfig(name="cl100k_base", shard_size_tokens=50_000, val_shard_tokens=7_000))
    manifest = read_manifest(out)
    assert (manifest["vocab_size"], manifest["eot_token"], manifest["dtype"]) == (100277, 100257, "uint32")
    streams = []
    for entry in manifest["shards"]:
        header, tokens = _llmc_load(out / entry["name"])
        assert (header[0], header[1], tokens.dtype) == (20240801, 7, np.uint32)
        streams.append(np.asarray(tokens, dtype=np.int64))
    assert streams[0].size == 7_000 and all(s.size == 50_000 for s in streams[1:-1])
    stream = np.concatenate(streams)
    np.testing.assert_array_equal(stream, _expected_stream(corpus, "cl100k_base"))
    assert stream.max() >= 65_536  # the ids that need uint32 really occur
    assert decode_sample(out, 3) == [text for _, text in corpus if text][:3]
    assert verify_shards(out) == []


def test_naming_without_val_and_single_val_shard(tmp_path: Path, pass_dir: Path) -> None:
    run_tokenize(pass_dir, tmp_path / "noval", TokenizerConfig(shard_size_tokens=100_000, val_shard=False))
    assert [s["name"] for s in read_manifest(tmp_path / "noval")["shards"]] == [
        "train_000000.bin",
        "train_000001.bin",
        "train_000002.bin",
    ]
    run_tokenize(pass_dir, tmp_path / "big", TokenizerConfig())  # 100M default: all of it is the val shard (llm.c)
    manifest = read_manifest(tmp_path / "big")
    assert [s["split"] for s in manifest["shards"]] == ["val"]
    assert manifest["totals"]["train_tokens"] == 0 and manifest["totals"]["val_tokens"] > 200_000


# ---------------------------------------------------------------- corruption is caught


@pytest.fixture
def shard_copy(tmp_path: Path, gpt2_shards: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(gpt2_shards, out, ignore=shutil.ignore_patterns("parts", "token_counts", "markers"))
    return out


def _resign(shard_dir: Path, name: str) -> None:
    """Update the manifest's sha256 for a shard, so only the other checks can catch the change."""
    manifest = read_manifest(shard_dir)
    for entry in manifest["shards"]:
        if entry["name"] == name:
            entry["sha256"] = hashlib.sha256((shard_dir / name).read_bytes()).hexdigest()
    write_manifest(shard_dir, manifest)


def _poke(path: Path, token_index: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(1024 + 2 * token_index)
        f.write(np.array([value], dtype="<u2").tobytes())


def test_flipped_byte_fails_checksum(shard_copy: Path) -> None:
    path = shard_copy / "train_000003.bin"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x01
    path.write_bytes(bytes(data))
    problems = verify_shards(shard_copy)
    assert len(problems) == 1 and problems[0].startswith("train_000003.bin: sha256")
    assert verify_shards(shard_copy, checksums=False) == []


def test_out_of_range_token_and_document_count(shard_copy: Path) -> None:
    _poke(shard_copy / "train_000002.bin", 10, 65535)
    _resign(shard_copy, "train_000002.bin")
    assert verify_shards(shard_copy) == ["train_000002.bin: token ids out of range [0, 50257): found [0, 65535]"]
    tokens = load_tokens(shard_copy / "train_000004.bin")
    position = int(np.flatnonzero(tokens != 50256)[5])
    del tokens
    _poke(shard_copy / "train_000004.bin", position, 50256)  # a spurious document boundary
    _resign(shard_copy, "train_000004.bin")
    problems = verify_shards(shard_copy)
    assert any("train_000004.bin: manifest says" in p and "end-of-text tokens" in p for p in problems)


def test_truncated_and_wrong_magic(shard_copy: Path) -> None:
    path = shard_copy / "train_000001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ShardError, match="truncated or padded"):
        read_header(path)
    other = shard_copy / "val_000000.bin"
    data = bytearray(other.read_bytes())
    data[0:4] = np.array([20240521], dtype="<i4").tobytes()
    other.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="bad magic"):
        load_tokens(other)
    (shard_copy / "train_000005.bin").write_bytes(b"\x00" * 100)
    problems = verify_shards(shard_copy)
    assert any(p.startswith(str(path)) and "truncated" in p for p in problems)
    assert any("bad magic/version 20240521/1" in p for p in problems)
    assert any("shorter than the 1024-byte header" in p for p in problems)
    (shard_copy / "train_000006.bin").unlink()
    (shard_copy / "train_000099.bin").write_bytes(b"")
    problems = verify_shards(shard_copy)
    assert "train_000006.bin: listed in the manifest but missing" in problems
    assert "train_000099.bin: shard file not listed in the manifest" in problems


def test_cli_inspect(gpt2_shards: Path, shard_copy: Path, corpus: list[tuple[str, str | None]]) -> None:
    runner = CliRunner()
    result = runner.invoke(shards_app, ["inspect", str(gpt2_shards), "--sample", "2", "--chars", "60"])
    assert result.exit_code == 0, result.output
    assert "verified: headers, sizes, token range, counts, sha256 OK" in result.output
    assert "val_000000.bin       val     20240520    1 uint16" in result.output
    first = " ".join(next(text for _, text in corpus if text).split())[:60]
    assert first in result.output
    result = runner.invoke(shards_app, ["inspect", str(gpt2_shards / "val_000000.bin")])
    assert result.exit_code == 0 and f"{SHARD:,} tokens" in result.output
    _poke(shard_copy / "train_000002.bin", 0, 60000)
    result = runner.invoke(shards_app, ["inspect", str(shard_copy)])
    assert result.exit_code == 1
    assert "train_000002.bin: token ids out of range" in result.output and "sha256" in result.output


# ---------------------------------------------------------------- determinism and resume


def _shard_bytes(shard_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(shard_dir.glob("*.bin"))}


def test_same_bytes_with_two_workers(tmp_path: Path, pass_dir: Path, gpt2_shards: Path) -> None:
    out = tmp_path / "tokens"
    result = run_tokenize(pass_dir, out, TokenizerConfig(shard_size_tokens=SHARD, batch_size=7, threads=2), workers=2)
    assert result["parts_tokenized"] == 3
    assert _shard_bytes(out) == _shard_bytes(gpt2_shards)
    assert read_manifest(out)["shards"] == read_manifest(gpt2_shards)["shards"]
    again = run_tokenize(pass_dir, out, TokenizerConfig(shard_size_tokens=SHARD), workers=2)  # nothing left to do
    assert (again["parts_tokenized"], again["parts_reused"]) == (0, 3)


_CRASH = """
import os, sys
from pathlib import Path
import tokenization.manifest as manifest
import tokenization.tokenize_pass as tp
from tokenization.encoders import TokenizerConfig

where, calls = sys.argv[3], [0]
if where == "tokenize":  # die inside the second part, after its token file was partly written
    original = tp._encode_batch
    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 12:
            os._exit(9)
        return original(*args, **kwargs)
    tp._encode_batch = dying
else:  # die during assembly, after a few shards were written
    original = manifest.ShardWriter.commit
    def dying(self):
        calls[0] += 1
        if calls[0] == 6:  # the class is shared: 3 part files, 2 shards, then die
            os._exit(9)
        return original(self)
    manifest.ShardWriter.commit = dying
tp.run_tokenize(Path(sys.argv[1]), Path(sys.argv[2]), TokenizerConfig(shard_size_tokens=int(sys.argv[4]), batch_size=5))
"""


@pytest.mark.parametrize("where", ["tokenize", "assemble"])
def test_resume_after_crash(tmp_path: Path, pass_dir: Path, gpt2_shards: Path, where: str) -> None:
    out = tmp_path / "tokens"
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(pass_dir), str(out), where, str(SHARD)], cwd=REPO, timeout=120
    )
    assert proc.returncode == 9
    assert not (out / "manifest.json").exists()
    done = sorted(p.name for p in (out / "markers").glob("*.done"))
    assert done == (
        ["part-00000.done"] if where == "tokenize" else ["part-00000.done", "part-00001.done", "part-00002.done"]
    )
    result = run_tokenize(pass_dir, out, TokenizerConfig(shard_size_tokens=SHARD))
    assert result["parts_reused"] == len(done) and result["parts_tokenized"] == 3 - len(done)
    assert _shard_bytes(out) == _shard_bytes(gpt2_shards)
    assert [p.name for p in out.rglob(".*")] == []  # no temporary files left
    assert verify_shards(out) == []


def test_changed_input_part_is_redone(tmp_path: Path, corpus: list[tuple[str, str | None]]) -> None:
    src = _write_pass(tmp_path / "pass", corpus[:40], n_parts=2)
    out = tmp_path / "tokens"
    first = run_tokenize(src, out, TokenizerConfig(shard_size_tokens=SHARD))
    shard_mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    assert run_tokenize(src, out, TokenizerConfig(shard_size_tokens=SHARD))["parts_reused"] == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")} == shard_mtimes  # assembly skipped too
    # the upstream pass rewrites part 1 with fewer documents: only it is tokenized again, and the shards follow
    path = src / "documents" / "part-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 5), path)
    second = run_tokenize(src, out, TokenizerConfig(shard_size_tokens=SHARD))
    assert (second["parts_tokenized"], second["parts_reused"]) == (1, 1)
    kept = table.slice(0, 5).to_pylist()
    part0_docs = first["manifest"]["source"]["parts"][0]["num_documents"]
    assert second["num_documents"] == part0_docs + sum(1 for row in kept if row["text"])
    assert verify_shards(out) == []
    assert len(read_token_counts(out)) == 20 + 5


def test_unreadable_part_fails_clearly_and_keeps_the_rest(tmp_path: Path, corpus: list[tuple[str, str | None]]) -> None:
    src = _write_pass(tmp_path / "pass", corpus[:60], n_parts=3)
    path = src / "documents" / "part-00001.parquet"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    out = tmp_path / "tokens"
    with pytest.raises(TokenizeError, match=r"1 of 3 parts failed.*part-00001"):
        run_tokenize(src, out, TokenizerConfig(shard_size_tokens=SHARD), workers=2)
    assert sorted(p.name for p in (out / "markers").iterdir()) == ["part-00000.done", "part-00002.done"]
    assert not (out / "manifest.json").exists()
    path.write_bytes(good)
    result = run_tokenize(src, out, TokenizerConfig(shard_size_tokens=SHARD), workers=2)
    assert (result["parts_tokenized"], result["parts_reused"]) == (1, 2)
    assert result["num_documents"] == sum(1 for _, text in corpus[:60] if text)
    with pytest.raises(TokenizeError, match="no finished parts"):
        run_tokenize(tmp_path / "nothing", tmp_path / "t2", TokenizerConfig())


def test_without_option_takes_the_option_off_in_every_form_argparse_accepts() -> None:
    names = ("--config", "-c")
    for given in (["--config", "r.yaml"], ["--config=r.yaml"], ["--conf", "r.yaml"], ["-c", "r.yaml"],
                  ["-cr.yaml"], ["-c=r.yaml"]):  # fmt: skip
        assert without_option(["s3://b/tokens", *given, "--steps", "10", "-v"], names) == [
            "s3://b/tokens", "--steps", "10", "-v",
        ], given  # fmt: skip
    assert without_option(["--compile", "--", "-c"], names) == ["--compile", "--", "-c"]
