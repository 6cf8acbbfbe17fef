"""Token shards on an object store (a real SeaweedFS S3 server): the tokenize pass, ``shards build`` and
``validate-shards`` with ``s3://`` folders give what they give on local disk, resume after a kill, and fail
with one clear line (exit 2) when the folder is not there."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipeline.app.shards_cli import shards_app
from pipeline.core.parts import PartWriter
from pipeline.core.stats import PartStats
from tests.objectstore import SECRET_KEY, SeaweedServer, client_env
from tokenization.encoders import TokenizerConfig
from tokenization.shards import read_manifest
from tokenization.tokenize_pass import read_token_counts, run_tokenize

REPO = Path(__file__).resolve().parents[1]
SHARD = 8_000  # tokens per shard: the documents below (~70k GPT-2 tokens) make about nine shards


@pytest.fixture(scope="module")
def documents(realdata: Path) -> list[tuple[str, str | None]]:
    """(id, text) of real Common Crawl text, plus an empty and a null text."""
    docs: list[tuple[str, str | None]] = []
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [(f"{path.name}:{i}", json.loads(line)["text"]) for i, line in enumerate(f)]
    docs.insert(3, ("empty", ""))
    docs.insert(17, ("null", None))
    return docs


def write_pass(root: Path | str, docs: list[tuple[str, str | None]], n_parts: int = 3) -> str:
    """A finished pass (documents/ + stats/ + markers/) at a local path or a store URL, as the pipeline writes it."""
    size = -(-len(docs) // n_parts)
    for index in range(n_parts):
        chunk = docs[index * size : (index + 1) * size]
        name = f"part-{index:05d}"
        with PartWriter(root, name) as writer:
            writer.write(
                pa.table({"id": [d[0] for d in chunk], "text": pa.array([d[1] for d in chunk], pa.large_string())})
            )
            writer.commit(PartStats(part=name))
    return str(root)


@pytest.fixture(scope="module")
def local_tokens(tmp_path_factory: pytest.TempPathFactory, documents: list[tuple[str, str | None]]) -> Path:
    """The reference: the same documents tokenized on local disk."""
    source = write_pass(tmp_path_factory.mktemp("pass"), documents)
    out = tmp_path_factory.mktemp("local") / "tokens"
    run_tokenize(Path(source), out, TokenizerConfig(shard_size_tokens=SHARD), workers=1)
    return out


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's local scratch folder ($REFINERY_SCRATCH): temporary files must not outlive their upload."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setenv("REFINERY_SCRATCH", str(path))
    return path


def store_files(server: SeaweedServer, url: str) -> dict[str, bytes]:
    """Every object under ``url`` (relative name -> bytes)."""
    fs = server.filesystem()
    prefix = url.removeprefix("s3://").rstrip("/")
    return {key[len(prefix) + 1 :]: fs.cat_file(key) for key in fs.find(prefix)}


def shard_bytes(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name.endswith(".bin") and "/" not in name}


# ------------------------------------------------------------------------------------------ tokenize pass


def test_tokenize_on_the_store_is_byte_identical_to_local(
    bucket: str, s3_env: SeaweedServer, scratch: Path, local_tokens: Path, documents: list[tuple[str, str | None]]
) -> None:
    source = write_pass(f"{bucket}/pass", documents)
    out = f"{bucket}/pass/tokens"
    result = run_tokenize(source, out, TokenizerConfig(shard_size_tokens=SHARD, batch_size=7), workers=2)
    assert (result["parts_tokenized"], result["parts_reused"]) == (3, 0)

    files = store_files(s3_env, out)
    local = {p.name: p.read_bytes() for p in local_tokens.glob("*.bin")}
    assert len(local) >= 5 and shard_bytes(files) == local
    manifest = json.loads(files["manifest.json"])
    assert manifest["shards"] == read_manifest(local_tokens)["shards"]  # names, counts, sha256
    assert manifest["totals"] == read_manifest(local_tokens)["totals"]
    assert manifest["source"]["input"] == source and SECRET_KEY not in files["manifest.json"].decode()
    assert sorted(n for n in files if n.startswith("markers/")) == [f"markers/part-0000{i}.done" for i in range(3)]
    assert read_token_counts(out).equals(read_token_counts(local_tokens))
    assert list(scratch.iterdir()) == []  # every temporary file was uploaded and removed

    again = run_tokenize(source, out, TokenizerConfig(shard_size_tokens=SHARD), workers=2)
    assert (again["parts_tokenized"], again["parts_reused"]) == (0, 3)
    assert store_files(s3_env, out) == files  # shards current: nothing rewritten, nothing removed


_CRASH = """
import os, sys
import tokenization.manifest as manifest
import tokenization.tokenize_pass as tp
from tokenization.encoders import TokenizerConfig

