"""``refinery ablate``: the same small GPT trained on each run, compared on one reference set, by seeds.

The real-signal test trains on two runs of the real WARC samples: A with the default filters and dedup, B
with the quality filters and dedup off (navigation pages, listings and other junk kept), scored on the AEB
benchmark's human-annotated article text. A must win for every seed; B against a copy of itself must not.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from pipeline.app.cli import app  # noqa: E402
from tests.samples import ablation_runs  # noqa: E402
from validation.ablate import (  # noqa: E402
    AblationConfig,
    AblationError,
    EpochBatches,
    VocabMap,
    ablate,
    load_run,
    t_test_p,
)
from validation.validate import preset  # noqa: E402

runner = CliRunner()
TINY_CPU = ["--preset", "tiny", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A (default chain), run B (quality filters and dedup off) and a copy of B, tokenized with GPT-2."""
    base = tmp_path_factory.mktemp("ablate")
    runs = ablation_runs(realdata, base)
    runs["b-copy"] = Path(shutil.copytree(runs["b"], base / "out" / "b-copy"))
    return runs


@pytest.fixture(scope="module")
def reference(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean text the user trusts: the AEB benchmark's human-annotated article bodies (not in the WARCs)."""
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    texts = [truth[key]["articleBody"] for key in sorted(truth) if truth[key]["articleBody"].strip()]
    path = tmp_path_factory.mktemp("reference") / "aeb.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    return path


def invoke_ablate(*args: str) -> dict:
    result = runner.invoke(app, ["ablate", *args, "--reference-tokens", "40000", *TINY_CPU])
    assert result.exit_code == 0, result.output
    out = Path(result.output.split("report: ", 1)[1].strip())
    return {"output": result.output, "report": json.loads(out.read_text()), "dir": out.parent}


@pytest.fixture(scope="module")
def a_vs_b(runs: dict[str, Path], reference: Path) -> dict:
    return invoke_ablate(str(runs["a"]), str(runs["b"]), "--reference", str(reference), "--seeds", "5")


def test_filtered_run_wins_on_the_reference_for_every_seed(a_vs_b: dict) -> None:
    report = a_vs_b["report"]
    (verdict,) = report["pairs"]
    assert all(d > 0 for d in verdict["diffs_b_minus_a"]), verdict  # B's loss above A's for each seed
    assert verdict["verdict"] == "a" and verdict["p_value"] < 0.05
    assert "a better than b" in a_vs_b["output"] and "lower for 5 of 5 seeds" in a_vs_b["output"]
    assert len(report["models"]) == 10  # 2 runs x 5 seeds, the same budget and steps for each
    assert len({m["train_tokens"] for m in report["models"]}) == 1
    summary = {s["run"]: s for s in report["summary"]}
    assert summary["a"]["reference_loss_mean"] < summary["b"]["reference_loss_mean"]
    assert all(math.isfinite(m["val_loss"]) for m in report["models"])


def test_a_run_against_its_copy_is_no_clear_difference(runs: dict[str, Path], reference: Path) -> None:
    result = invoke_ablate(str(runs["b"]), str(runs["b-copy"]), "--reference", str(reference), "--seeds", "2",
                           "--tokens", "8192")  # fmt: skip
    (verdict,) = result["report"]["pairs"]
    assert verdict["verdict"] == "none", verdict
    assert "no clear difference between b and b-copy" in result["output"]


def test_page_pointers_and_the_comparison_link(a_vs_b: dict, runs: dict[str, Path]) -> None:
    assert a_vs_b["dir"] == runs["a"] / "ablations" / "a-vs-b"  # the default place
    page = (a_vs_b["dir"] / "index.html").read_text()
    assert "a better than b" in page and "<svg" in page and "paired two-sided t-test" in page
    for name in ("a", "b"):
        pointer = json.loads((runs[name] / "ablations" / "a-vs-b.json").read_text())
        assert pointer["page"] == str(a_vs_b["dir"] / "index.html")
    result = runner.invoke(app, ["report", str(runs["a"]), "--compare", str(runs["b"])])
    assert result.exit_code == 0, result.output
    compare = (runs["a"] / "report" / "compare-b.html").read_text()
    assert "Which trains better" in compare and "a better than b" in compare
    assert 'href="../ablations/a-vs-b/index.html"' in compare


def test_deterministic_on_cpu_for_a_fixed_seed(runs: dict[str, Path], reference: Path) -> None:
    config = AblationConfig(tokens=8192, seeds=(7,), train=preset("tiny", "cpu"), reference_tokens=20_000)
    args = [("a", runs["a"] / "tokens"), ("b", runs["b"] / "tokens")]
    first = ablate(args, reference_shards(runs, reference), config)
    second = ablate(args, reference_shards(runs, reference), config)
    for one, two in zip(first.models, second.models, strict=True):
        assert one["reference_loss"] == two["reference_loss"] and one["train_curve"] == two["train_curve"]
    assert first.pairs[0]["text"].startswith("no clear difference")  # one seed never decides


def reference_shards(runs: dict[str, Path], reference: Path) -> Path:
    """The reference tokenized once with the runs' tokenizer (as `refinery ablate` does), cached beside it."""
    from pipeline.app.ablate import read_reference_texts, tokenize_reference

    folder = reference.parent / "tokens"
    if not folder.is_dir():
        folder.mkdir()
        tokenize_reference(read_reference_texts(reference), "gpt2", folder)
    return folder


def test_a_budget_above_a_run_is_reported_not_silently_repeated(runs: dict[str, Path], reference: Path) -> None:
    a = load_run("a", runs["a"] / "tokens", 64)
    budget = a.window_tokens(64) * 2
    config = AblationConfig(tokens=budget, seeds=(0,), train=preset("tiny", "cpu"), reference_tokens=20_000)
    report = ablate([("a", runs["a"] / "tokens"), ("b", runs["b"] / "tokens")], reference_shards(runs, reference),
                    config)  # fmt: skip
    assert any(w.startswith("run a has") and "read 2.0" in w for w in report.warnings), report.warnings
    epochs = {m["run"]: m["epochs"] for m in report.models}
    assert epochs["a"] >= 2.0 and epochs["b"] < 1.0


def test_epoch_batches_read_every_window_once_per_epoch(runs: dict[str, Path]) -> None:
    import numpy as np
    import torch

    from tokenization.shards import load_tokens

    run = load_run("a", runs["a"] / "tokens", 64)
    batches = EpochBatches(run.train, 64, VocabMap(None, run.vocab_size), torch.device("cpu"), seed=3)
    every = sorted(
        tuple(np.asarray(tokens[start : start + 65]).tolist())
        for tokens in map(load_tokens, run.train)
        for start in range(0, tokens.size - 64, 64)
    )
    for _epoch in range(2):
        read = []
        for _ in range(len(every)):
            x, y = batches.next(1)
            read.append(tuple(x[0].tolist() + y[0, -1:].tolist()))
        assert sorted(read) == every


def test_t_test_p_values_match_the_t_table() -> None:
    # two-sided 5% critical values of Student's t: df 1 -> 12.706, 2 -> 4.303, 4 -> 2.776, 9 -> 2.262
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262)):
        n = df + 1
        diffs = [1.0 + (i - (n - 1) / 2) for i in range(n)]  # mean 1, then scaled to give the wanted t
        mean = sum(diffs) / n
        sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
        scale = t * sd / n**0.5 / mean
        assert t_test_p([mean * scale + (d - mean) for d in diffs]) == pytest.approx(0.05, abs=5e-4)
    assert t_test_p([0.0, 0.0, 0.0]) == 1.0 and t_test_p([0.3]) is None


