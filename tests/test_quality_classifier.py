"""The quality classifier: trained on real data (AEB article bodies vs the navigation and link text of the same
pages), it separates held-out documents; scores are deterministic; the stage writes quality_score, drops below
the threshold, and refuses a bad model with one clear line (CLI exit 2)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from filters.classifier_train import TrainSettings, read_documents, roc_auc, train_classifier
from filters.config import QualityClassifierConfig
from filters.quality_classifier import (
    ClassifierModelError,
    QualityClassifierStage,
    load_classifier,
    model_file,
    normalise,
)
from pipeline.app.cli import app
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats

SMALL = TrainSettings(bucket=100_000, holdout=0.2)
"""DCLM's recipe with fewer hash buckets: a 40 MB model instead of 800 MB."""


def boilerplate(html: bytes) -> str:
    """A page's navigation, footer and link text outside paragraphs, one line each: what extraction should drop."""
    from lxml import html as lxml_html

    doc = lxml_html.document_fromstring(html.decode("utf-8", "replace"))
    found = doc.xpath("//nav|//footer|//a[not(ancestor::p) and not(ancestor::article)]")
    lines = (" ".join(el.text_content().split()) for el in found)
    return "\n".join(dict.fromkeys(line for line in lines if line))


@pytest.fixture(scope="module")
def corpus(realdata: Path) -> tuple[list[str], list[str]]:
    aeb = realdata / "extraction_aeb"
    truth = json.loads((aeb / "ground-truth.json").read_text())
    positives = [v["articleBody"] for _, v in sorted(truth.items())]
    negatives = [boilerplate(gzip.decompress((aeb / "html" / f"{k}.html.gz").read_bytes())) for k in sorted(truth)]
    return positives, [n for n in negatives if n]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    positives, negatives = corpus
    return train_classifier(positives, negatives, tmp_path_factory.mktemp("model") / "model.bin", SMALL)


def test_separates_held_out_documents(trained) -> None:
    held = trained.held_out
    assert held is not None and held.positives >= 20 and held.negatives >= 20
    assert held.auc > 0.85, held
    assert held.recall > 0.5


DIRTY_HEAP_TRAINING = """
import contextlib, ctypes, json, sys
from pathlib import Path
import filters.classifier_train as ct

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: big blocks come from the heap ...
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: ... and stay there after free, to be reused
blocks = [libc.malloc(1 << 26) for _ in range(12)]
for block in blocks:
    ctypes.memset(block, 0xFF, 1 << 26)  # 0xFFFFFFFF reads as a NaN float
for block in blocks:
    libc.free(ctypes.c_void_p(block))
if sys.argv[1] == "unprotected":
    ct.zeroed_allocations = contextlib.nullcontext
data = json.loads(sys.stdin.read())
try:
    ct.train_classifier(data["pos"], data["neg"], Path(data["out"]), ct.TrainSettings(bucket=100_000, holdout=0.2))
except ValueError as e:
    print(e)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_gives_the_same_model_whatever_the_heap_held(trained, corpus, tmp_path) -> None:
    """fastText reads memory it allocated before writing it: on a heap full of NaN bytes it diverges, unless
    training runs with zero-filled allocations (as it does); then the model is the clean process's, bit for bit."""
    positives, negatives = corpus
    results = {}
    for mode in ("unprotected", "protected"):
        out = tmp_path / f"{mode}.bin"
        payload = json.dumps({"pos": positives, "neg": negatives, "out": str(out)})
        done = subprocess.run([sys.executable, "-c", DIRTY_HEAP_TRAINING, mode], input=payload, text=True,
                              capture_output=True, timeout=300, check=True)  # fmt: skip
        results[mode] = (done.stdout, out)
    assert "Encountered NaN" in results["unprotected"][0]  # the dirty heap does bite without the protection
    assert results["protected"][1].read_bytes() == trained.model_path.read_bytes()


def test_scores_are_deterministic(trained, corpus, tmp_path) -> None:
    """Same inputs and seed: the same model file; the same text: the same score, alone or in a batch."""
    positives, negatives = corpus
    again = train_classifier(positives, negatives, tmp_path / "again.bin", SMALL)
    assert again.model_path.read_bytes() == trained.model_path.read_bytes()
    stage = QualityClassifierStage(QualityClassifierConfig(model=str(trained.model_path)))
    texts = positives[:5] + negatives[:5]
    batch = stage(pa.table({"text": texts})).column("quality_score").to_pylist()
    alone = [stage(pa.table({"text": [t]})).column("quality_score")[0].as_py() for t in texts]
    assert batch == alone == stage(pa.table({"text": texts})).column("quality_score").to_pylist()


def test_normalise_joins_lines_as_dclm() -> None:
    assert normalise("  a\nb\r\nc\u2028d  \n") == "a b c d"
    assert normalise(None) == ""