where, calls = sys.argv[3], [0]
if where == "tokenize":  # die inside the second part, while its token file is being written
    original = tp._encode_batch
    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # parts of 11 documents, batches of 5: the second batch of part 1
            os._exit(9)
        return original(*args, **kwargs)
    tp._encode_batch = dying
else:  # die during assembly, after the 3 part files and 2 shards were uploaded
    original = manifest.ShardWriter.commit
    def dying(self):
        calls[0] += 1
        if calls[0] == 6:
            os._exit(9)
        return original(self)
    manifest.ShardWriter.commit = dying
tp.run_tokenize(sys.argv[1], sys.argv[2], TokenizerConfig(shard_size_tokens=int(sys.argv[4]), batch_size=5))
"""


@pytest.mark.parametrize("where", ["tokenize", "assemble"])
def test_rerun_after_a_kill_on_the_store(
    bucket: str,
    s3_env: SeaweedServer,
    tmp_path: Path,
    local_tokens: Path,
    documents: list[tuple[str, str | None]],
    where: str,
) -> None:
    source = write_pass(f"{bucket}/pass", documents)
    out = f"{bucket}/tokens"
    scratch = tmp_path / "scratch"
    env = client_env(s3_env, REFINERY_SCRATCH=str(scratch), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, source, out, where, str(SHARD)], cwd=REPO, env=env, timeout=180
    )
    assert proc.returncode == 9
    files = store_files(s3_env, out)
    assert "manifest.json" not in files  # no manifest until every shard is complete
    done = sorted(n for n in files if n.startswith("markers/"))
    assert done == [f"markers/part-0000{i}.done" for i in range(1 if where == "tokenize" else 3)]
    if where == "assemble":
        assert len(shard_bytes(files)) == 2  # the shards uploaded before the kill, each complete

    result = run_tokenize(source, out, TokenizerConfig(shard_size_tokens=SHARD))
    assert result["parts_reused"] == len(done) and result["parts_tokenized"] == 3 - len(done)
    files = store_files(s3_env, out)
    assert shard_bytes(files) == {p.name: p.read_bytes() for p in local_tokens.glob("*.bin")}
    assert json.loads(files["manifest.json"])["shards"] == read_manifest(local_tokens)["shards"]
    assert not [name for name in files if "/." in f"/{name}" or name.endswith(".tmp")]  # no temporary objects


# ------------------------------------------------------------------------------------------------- CLI


def test_shards_build_cli_to_the_store(
    bucket: str, s3_env: SeaweedServer, local_tokens: Path, documents: list[tuple[str, str | None]]
) -> None:
    source = write_pass(f"{bucket}/run", documents)
    runner = CliRunner()
    result = runner.invoke(shards_app, ["build", source, "--shard-size", str(SHARD), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = f"{source}/tokens"
    assert f"in {out} " in result.output and SECRET_KEY not in result.output
    files = store_files(s3_env, out)
    assert shard_bytes(files) == {p.name: p.read_bytes() for p in local_tokens.glob("*.bin")}
    result = runner.invoke(shards_app, ["inspect", out, "--sample", "1", "--chars", "40"])
    assert result.exit_code == 0, result.output
    assert "verified: headers, sizes, token range, counts, sha256 OK" in result.output
    result = runner.invoke(shards_app, ["inspect", f"{out}/val_000000.bin"])
    assert result.exit_code == 0 and result.output.startswith(
        f"val_000000.bin: magic 20240520, version 1, uint16, {SHARD:,}"
    )

    other = f"{bucket}/elsewhere/tokens"
    result = runner.invoke(shards_app, ["build", source, "-o", other, "--shard-size", str(SHARD), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert shard_bytes(store_files(s3_env, other)) == shard_bytes(files)


def test_shards_build_reaches_the_store_with_the_run_configs_storage_options(
    bucket: str, s3_env: SeaweedServer, local_tokens: Path, documents: list[tuple[str, str | None]], tmp_path: Path
) -> None:
    """No AWS variables and no ~/.aws in the command's environment: ``--config`` brings the endpoint and keys."""
    import os

    import yaml

    from tests.objectstore import ACCESS_KEY

    source = write_pass(f"{bucket}/run-by-config", documents)
    config = tmp_path / "run.yaml"
    options = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": s3_env.endpoint}}
    config.write_text(yaml.safe_dump({"storage_options": options}))
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    command = [sys.executable, "-m", "pipeline.app.cli", "shards", "build", source, "--shard-size", str(SHARD),
               "--no-progress", "--config", str(config)]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET_KEY not in proc.stdout + proc.stderr
    assert shard_bytes(store_files(s3_env, f"{source}/tokens")) == {
        p.name: p.read_bytes() for p in local_tokens.glob("*.bin")
    }
    proc = subprocess.run(command[:-2], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no credentials


def test_shards_build_cli_errors_are_one_line_exit_2(bucket: str, s3_env: SeaweedServer, tmp_path: Path) -> None:
    env = client_env(s3_env)
    missing = f"{bucket}/no-such-run"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "shards", "build", missing, "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {missing}: not found"]
    no_bucket = "s3://no-such-bucket-4f1c/run"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.app.cli", "shards", "build", str(tmp_path), "-o", f"{no_bucket}/tokens"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-bucket-4f1c" in lines[0] and "bucket does not exist" in lines[0]
    assert SECRET_KEY not in proc.stderr


