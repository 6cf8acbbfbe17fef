"""The shard-validation training job: real text passes, shuffled tokens and broken shards fail, and the
hardware decisions (device, precision, compile, fused AdamW, MFU) are right on a CPU-only machine."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the validation job needs the [train] extra (torch)")

from tokenization.shards import (  # noqa: E402
    load_tokens,
    read_manifest,
    sha256_file,
    split_of,
    write_manifest,
    write_shard,
)
from validation import hardware, validate  # noqa: E402
from validation.checks import CheckOptions, check_shards  # noqa: E402
from validation.model import GPT, GPTConfig, count_params, flops_per_token  # noqa: E402

TINY = validate.preset("tiny", device="cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def real_texts(realdata: Path) -> list[str]:
    """English web text: the AEB benchmark's human-annotated article bodies and CCNet/dolma documents."""
    ground_truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    texts = [ground_truth[key]["articleBody"] for key in sorted(ground_truth)]
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f if line.strip())
    return [t for t in texts if t and t.strip()]


def write_shard_dir(
    out: Path, docs: list[np.ndarray], vocab_size: int, eot: int, tokenizer: str = "gpt2", train_shards: int = 2
) -> Path:
    """Shards as the tokenize pass lays them out: every 5th document in val_000000.bin, the rest in train shards,
    each document prefixed by end-of-text, plus manifest.json. Documents over 8,192 tokens go to train (one
    56k-token page of the AEB set would otherwise be most of the val shard)."""
    out.mkdir(parents=True, exist_ok=True)
    to_val = [i % 5 == 0 and len(d) <= 8192 for i, d in enumerate(docs)]
    val_docs = [d for d, v in zip(docs, to_val, strict=True) if v]
    train_docs = [d for d, v in zip(docs, to_val, strict=True) if not v]
    groups = [val_docs] + [train_docs[i::train_shards] for i in range(train_shards)]
    entries = []
    for index, group in enumerate(groups):
        name = f"{'val' if index == 0 else 'train'}_{index:06d}.bin"
        tokens = np.concatenate([np.concatenate([[eot], d]) for d in group]).astype(np.int64)
        header = write_shard(out / name, tokens, vocab_size)
        entries.append(
            {
                "name": name,
                "split": split_of(name),
                "num_tokens": header.num_tokens,
                "num_documents": len(group),
                "dtype": np.dtype(header.dtype).name,
                "sha256": sha256_file(out / name),
            }
        )
    write_manifest(
        out,
        {
            "format": "llm.c",
            "tokenizer": {"name": tokenizer},
            "vocab_size": vocab_size,
            "eot_token": eot,
            "shards": entries,
            "totals": {
                "num_tokens": sum(e["num_tokens"] for e in entries),
                "num_documents": sum(e["num_documents"] for e in entries),
            },
        },
    )
    return out


