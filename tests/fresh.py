"""Classifier training in a fresh interpreter, the way ``refinery classifier train`` runs.

In the full suite, fastText training inside the test process diverged ("Encountered NaN.") after earlier tests had
run, while the same training passed alone and after each suspected test file: some process state left behind,
not yet identified. Training in a spawned process keeps these tests about the classifier.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from filters.classifier_train import TrainResult, TrainSettings, train_classifier


def train_fresh(positives: list[str], negatives: list[str], output: Path, settings: TrainSettings) -> TrainResult:
    """:func:`train_classifier` in a new (spawned) Python process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(train_classifier, positives, negatives, output, settings).result()