# ------------------------------------------------------------------------------------------ validation


def upload_shards(server: SeaweedServer, local: Path, url: str) -> str:
    """A local shard folder's manifest.json and *.bin copied to ``url``."""
    fs = server.filesystem()
    for path in sorted(local.iterdir()):
        if path.name == "manifest.json" or path.suffix == ".bin":
            fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.name}")
    return url


def test_validate_shards_on_the_store_writes_its_verdict_there(
    bucket: str, s3_env: SeaweedServer, scratch: Path, local_tokens: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch", reason="the validation job needs the [train] extra (torch)")
    from pipeline.app.shards_cli import validate_shards_main

    tokens = upload_shards(s3_env, local_tokens, f"{bucket}/run/tokens")
    argv = [tokens, "--preset", "tiny", "--device", "cpu", "--steps", "30", "--eval-every", "10"]
    code = validate_shards_main(argv)
    out = capsys.readouterr().out
    files = store_files(s3_env, f"{bucket}/run/validation")  # default: the shard folder's sibling validation/
    assert sorted(files) == ["loss_curve.png", "validation.json"]
    report = json.loads(files["validation.json"])
    assert code == (0 if report["verdict"] == "PASS" else 1) and report["verdict"] in ("PASS", "FAIL")
    assert report["checks"]["ok"] and report["train_curve"][-1][0] == 29  # checked and trained on the local copy
    assert report["shard_dir"] == tokens
    assert report["files"] == {
        "loss_curve": f"{bucket}/run/validation/loss_curve.png",
        "report": f"{bucket}/run/validation/validation.json",
    }
    assert files["loss_curve.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        out.startswith(f"{report['verdict']}: {tokens}\n") and f"report {bucket}/run/validation/validation.json" in out
    )
    assert str(scratch) not in out and SECRET_KEY not in json.dumps(report)
    assert list(scratch.iterdir()) == []  # the downloaded shards and the job's folder are gone


def test_validate_shards_reaches_the_store_with_the_run_configs_storage_options(
    bucket: str, s3_env: SeaweedServer, local_tokens: Path, tmp_path: Path
) -> None:
    """``refinery validate-shards s3://... --config run.yaml`` with no AWS variables and no ~/.aws."""
    pytest.importorskip("torch", reason="the validation job needs the [train] extra (torch)")
    import os

    import yaml

    from tests.objectstore import ACCESS_KEY

    tokens = upload_shards(s3_env, local_tokens, f"{bucket}/by-config/tokens")
    config = tmp_path / "run.yaml"
    options = {"s3": {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": s3_env.endpoint}}
    config.write_text(yaml.safe_dump({"storage_options": options}))
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1",
               REFINERY_SCRATCH=str(tmp_path / "scratch"))  # fmt: skip
    command = [sys.executable, "-m", "pipeline.app.cli", "validate-shards", tokens, "--config", str(config),
               "--preset", "tiny", "--device", "cpu", "--steps", "10", "--eval-every", "5"]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # PASS or FAIL: trained and judged (10 steps)
    assert f"report {bucket}/by-config/validation/validation.json" in proc.stdout, proc.stdout
    assert SECRET_KEY not in proc.stdout + proc.stderr
    assert sorted(store_files(s3_env, f"{bucket}/by-config/validation")) == ["loss_curve.png", "validation.json"]
    missing = command[:6] + [str(tmp_path / "missing.yaml")] + command[7:]
    proc = subprocess.run(missing, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "missing.yaml" in proc.stderr


def test_validation_pass_on_the_store_reports_bad_shards(
    bucket: str, s3_env: SeaweedServer, scratch: Path, local_tokens: Path
) -> None:
    """The run's validation pass (a subprocess on local copies) with a shard corrupted on the store: FAIL, and
    the verdict is in the run's validation/ folder on the store."""
    pytest.importorskip("torch", reason="the validation job needs the [train] extra (torch)")
    from pipeline.app.passes import validate_shards_subprocess

    tokens = upload_shards(s3_env, local_tokens, f"{bucket}/run/tokens")
    fs = s3_env.filesystem()
    key = f"{tokens.removeprefix('s3://')}/train_000001.bin"
    data = bytearray(fs.cat_file(key))
    data[2000] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    assert validate_shards_subprocess(tokens, f"{bucket}/run/validation", "tiny") is False
    files = store_files(s3_env, f"{bucket}/run/validation")
    assert sorted(files) == ["validation.json"]  # nothing trained: no curve
    report = json.loads(files["validation.json"])
    assert report["verdict"] == "FAIL" and report["shard_dir"] == tokens
    assert any("train_000001.bin: sha256" in reason for reason in report["reasons"])
    assert list(scratch.iterdir()) == []


def test_validate_shards_missing_folder_on_the_store_is_one_line_exit_2(
    bucket: str, s3_env: SeaweedServer, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch", reason="the validation job needs the [train] extra (torch)")
    from pipeline.app.shards_cli import validate_shards_main

    missing = f"{bucket}/run/tokens"
    assert validate_shards_main([missing, "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {missing}: not found"]
    s3_env.filesystem().pipe_file(f"{missing.removeprefix('s3://')}/notes.txt", b"not shards")
    assert validate_shards_main([missing, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no manifest.json and no *.bin shards there: not a shard folder"]
    assert validate_shards_main(["s3://no-such-bucket-4f1c/tokens", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-bucket-4f1c" in err[0]


def test_ablate_reads_runs_and_reference_from_the_store_and_writes_there(
    bucket: str, s3_env: SeaweedServer, scratch: Path, local_tokens: Path, documents: list[tuple[str, str | None]]
) -> None:
    pytest.importorskip("torch", reason="the ablation job needs the [train] extra (torch)")
    import pyarrow.parquet as pq

    from pipeline.app.cli import app

    run_a = upload_shards(s3_env, local_tokens, f"{bucket}/runs/a/tokens").removesuffix("/tokens")
    run_b = upload_shards(s3_env, local_tokens, f"{bucket}/runs/b/tokens").removesuffix("/tokens")
    reference = scratch.parent / "reference.parquet"
    pq.write_table(pa.table({"text": [text for _, text in documents if text][:20]}), reference)
    s3_env.filesystem().put_file(str(reference), f"{bucket.removeprefix('s3://')}/heldout/reference.parquet")
    result = CliRunner().invoke(
        app,
        ["ablate", run_a, run_b, "--reference", f"{bucket}/heldout/reference.parquet", "--tokens", "4096",
         "--seeds", "2", "--reference-tokens", "4096", "--preset", "tiny", "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no clear difference between a and b" in result.output  # the same shards twice
    out = f"{run_a}/ablations/a-vs-b"
    files = store_files(s3_env, out)
    assert sorted(files) == ["ablation.json", "index.html"]
    report = json.loads(files["ablation.json"])
    assert [r["shard_dir"] for r in report["runs"]] == [f"{run_a}/tokens", f"{run_b}/tokens"]
    assert report["reference"]["path"] == f"{bucket}/heldout/reference.parquet"
    assert report["files"] == {"page": f"{out}/index.html", "report": f"{out}/ablation.json"}
    for run in (run_a, run_b):  # the pointer `report --compare` looks for
        pointer = json.loads(store_files(s3_env, f"{run}/ablations")["a-vs-b.json"])
        assert pointer["runs"] == [run_a, run_b] and pointer["page"] == f"{out}/index.html"
    assert str(scratch) not in result.output + files["index.html"].decode()
    assert SECRET_KEY not in json.dumps(report) and list(scratch.iterdir()) == []  # scratch copies removed
