"""Model-based quality scoring: a fastText supervised classifier (DCLM's, or one trained with ``refinery classifier
train``) scores every document; with a threshold, documents below it are dropped.

DCLM-Baseline keeps the pages its fastText classifier (OpenHermes 2.5 + ELI5 vs RefinedWeb, word bigrams) scores at
least 0.018112 for ``__label__hq``. The text is normalised as DCLM scores it: stripped, its lines joined by single
spaces (Python's ``splitlines``, so every Unicode line break counts). For a two-label model the score is DCLM's:
the top label's probability when it is ``label``, else one minus it; for a model with more labels, the probability
fastText gives ``label``. The score lands in the ``quality_score`` column whether or not a threshold is set, so a
corpus can be re-thresholded later without scoring it again.

The model is a local path or a URL (``https://``, ``s3://``...; downloaded once into the cache folder) and is loaded
once per process into a module cache, like lid.176: the stage holds only its config, so it pickles small. The
driver loads it before the workers start (:meth:`QualityClassifierStage.prepare`): a bad model fails the run at
once with one clear line, and forked workers share the loaded model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from filters.config import QualityClassifierConfig
from pipeline.core.cache import cache_root
from pipeline.core.profile import SignalSpec, log_edges
from pipeline.core.stage import with_drop_reasons
from pipeline.core.storage import is_remote, location

log = logging.getLogger(__name__)

SCORE_COLUMN = "quality_score"
BELOW_THRESHOLD = "below_threshold"
SCORE_EDGES = log_edges(1e-5, 1.0, 10)
"""Score bins: 10 log-spaced bins per decade from 1e-5 (fastText's floor) to 1; DCLM's cut (0.018) is near the top
decile, which linear bins would lump into their first bin."""
PREDICT_CHUNK = 1024

FASTTEXT_MAGIC = 793712314
SUPERVISED = 3
"""fastText's model kinds in its file header: 1 cbow, 2 skipgram, 3 supervised."""
_HEADER = struct.Struct("<12i")
"""magic, version, dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn."""

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


class ClassifierModelError(ValueError):
    """The classifier model is missing, unreadable, not a supervised classifier, or lacks the label asked for."""


def normalise(text: str | None) -> str:
    """DCLM's text before scoring: stripped, lines joined with single spaces (one fastText line)."""
    return " ".join((text or "").strip().splitlines())


def model_file(source: str | os.PathLike[str]) -> Path:
    """The local file of model ``source``: a path as it is; a URL downloaded once into ``<cache>/models``."""
    if not is_remote(source):
        return Path(location(source)).expanduser()
    text = str(source)
    cached = cache_root() / "models" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}-{text.rsplit('/', 1)[-1]}"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.part")
    remote = location(text)
    log.info("downloading quality classifier %s to %s", text, cached)
    try:
        remote.fs.get_file(remote.path, str(tmp))
        os.replace(tmp, cached)  # whole or absent: a killed download leaves only the temporary file
    except FileNotFoundError:
        raise ClassifierModelError(f"quality classifier model not found: {text} (quality_classifier.model)") from None
    except Exception as e:
        raise ClassifierModelError(f"could not download quality classifier model {text}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def check_model_file(path: Path, source: str | os.PathLike[str] | None = None) -> None:
    """Refuse, from its header alone, a file that is missing, not a fastText model, or not a supervised one."""
    where = source if source is not None else path
    if not path.is_file():
        raise ClassifierModelError(f"quality classifier model not found: {where} (quality_classifier.model)")
    with path.open("rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size or _HEADER.unpack(head)[0] != FASTTEXT_MAGIC:
        raise ClassifierModelError(f"quality classifier model {where} is not a fastText model (corrupt or wrong file)")
    kind = _HEADER.unpack(head)[9]
    if kind != SUPERVISED:
        name = {1: "cbow", 2: "skipgram"}.get(kind, f"kind {kind}")
        raise ClassifierModelError(
            f"quality classifier model {where} is a fastText {name} (word vector) model, not a supervised classifier"
        )
    if not _has_output_matrix(path, dim=_HEADER.unpack(head)[2]):
        raise ClassifierModelError(
            f"quality classifier model {where} is truncated or corrupt (no complete output matrix at its end)"
        )


MAX_LABELS = 4096


def _has_output_matrix(path: Path, dim: int) -> bool:
    """Whether the file ends with a classifier's dense output matrix: a zero "quantised" flag, then int64 rows
    (the labels) and columns (``dim``), then rows x dim floats. fastText itself reads a cut file forever (its
    dictionary reader waits for a string's end that never comes), so a cut download must be caught here."""
    size = path.stat().st_size
    tail = struct.Struct("<?qq")
    with path.open("rb") as f:
        for rows in range(1, MAX_LABELS + 1):
            start = size - 4 * rows * dim - tail.size
            if start < _HEADER.size:
                return False
            f.seek(start)
            quantised, m, n = tail.unpack(f.read(tail.size))
            if not quantised and m == rows and n == dim:
                return True
    return False


def load_classifier(source: str | os.PathLike[str], label: str) -> Any:
    """The fastText classifier at ``source``, loaded once per process; checks it predicts ``label``."""
    key = str(source)
    model = _MODELS.get(key)
    if model is None:
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                model = open_model(model_file(source), key)
                _MODELS[key] = model
    labels = model.get_labels()
    if label not in labels:
        raise ClassifierModelError(
            f"quality classifier model {key} has no label {label!r} (quality_classifier.label); "
            f"its labels: {', '.join(labels[:20])}"
        )
    return model


def open_model(path: Path, source: str) -> Any:
    """The fastText classifier in file ``path`` (named ``source`` in errors), checked and loaded, not cached."""
    check_model_file(path, source)
    from fasttext.FastText import _FastText  # not fasttext.load_model: it prints a warning on every load

    try:
        model = _FastText(str(path))
    except Exception as e:  # a truncated or damaged file: ValueError or a bare C++ exception
        raise ClassifierModelError(f"quality classifier model {source} could not be loaded (corrupt?): {e}") from e
    log.info("loaded quality classifier %s (%d labels)", source, len(model.get_labels()))
    return model


def score_texts(model: Any, texts: list[str | None], label: str) -> np.ndarray:
    """Each text's score for ``label`` (float64), the text normalised as DCLM does."""
    lines = [normalise(t) + "\n" for t in texts]
    two = len(model.get_labels()) == 2
    scores = np.empty(len(lines), np.float64)
    for start in range(0, len(lines), PREDICT_CHUNK):
        chunk = lines[start : start + PREDICT_CHUNK]
        try:
            labels, probs = model.f.multilinePredict(chunk, 1 if two else -1, 0.0, "strict")
        except TypeError:  # lone surrogates in a Python str: pybind cannot make UTF-8 of them
            chunk = [line.encode("utf-8", "replace").decode("utf-8") for line in chunk]
            labels, probs = model.f.multilinePredict(chunk, 1 if two else -1, 0.0, "strict")
        for i, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
            scores[start + i] = _score(labs, ps, label, two)
    return scores


def _score(labels: list[str], probs: np.ndarray, label: str, two: bool) -> float:
    """DCLM's rule for two labels (top probability, or one minus it); else the label's own probability."""
    if two:
        top = float(probs[0]) if len(probs) else 0.0
        return top if labels and labels[0] == label else 1.0 - top
    return next((float(p) for lab, p in zip(labels, probs, strict=True) if lab == label), 0.0)


@dataclass
class QualityClassifierStage:
    """Writes ``quality_score``; with a threshold, drops documents scoring below it (``below_threshold``)."""

    config: QualityClassifierConfig = field(default_factory=QualityClassifierConfig)
    name: str = field(default="quality_classifier", init=False)

    @property
    def signal_columns(self) -> dict[str, SignalSpec]:
        """The report draws every score this stage computed, with the threshold on it."""
        cut = self.config.threshold
        marks = {f"{BELOW_THRESHOLD} (<)": cut} if cut is not None else {}
        return {SCORE_COLUMN: SignalSpec(SCORE_EDGES, marks, log=True, stage=self.name)}

    def prepare(self) -> None:
        """Load (and check) the model now, in this process: a bad model fails before any work."""
        self._model()

    def _model(self) -> Any:
        if not self.config.model:
            raise ClassifierModelError("quality_classifier.model is not set: give a fastText model's path or URL")
        return load_classifier(self.config.model, self.config.label)

    def __call__(self, table: pa.Table) -> pa.Table:
        if "text" not in table.column_names:
            raise ValueError(f"stage {self.name!r} needs a 'text' column; got columns {table.column_names}")
        scores = score_texts(self._model(), table.column("text").to_pylist(), self.config.label)
        column = pa.array(scores, pa.float64())
        if SCORE_COLUMN in table.column_names:
            table = table.set_column(table.column_names.index(SCORE_COLUMN), SCORE_COLUMN, column)
        else:
            table = table.append_column(SCORE_COLUMN, column)
        cut = self.config.threshold
        if cut is None:
            return table
        return with_drop_reasons(table, np.where(scores < cut, BELOW_THRESHOLD, None).tolist())
