"""Quality classifier: training time with DCLM's recipe, and the stage's docs/s on real documents.

Run: ``.venv/bin/python -m bench.bench_quality_classifier``; writes ``bench/results/quality_classifier.md``.

Training data (``../shared/realdata``): the AEB article bodies (positives) against the navigation, footer and link
text of the same pages (negatives), DCLM's hyper-parameters with its 2,000,000 hash buckets (an 800 MB model, as
big in its n-gram table as DCLM's), then the same model quantised. Scoring: the PII bench's real texts (article
bodies, CC text samples and WET, one document per language of sentences, extracted CC pages), repeated to
``--docs`` documents, through the ``quality_classifier`` stage inside ``run_chain`` in Arrow batches of 1,000, with a
threshold (so dropping and the report's histogram are included). The median of ``--rounds`` rounds is reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from bench.bench_pii import real_texts
from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.classifier_train import TrainSettings, train_classifier
from filters.config import DCLM_THRESHOLD, QualityClassifierConfig
from filters.quality_classifier import QualityClassifierStage
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats

log = logging.getLogger("bench.quality_classifier")


def training_corpus(root: Path) -> tuple[list[str], list[str]]:
    """AEB article bodies, and the boilerplate (navigation, footer, links outside paragraphs) of the same pages."""
    from lxml import html as lxml_html

    aeb = root / "extraction_aeb"
    truth = json.loads((aeb / "ground-truth.json").read_text())
    negatives = []
    for key in sorted(truth):
        doc = lxml_html.document_fromstring(gzip.decompress((aeb / "html" / f"{key}.html.gz").read_bytes()).decode())
        found = doc.xpath("//nav|//footer|//a[not(ancestor::p) and not(ancestor::article)]")
        negatives.append("\n".join(dict.fromkeys(t for el in found if (t := " ".join(el.text_content().split())))))
    return [truth[k]["articleBody"] for k in sorted(truth)], [n for n in negatives if n]


def scoring_speed(model: Path, texts: list[str], rounds: int) -> float:
    """Median docs/s of the stage (model already loaded) over ``texts`` in batches of 1,000."""
    stage = QualityClassifierStage(QualityClassifierConfig(enabled=True, model=str(model), threshold=DCLM_THRESHOLD))
    stage.prepare()
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(texts), 1000):
            run_chain([stage], pa.table({"text": texts[start : start + 1000]}), PartStats(part="bench"))
        timings.append(time.perf_counter() - started)
    return len(texts) / statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000, help="Documents scored per round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = realdata_dir()
    positives, negatives = training_corpus(root)
    base = real_texts(root)
    texts = (base * (args.docs // len(base) + 1))[: args.docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-classifier-") as tmp:
        for quantize in (False, True):
            result = train_classifier(positives, negatives, Path(tmp) / "model.bin", TrainSettings(), quantize=quantize)
            speed = scoring_speed(result.model_path, texts, args.rounds)
            held = result.held_out
            rows.append([
                result.model_path.suffix, f"{result.model_path.stat().st_size / 1e6:,.1f}",
                f"{result.train_positives} + {result.train_negatives}", f"{result.seconds:.2f}",
                f"{held.auc:.3f}" if held else "-", f"{speed:,.0f}", f"{speed * mb / len(texts):,.2f}",
            ])  # fmt: skip
            log.info("%s", rows[-1])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = markdown_table(
        ["model", "MB", "trained on", "train s (incl. quantise)", "held-out AUC", "docs/s", "MB text/s"], rows
    )
    text = (
        f"# Quality classifier: training and scoring ({when})\n\n{machine_info()}\n\n"
        f"Scored: {len(texts):,} real documents ({mb:.1f} MB), threshold {DCLM_THRESHOLD}.\n\n{table}\n"
    )
    print(f"{text}\nwritten to {write_result('quality_classifier.md', text)}")


if __name__ == "__main__":
    main()
