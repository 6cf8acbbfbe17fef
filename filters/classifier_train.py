"""Training a quality classifier with DCLM's recipe, and measuring it on documents it did not see.

DCLM trained its classifier with fastText's supervised mode on ``__label__hq`` (OpenHermes 2.5 + ELI5) versus
``__label__cc`` (RefinedWeb) examples, one per line, with fastText's default hyper-parameters except word bigrams:
lr 0.1, dim 100, ws 5, epoch 5, minCount 1, wordNgrams 2, softmax loss, 2M hash buckets. The text of each example
is normalised as the stage scores it (:func:`filters.quality_classifier.normalise`), so training and scoring see
the same lines. A held-out share of each class is kept apart and scored with the trained model: precision and
recall of the positive label at the model's own decision (score >= 0.5) and the ROC AUC.

Inputs: Parquet files, or folders of them (a run's ``documents/``), read for their ``text`` column; any other file
is plain text with one document per line (blank lines skipped), fastText's own one-example-a-line convention.

fastText's training reads memory it allocated before writing it, so in a process whose heap already held other
data (a long-lived worker, a test session) the same inputs and seed could diverge ("Encountered NaN."): freed
memory that reads as NaN or huge floats gets into the weights. Training therefore runs with glibc's allocator
zero-filling every allocation (:func:`zeroed_allocations`), which gives the model a fresh process gives.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import platform
import random
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from filters.quality_classifier import ClassifierModelError, normalise, open_model, score_texts
from pipeline.core.storage import arrow_source, is_remote, location, read_bytes

log = logging.getLogger(__name__)

M_PERTURB = -6
"""glibc's ``mallopt`` parameter: with byte B set, every allocation is filled with B ^ 0xFF (0xFF: zeros)."""

POSITIVE_LABEL = "__label__hq"
NEGATIVE_LABEL = "__label__cc"


@contextlib.contextmanager
def zeroed_allocations() -> Iterator[None]:
    """Inside the block, glibc's malloc hands out zero-filled memory (``M_PERTURB``), so code that reads memory
    before writing it (fastText's training) sees zeros whatever the heap held before. Other C libraries: no-op,
    as fresh processes are."""
    if platform.libc_ver()[0] != "glibc":
        yield
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        yield
        return
    libc.mallopt(M_PERTURB, 0xFF)
    try:
        yield
    finally:
        libc.mallopt(M_PERTURB, 0)


@dataclass(frozen=True)
class TrainSettings:
    """DCLM's fastText hyper-parameters (fastText's defaults plus word bigrams), the held-out share and the seed."""

    lr: float = 0.1
    dim: int = 100
    ws: int = 5
    epoch: int = 5
    min_count: int = 1
    word_ngrams: int = 2
    bucket: int = 2_000_000
    threads: int = 1
    """One thread: the same inputs and seed give the same model (fastText's threads race on shared weights)."""
    holdout: float = 0.1
    seed: int = 42
    cutoff: int = 100_000
    """Quantising keeps this many words and n-grams (the most useful), then retrains: fastText's advice."""


@dataclass(frozen=True)
class HeldOut:
    """How the model does on the held-out documents."""

    positives: int
    negatives: int
    precision: float
    recall: float
    auc: float


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    train_positives: int
    train_negatives: int
    held_out: HeldOut | None
    seconds: float