def test_stage_writes_score_and_drops_below_threshold(trained, corpus) -> None:
    positives, negatives = corpus
    texts = positives[:10] + negatives[:10]
    model = str(trained.model_path)
    scores = QualityClassifierStage(QualityClassifierConfig(model=model))(pa.table({"text": texts}))
    assert "drop_reason" not in scores.column_names  # no threshold: scored, nothing dropped
    values = np.array(scores.column("quality_score").to_pylist())
    cut = float(np.median(values))
    stage = QualityClassifierStage(QualityClassifierConfig(enabled=True, model=model, threshold=cut))
    stats = PartStats(part="p")
    kept, rejected = run_chain([stage], pa.table({"id": [str(i) for i in range(20)], "text": texts}), stats)
    assert kept.column("quality_score").to_pylist() == [v for v in values if v >= cut]
    assert stats.stage("quality_classifier").drops == {"quality_classifier:below_threshold": int((values < cut).sum())}
    assert all(r == "below_threshold" for t in rejected for r in t.column("drop_reason").to_pylist())
    signal = stats.profile.signals["quality_score"]  # the report's histogram, with the threshold on it
    assert signal.kept.total + signal.dropped.total == 20 and signal.thresholds == {"below_threshold (<)": cut}


def test_read_documents_parquet_and_lines(tmp_path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one doc\nwith lines", ""]}), folder / "part-00000.parquet")
    (tmp_path / "lines.txt").write_text("first\n\nsecond\n")
    assert read_documents([folder, tmp_path / "lines.txt"]) == ["one doc\nwith lines", "first", "second"]


def test_roc_auc() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5


def test_model_from_url_is_downloaded_once(trained, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(tmp_path / "cache"))
    handler = partial(SimpleHTTPRequestHandler, directory=str(trained.model_path.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{trained.model_path.name}"
        local = model_file(url)
        assert local.read_bytes() == trained.model_path.read_bytes()
        assert model_file(url) == local
        assert load_classifier(url, "__label__hq").get_labels()
        with pytest.raises(ClassifierModelError, match="not found"):
            model_file(url + ".missing")
    finally:
        server.shutdown()


def _stage_cli(tmp_path: Path, name: str, classifier: dict) -> tuple[int, str]:
    docs = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"]}), docs)
    config = tmp_path / f"{name}.yaml"
    config.write_text(json.dumps({"quality_classifier": classifier}))
    out = tmp_path / f"out-{name}"
    result = CliRunner().invoke(
        app, ["stage", "quality_classifier", "-i", str(docs), "-o", str(out), "-c", str(config)]
    )
    return result.exit_code, result.output


def test_bad_models_give_one_clear_line(trained, corpus, tmp_path) -> None:
    data = trained.model_path.read_bytes()
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(data[:4000])  # a cut download: right header, no body
    vectors = tmp_path / "vectors.bin"  # a word-vector model's header: fastText's model kind 2 (skipgram), not 3
    vectors.write_bytes(data[:36] + (2).to_bytes(4, "little") + data[40:])
    (tmp_path / "words.txt").write_text("\n".join(corpus[0][:5]))
    cases = {
        "missing": ({"model": str(tmp_path / "nope.bin")}, "not found"),
        "not_fasttext": ({"model": str(tmp_path / "words.txt")}, "not a fastText model"),
        "corrupt": ({"model": str(corrupt)}, "truncated or corrupt"),
        "vectors": ({"model": str(vectors)}, "not a supervised classifier"),
        "label": ({"model": str(trained.model_path), "label": "__label__edu"}, "has no label '__label__edu'"),
    }
    for name, (classifier, message) in cases.items():
        code, output = _stage_cli(tmp_path, name, classifier)
        assert code == 2, (name, output)
        assert message in output, (name, output)
        assert "Traceback" not in output
    # enabled in a run config: refused when the config loads
    code, output = _stage_cli(tmp_path, "enabled", {"enabled": True, "model": str(vectors)})
    assert code == 2 and "not a supervised classifier" in output


def test_refinery_run_refuses_a_bad_model_with_one_line_and_exit_2(trained, tmp_path, mirror_url) -> None:
    data = trained.model_path.read_bytes()
    (tmp_path / "corrupt.bin").write_bytes(data[:4000])
    (tmp_path / "vectors.bin").write_bytes(data[:36] + (2).to_bytes(4, "little") + data[40:])
    (tmp_path / "words.txt").write_text("not a model\n")
    cases = {
        "missing": (tmp_path / "nope.bin", "__label__hq", "not found"),
        "not_fasttext": (tmp_path / "words.txt", "__label__hq", "not a fastText model"),
        "corrupt": (tmp_path / "corrupt.bin", "__label__hq", "truncated or corrupt"),
        "vectors": (tmp_path / "vectors.bin", "__label__hq", "not a supervised classifier"),
        "label": (trained.model_path, "__label__edu", "has no label '__label__edu'"),
    }
    for name, (model, label, message) in cases.items():
        args = ["run", "--cc-base-url", mirror_url, "--limit-warcs", "1", "-o", str(tmp_path / "out"), "--no-progress"]
        sets = [
            "quality_classifier.enabled=true",
            f"quality_classifier.model={model}",
            f"quality_classifier.label={label}",
        ]
        result = CliRunner().invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(model) in lines[0], (name, result.output)


def test_train_cli(corpus, tmp_path) -> None:
    positives, negatives = corpus
    (tmp_path / "pos.txt").write_text("\n".join(normalise(t) for t in positives))
    (tmp_path / "neg.txt").write_text("\n".join(normalise(t) for t in negatives))
    args = ["classifier", "train", "-p", str(tmp_path / "pos.txt"), "-n", str(tmp_path / "neg.txt")]
    cli = [sys.executable, "-m", "pipeline.app.cli"]  # a process of its own, as users run it
    trained = subprocess.run(
        [*cli, *args, "-o", str(tmp_path / "m.bin"), "--quantize", "--bucket", "100000", "--cutoff", "1000"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = trained.stdout + trained.stderr
    assert trained.returncode == 0, output
    assert (tmp_path / "m.ftz").is_file() and "AUC:" in output and "precision:" in output
    result = CliRunner().invoke(app, ["classifier", "train", "-p", str(tmp_path / "none.txt"), *args[4:], "-o", "x"])
    assert result.exit_code == 2 and "not found" in result.output


def test_report_histogram_and_compare_count_documents_across_threshold(trained, corpus, tmp_path) -> None:
    from pipeline.report.build import build_report
    from pipeline.report.compare import write_comparison

    positives, negatives = corpus
    texts = positives[:15] + negatives[:15]
    docs = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(30)], "text": texts}), docs)
    scores = sorted(QualityClassifierStage(QualityClassifierConfig(model=str(trained.model_path)))(
        pa.table({"text": texts})).column("quality_score").to_pylist())  # fmt: skip
    runs = {}
    for name, cut in (("a", scores[5]), ("b", scores[20])):
        config = tmp_path / f"{name}.yaml"
        config.write_text(json.dumps({"quality_classifier": {"model": str(trained.model_path), "threshold": cut}}))
        runs[name] = tmp_path / name
        args = ["stage", "quality_classifier", "-i", str(docs), "-o", str(runs[name]), "-c", str(config)]
        assert CliRunner().invoke(app, [*args, "--no-progress"]).exit_code == 0
    report = build_report(runs["b"])
    signal = report["documents"]["signals"]["quality_score"]
    assert signal["kept_total"] == 10 and signal["dropped_total"] == 20 and signal["log"]
    moves = write_comparison(runs["a"], runs["b"]).result["quality_classifier"]
    assert moves["moved"] == 15 and moves["below"] == {"a": 5, "b": 20, "delta": 15, "relative": 3.0}
    assert not moves["exact"]  # `refinery stage` records no config: the model and label are unknown
    assert signal["thresholds"] == {"below_threshold (<)": scores[20]}  # drawn dashed on the histogram
    assert moves["documents"] == {"kept_a_dropped_b": None, "dropped_a_kept_b": None}  # no rejected rows kept


def test_compare_counts_the_documents_that_moved_each_way(trained, corpus, tmp_path) -> None:
    """A keeps high __label__hq scores, B high __label__cc scores: documents move both ways, counted by id."""
    from pipeline.report.compare import write_comparison

    positives, negatives = corpus
    texts = positives[:15] + negatives[:15]
    docs = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(30)], "text": texts}), docs)
    scores = {}
    for label in ("__label__hq", "__label__cc"):
        stage = QualityClassifierStage(QualityClassifierConfig(model=str(trained.model_path), label=label))
        scores[label] = np.array(stage(pa.table({"text": texts})).column("quality_score").to_pylist())
    cuts = {"a": ("__label__hq", float(np.sort(scores["__label__hq"])[10])),
            "b": ("__label__cc", float(np.sort(scores["__label__cc"])[12]))}  # fmt: skip
    runs = {}
    for name, (label, cut) in cuts.items():
        config = tmp_path / f"{name}.yaml"
        classifier = {"model": str(trained.model_path), "label": label, "threshold": cut}
        config.write_text(json.dumps({"quality_classifier": classifier}))
        runs[name] = tmp_path / name
        args = ["stage", "quality_classifier", "-i", str(docs), "-o", str(runs[name]), "-c", str(config)]
        assert CliRunner().invoke(app, [*args, "--no-progress", "--keep-rejected"]).exit_code == 0
    kept = {name: scores[label] >= cut for name, (label, cut) in cuts.items()}
    expected = {
        "kept_a_dropped_b": int((kept["a"] & ~kept["b"]).sum()),
        "dropped_a_kept_b": int((~kept["a"] & kept["b"]).sum()),
    }
    assert min(expected.values()) > 0
    comparison = write_comparison(runs["a"], runs["b"])
    assert comparison.result["quality_classifier"]["documents"] == expected
    assert not comparison.result["quality_classifier"]["exact"]  # another label: a net count alone is not enough
    assert f"{expected['kept_a_dropped_b']} documents kept in A were dropped in B" in comparison.result["summary"]
    html = Path(comparison.html_path).read_text()
    assert f"<b>{expected['kept_a_dropped_b']}</b> kept in A and dropped by B" in html
    assert f"<b>{expected['dropped_a_kept_b']}</b> dropped by A" in html