# ------------------------------------------------------------------------------------------ bad input


def test_a_run_without_token_shards_is_one_clear_error(runs: dict[str, Path], reference: Path, tmp_path: Path) -> None:
    untokenized = tmp_path / "untokenized"
    (untokenized / "documents").mkdir(parents=True)
    result = runner.invoke(app, ["ablate", str(runs["a"]), str(untokenized), "--reference", str(reference),
                                 *TINY_CPU])  # fmt: skip
    assert result.exit_code == 2
    assert "no token shards" in result.output and "untokenized" in result.output
    assert "Traceback" not in result.output


def test_runs_of_different_tokenizers_are_one_clear_error(runs: dict[str, Path], reference: Path, tmp_path: Path):
    other = Path(shutil.copytree(runs["a"] / "tokens", tmp_path / "cl100k" / "tokens"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"] = {**manifest["tokenizer"], "name": "cl100k_base"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AblationError, match="tokenized differently"):
        ablate([("a", runs["a"] / "tokens"), ("cl100k", other)], reference_shards(runs, reference),
               AblationConfig(tokens=4096, seeds=(0,), train=preset("tiny", "cpu")))  # fmt: skip
    result = runner.invoke(app, ["ablate", str(runs["a"]), str(other.parent), "--reference", str(reference),
                                 *TINY_CPU])  # fmt: skip
    assert result.exit_code == 2 and "tokenized differently" in result.output


@pytest.mark.parametrize("rows", [[], ["", "   "]], ids=["no rows", "only empty text"])
def test_an_empty_reference_is_one_clear_error(runs: dict[str, Path], tmp_path: Path, rows: list[str]) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array(rows, type=pa.string())}), empty)
    result = runner.invoke(app, ["ablate", str(runs["a"]), str(runs["b"]), "--reference", str(empty), *TINY_CPU])
    assert result.exit_code == 2
    assert "empty" in result.output and "empty.parquet" in result.output


def test_one_run_is_not_an_ablation(runs: dict[str, Path], reference: Path) -> None:
    result = runner.invoke(app, ["ablate", str(runs["a"]), "--reference", str(reference), *TINY_CPU])
    assert result.exit_code == 2 and "at least two runs" in result.output


def test_compare_takes_the_pairs_newest_ablation_and_names_a_page_on_a_store(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    a, b = (Path(shutil.copytree(runs[n], tmp_path / n, ignore=shutil.ignore_patterns("ablations"))) for n in "ab")
    verdict = {"a": "a", "b": "b", "verdict": "a", "text": "a better than b (on the store)"}
    pointers = {
        "old": {"runs": [str(a), str(b)], "names": ["a", "b"], "page": "s3://x/old/index.html", "created": 1.0,
                "verdicts": [{**verdict, "text": "an older verdict"}]},
        "new": {"runs": [str(a), str(b)], "names": ["a", "b"], "page": "s3://x/new/index.html", "created": 2.0,
                "verdicts": [verdict]},
        "three": {"runs": [str(a), str(b), "/elsewhere/c"], "names": ["a", "b", "c"], "created": 3.0,
                  "page": "s3://x/three/index.html", "verdicts": [verdict]},
        "broken": ["not", "a", "pointer"],
    }  # fmt: skip
    (a / "ablations").mkdir()
    for name, pointer in pointers.items():
        (a / "ablations" / f"{name}.json").write_text(json.dumps(pointer))
    result = runner.invoke(app, ["report", str(a), "--compare", str(b)])
    assert result.exit_code == 0, result.output
    page = (a / "report" / "compare-b.html").read_text()
    assert "<code>s3://x/new/index.html</code>" in page and "a better than b (on the store)" in page
    assert "an older verdict" not in page