def rewrite_shards(shard_dir: Path, out: Path, transform) -> Path:  # noqa: ANN001 - np.ndarray -> np.ndarray
    """A copy of ``shard_dir`` with each shard's tokens passed through ``transform``; manifest updated to match."""
    manifest = read_manifest(shard_dir)
    out.mkdir(parents=True, exist_ok=True)
    for entry in manifest["shards"]:
        tokens = transform(np.array(load_tokens(shard_dir / entry["name"])))
        write_shard(out / entry["name"], tokens, manifest["vocab_size"])
        entry["sha256"] = sha256_file(out / entry["name"])
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def gpt2_shards(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real English text, GPT-2 tokenized (tiktoken r50k_base through tokenization.encoders)."""
    encoders = pytest.importorskip("tokenization.encoders")
    try:
        tokenizer = encoders.load_tokenizer("gpt2")
    except encoders.TokenizerAssetError as e:
        pytest.skip(f"GPT-2 rank file unavailable offline: {e}")
    docs = tokenizer.encode_arrays(real_texts(realdata))
    return write_shard_dir(tmp_path_factory.mktemp("real") / "tokens", docs, tokenizer.vocab_size, tokenizer.eot_token)


def shuffle_tokens(tokens: np.ndarray, seed: int = 7, eot: int = 50256) -> np.ndarray:
    """The shard's tokens in random order; an end-of-text token stays first where there was one, so the
    shard still passes the format checks and only training can tell."""
    shuffled = np.random.default_rng(seed).permutation(tokens)
    if tokens.size and tokens[0] == eot:
        first = int(np.flatnonzero(shuffled == eot)[0])
        shuffled[[0, first]] = shuffled[[first, 0]]
    return shuffled


@pytest.fixture(scope="module")
def shuffled_shards(gpt2_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shards with each shard's tokens permuted: same unigram distribution, no structure."""
    return rewrite_shards(gpt2_shards, tmp_path_factory.mktemp("shuffled") / "tokens", shuffle_tokens)


@pytest.fixture(scope="module")
def real_report(gpt2_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> validate.ValidationReport:
    return validate.validate_shards(gpt2_shards, TINY, tmp_path_factory.mktemp("real-out"))


def copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------ verdicts


def test_real_text_shards_pass(real_report: validate.ValidationReport) -> None:
    report = real_report
    assert report.verdict == "PASS", report.reasons
    assert report.checks["ok"] and report.checks["tokenizer"] == "gpt2"
    # below the floor of any order-blind model, and far below the same model reading shuffled val tokens
    assert report.val_loss < report.unigram_entropy
    assert report.val_loss_over_shuffled < TINY.order_margin
    # GPT-2 tokens of English web text: the full-vocabulary unigram entropy is 6-8 nats
    assert 6.0 < report.unigram_entropy_full_vocab < 8.0
    assert report.unigram_entropy < report.unigram_entropy_full_vocab  # capped vocabulary merges rare ids
    # it learned: the curves go down (a fresh model starts near ln(512) = 6.2 nats)
    assert report.train_curve[0][1] > 5.5
    assert report.train_curve[-1][1] < report.train_curve[0][1] - 2.0
    assert [step for step, _ in report.val_curve] == [100, 200, 300, 400, TINY.steps - 1]
    assert report.val_curve[0][1] > report.val_curve[-1][1]
    assert report.val_curve[-1][1] == report.val_loss
    assert report.tokens_per_second > 0 and report.train_tokens == TINY.steps * TINY.tokens_per_step
    assert report.mfu is None  # CPU: no known peak
    assert report.hardware["device"] == "cpu" and report.hardware["amp_dtype"] is None


def test_report_files_are_written(real_report: validate.ValidationReport) -> None:
    saved = json.loads(Path(real_report.files["report"]).read_text())
    assert saved["verdict"] == "PASS"
    assert saved["val_loss"] == pytest.approx(real_report.val_loss)
    assert saved["unigram_entropy"] == pytest.approx(real_report.unigram_entropy)
    assert saved["model"]["flops_per_token"] == flops_per_token(TINY.model_config(TINY.vocab_cap))
    assert [s["name"] for s in saved["checks"]["shards"]] == ["val_000000.bin", "train_000001.bin", "train_000002.bin"]
    png = Path(real_report.files["loss_curve"])
    assert png.name == "loss_curve.png" and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_shuffled_token_shards_fail(shuffled_shards: Path, real_report: validate.ValidationReport) -> None:
    report = validate.validate_shards(shuffled_shards, TINY)
    assert report.checks["ok"], report.checks["problems"]  # the format is fine: only training can tell
    assert report.verdict == "FAIL"
    # same tokens, same unigram distribution as the real shards
    assert report.unigram_entropy_full_vocab == pytest.approx(real_report.unigram_entropy_full_vocab)
    assert report.val_loss > report.unigram_entropy  # no model beats the unigram floor on shuffled tokens
    assert report.val_loss_over_shuffled == pytest.approx(1.0, abs=0.01)  # order carries nothing
    assert any("not below 1.0 x unigram entropy" in r for r in report.reasons)
    assert any("does not use the token order" in r for r in report.reasons)


def test_corrupted_header_fails_cleanly(gpt2_shards: Path, tmp_path: Path) -> None:
    shards = copy_shards(gpt2_shards, tmp_path / "tokens")
    with open(shards / "train_000001.bin", "r+b") as f:
        f.write(np.array([12345678], dtype="<i4").tobytes())  # magic
    report = validate.validate_shards(shards, TINY, tmp_path / "out")
    assert report.verdict == "FAIL"
    assert any("train_000001.bin" in r and "bad magic/version 12345678/1" in r for r in report.reasons)
    assert report.train_curve == [] and report.val_loss is None  # nothing trained
    saved = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert saved["verdict"] == "FAIL" and saved["checks"]["problems"]
    assert not (tmp_path / "out" / "loss_curve.png").exists()


def test_truncated_shard_fails_cleanly(gpt2_shards: Path, tmp_path: Path) -> None:
    shards = copy_shards(gpt2_shards, tmp_path / "tokens")
    path = shards / "val_000000.bin"
    path.write_bytes(path.read_bytes()[:-100])
    report = validate.validate_shards(shards, TINY)
    assert report.verdict == "FAIL"
    assert any("val_000000.bin" in r and "truncated" in r for r in report.reasons)


def test_token_id_beyond_vocab_fails(gpt2_shards: Path, tmp_path: Path) -> None:
    shards = copy_shards(gpt2_shards, tmp_path / "tokens")
    manifest = read_manifest(shards)
    tokens = np.array(load_tokens(shards / "train_000002.bin"))
    tokens[1234] = 50300  # a uint16 fits it, GPT-2's vocabulary (50,257) does not
    write_shard(shards / "train_000002.bin", tokens, 65535)
    manifest["shards"][2]["sha256"] = sha256_file(shards / "train_000002.bin")  # checksum right, content wrong
    write_manifest(shards, manifest)
    report = validate.validate_shards(shards, TINY)
    assert report.verdict == "FAIL"
    assert report.reasons == ["shard check: train_000002.bin: token ids out of range [0, 50257): found [0, 50300]"]


def test_document_count_mismatch_fails(gpt2_shards: Path, tmp_path: Path) -> None:
    shards = copy_shards(gpt2_shards, tmp_path / "tokens")
    manifest = read_manifest(shards)
    real_docs = manifest["shards"][0]["num_documents"]
    manifest["shards"][0]["num_documents"] = real_docs + 5
    manifest["totals"]["num_documents"] += 5
    write_manifest(shards, manifest)
    report = validate.validate_shards(shards, TINY)
    assert report.verdict == "FAIL"
    assert any(f"{real_docs + 5} documents" in r and f"{real_docs} end-of-text" in r for r in report.reasons)


def test_no_train_shard_fails_cleanly(gpt2_shards: Path, tmp_path: Path) -> None:
    shards = tmp_path / "tokens"
    shards.mkdir()
    manifest = read_manifest(gpt2_shards)
    shutil.copy(gpt2_shards / "val_000000.bin", shards)
    manifest["shards"] = manifest["shards"][:1]
    manifest["totals"] = {}
    write_manifest(shards, manifest)
    report = validate.validate_shards(shards, TINY)
    assert report.verdict == "FAIL"
    assert any("no train shard" in r for r in report.reasons)


def test_llmc_shards_without_manifest_are_checked(gpt2_shards: Path, tmp_path: Path) -> None:
    """llm.c's fineweb.py writes fineweb_val_000000.bin, fineweb_train_000001.bin, ... and no manifest."""
    shards = tmp_path / "fineweb"
    shards.mkdir()
    for path in sorted(gpt2_shards.glob("*.bin")):
        shutil.copy(path, shards / f"fineweb_{path.name}")
    check = check_shards(shards, CheckOptions(block_size=64))
    assert check.ok, check.problems
    assert [p.name for p in check.val] == ["fineweb_val_000000.bin"] and len(check.train) == 2
    assert (check.vocab_size, check.eot_token) == (50257, 50256)
    expected_docs = [e["num_documents"] for e in read_manifest(gpt2_shards)["shards"]]
    assert [s["num_documents"] for s in check.shards] == expected_docs  # end-of-text tokens counted
    assert any("no manifest.json" in note for note in check.notes)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_dry_run_prints_the_plan(gpt2_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = [str(gpt2_shards), "--dry-run", "--device", "cpu", "--preset", "gpt2-124m", "--peak-tflops", "989.4"]
    assert validate.main([*argv, "--output", str(out)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["device"] == "cpu"
    assert lines["autocast_dtype"] == "float32 (no autocast)"
    assert lines["torch_compile"] == "False" and lines["fused_adamw"] == "True"
    assert lines["padded_vocab"] == "50304"
    assert lines["params"] == "124475904"
    assert lines["flops_per_token"] == "803478528"
    assert lines["peak_tflops"] == "989.4" and lines["peak_source"] == "option --peak-tflops"
    assert float(lines["tokens_per_second_for_40pct_mfu"]) == pytest.approx(0.4 * 989.4e12 / 803478528)
    assert not out.exists()  # nothing trained, nothing written


def test_cli_fails_with_exit_status_1_on_bad_shards(
    gpt2_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shards = copy_shards(gpt2_shards, tmp_path / "tokens")
    (shards / "val_000000.bin").write_bytes(b"not a shard")
    assert validate.main([str(shards), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and "shorter than the 1024-byte header" in out
    assert (tmp_path / "validation" / "validation.json").is_file()  # default: next to the shard directory
    assert validate.main([str(shards), "--device", "cuda" if not torch.cuda.is_available() else "nope"]) == 2


def test_job_imports_no_pipeline_dependency() -> None:
    """A training node has torch and numpy, not the pipeline's stack."""
    code = (
        "import sys, validation.validate\n"
        "heavy = {'pipeline', 'pyarrow', 'tiktoken', 'typer', 'pydantic', 'datatrove', 'matplotlib', 'pandas'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ hardware and MFU


def test_device_selection_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hardware.select_device("auto").type == "cpu"
    plan = hardware.plan_hardware("auto")
    assert (plan.device, plan.amp_dtype, plan.compile, plan.tf32, plan.peak_tflops) == ("cpu", None, False, False, None)
    assert plan.fused_adamw  # torch >= 2.4 has a fused CPU AdamW
    with pytest.raises(ValueError, match="CUDA is not available"):
        hardware.select_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert hardware.select_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.select_device("auto").type == "cuda"
    assert validate.preset("auto").n_embd == 768  # gpt2-124m where CUDA is


def test_gpu_peak_table() -> None:
    cases = {
        "NVIDIA H100 80GB HBM3": ("H100 SXM", 989.4),
        "NVIDIA H100 PCIe": ("H100 PCIe", 756.0),
        "NVIDIA A100-SXM4-80GB": ("A100", 312.0),
        "NVIDIA A100-PCIE-40GB": ("A100", 312.0),
        "NVIDIA A10G": ("A10G", 70.0),
        "NVIDIA L4": ("L4", 121.0),
        "NVIDIA L40S": ("L40S", 362.1),
        "NVIDIA GeForce RTX 4090": ("RTX 4090", 165.2),
        "Tesla V100-SXM2-16GB": ("V100 (fp16)", 125.0),
    }
    for name, expected in cases.items():
        assert hardware.lookup_peak_tflops(name) == expected, name
    assert hardware.lookup_peak_tflops("Some Future Accelerator") is None


def test_gpt2_124m_flops_per_token_matches_llmc() -> None:
    """llm.c prints num_parameters 124475904 for GPT-2 124M (vocab padded to 50,304) and estimates
    6 N + 6 L C T FLOPs per token (gpt2_estimate_mfu)."""
    config = GPTConfig()  # GPT-2 124M
    assert config.padded_vocab == 50304
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == count_params(config) == 124_475_904
    llmc = 6 * 124_475_904 + 6 * 12 * 768 * 1024
    assert flops_per_token(config) == pytest.approx(llmc, rel=0.01)
    assert flops_per_token(config) == 803_478_528
    # 40% MFU on an H100 SXM means ~492k tokens/s for this model
    assert hardware.mfu(flops_per_token(config), 492_500, 989.4) == pytest.approx(0.40, abs=0.001)
    assert hardware.mfu(flops_per_token(config), 492_500, None) is None


def test_model_is_causal_and_tied() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.config.padded_vocab == 384
    idx = torch.randint(0, 300, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 300
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[0, :10], b[0, :10])  # the past does not see the future
    assert not torch.allclose(a[0, 10:], b[0, 10:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 autocast, torch.compile, MFU)")
def test_gpu_path_bf16_compile_mfu(gpt2_shards: Path, tmp_path: Path) -> None:
    config = replace(validate.preset("gpt2-124m", device="cuda"), steps=30, grad_accum=1, eval_every=30)
    report = validate.validate_shards(gpt2_shards, config, tmp_path)
    assert report.hardware["amp_dtype"] in ("bfloat16", "float16")
    assert report.hardware["compile"] and report.hardware["tf32"] and report.hardware["fused_adamw"]
    assert report.model["padded_vocab"] == 50304
    assert report.tokens_per_second > 0
    if report.hardware["peak_tflops"] is not None:
        assert 0.0 < report.mfu < 1.0
        print(f"{report.hardware['device_name']}: {report.tokens_per_second:,.0f} tokens/s, MFU {report.mfu:.1%}")