def read_documents(paths: Iterable[str | Path]) -> list[str]:
    """Texts of ``paths``: Parquet files or folders of them (``text`` column), else one document per line."""
    texts: list[str] = []
    for given in paths:
        path = location(given)
        if not is_remote(path) and Path(path).is_dir():
            files = sorted(f for f in Path(path).rglob("*.parquet") if f.is_file())
            if not files:
                raise FileNotFoundError(f"no .parquet files under {path}")
            for f in files:
                texts += _parquet_texts(f)
        elif str(path).endswith(".parquet"):
            texts += _parquet_texts(path)
        else:
            try:
                lines = read_bytes(path).decode("utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                raise FileNotFoundError(f"input not found: {given}") from None
            texts += [line for line in lines if line.strip()]
    return texts


def _parquet_texts(path: object) -> list[str]:
    source, filesystem = arrow_source(path)  # type: ignore[arg-type]
    table = pq.read_table(source, columns=["text"], filesystem=filesystem)
    return [t for t in table.column("text").to_pylist() if t and t.strip()]


def split(texts: list[str], holdout: float, rng: random.Random) -> tuple[list[str], list[str]]:
    """Shuffled ``(train, held_out)``; ``holdout`` of them (at least one when asked for and possible) held out."""
    shuffled = texts[:]
    rng.shuffle(shuffled)
    n = round(len(shuffled) * holdout)
    if holdout > 0 and n == 0 and len(shuffled) > 1:
        n = 1
    return shuffled[n:], shuffled[:n]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))  # rank - 1 of each distinct score's first member
    ranks = (first + (counts + 1) / 2)[group]  # tied scores share their average rank
    return float((ranks[positive].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(model_path: Path, positives: list[str], negatives: list[str]) -> HeldOut:
    """Precision and recall of the positive label at score >= 0.5, and the ROC AUC, on held-out texts."""
    model = open_model(model_path, str(model_path))
    if POSITIVE_LABEL not in model.get_labels():
        raise ClassifierModelError(f"{model_path} has no label {POSITIVE_LABEL!r}")
    scores = score_texts(model, positives + negatives, POSITIVE_LABEL)
    truth = np.array([True] * len(positives) + [False] * len(negatives))
    predicted = scores >= 0.5
    tp = int((predicted & truth).sum())
    precision = tp / int(predicted.sum()) if predicted.any() else 0.0
    recall = tp / len(positives) if positives else 0.0
    return HeldOut(len(positives), len(negatives), precision, recall, roc_auc(scores, truth))


def train_classifier(
    positives: list[str],
    negatives: list[str],
    output: Path,
    settings: TrainSettings = TrainSettings(),
    *,
    quantize: bool = False,
) -> TrainResult:
    """Train on ``positives`` vs ``negatives`` (a held-out share apart); save to ``output`` (``.ftz`` quantised)."""
    if not positives or not negatives:
        raise ValueError(f"need positive and negative documents, got {len(positives)} and {len(negatives)}")
    import fasttext

    rng = random.Random(settings.seed)
    train_pos, held_pos = split(positives, settings.holdout, rng)
    train_neg, held_neg = split(negatives, settings.holdout, rng)
    examples = [f"{POSITIVE_LABEL} {normalise(t)}" for t in train_pos]
    examples += [f"{NEGATIVE_LABEL} {normalise(t)}" for t in train_neg]
    rng.shuffle(examples)
    output = output.with_suffix(".ftz") if quantize else output
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="classifier-train-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("\n".join(examples) + "\n", encoding="utf-8")
        try:
            with zeroed_allocations():
                model = fasttext.train_supervised(
                    input=str(train_file), lr=settings.lr, dim=settings.dim, ws=settings.ws, epoch=settings.epoch,
                    minCount=settings.min_count, wordNgrams=settings.word_ngrams, bucket=settings.bucket,
                    loss="softmax", thread=settings.threads, seed=settings.seed, verbose=0,
                )  # fmt: skip
        except RuntimeError as e:  # "Encountered NaN.": seen with few hash buckets (20,000) on long documents
            raise ValueError(f"training diverged ({e}); try more hash buckets (--bucket) or a lower --lr") from None
        if quantize:
            with zeroed_allocations():
                model.quantize(
                    input=str(train_file), cutoff=settings.cutoff, retrain=True, thread=settings.threads, verbose=0
                )
        partial = output.with_name(f".{output.name}.part")
        model.save_model(str(partial))
        partial.replace(output)
    seconds = time.perf_counter() - started
    log.info("trained %s in %.1f s on %d + %d documents", output, seconds, len(train_pos), len(train_neg))
    held = evaluate(output, held_pos, held_neg) if held_pos and held_neg else None
    return TrainResult(output, len(train_pos), len(train_neg), held, seconds)
