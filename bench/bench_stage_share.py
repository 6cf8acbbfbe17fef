"""The quality classifier, decontamination and PII stages on the real WARC samples: their docs/s inside the WARC
pass, and the three together as a share of the pass's time, measured in the same run (issue 17's goal: under 10%).

One process runs the WARC pass's chain (``warc_stages``, ``process_records``: read, URL filter, pre-screen,
extraction, language ID, quality filters, then the three stages, Parquet parts written) over the complete real
WARC samples, in alternating rounds without the three stages and with them; the median of each. With them: a
classifier trained with DCLM's recipe (2,000,000 buckets, an 800 MB model like DCLM's) on the AEB article bodies
vs the same pages' boilerplate, DCLM's threshold 0.018112; a 20 MB benchmark file (``bench_decontaminate``'s,
nearly every 13-gram distinct); PII as FineWeb. The classifier is loaded and the index built once, before the
rounds, as a run does (their one-off cost is reported apart). Per-stage docs/s: documents in / the stage's own
seconds (the stats every part records), median over the rounds with the stages.

``python -m bench.bench_stage_share [--rounds N]`` -> ``results/stage_share.md``;
``--all-languages`` (every language kept, more documents through the three stages) ->
``results/stage_share_all_languages.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_decontaminate import benchmark_entries
from bench.bench_pipeline import split_inputs, warc_dir
from bench.bench_quality_classifier import training_corpus
from bench.common import machine_info, markdown_table, realdata_dir, write_result
from filters.classifier_train import TrainSettings, train_classifier
from filters.config import DCLM_THRESHOLD
from filters.decontaminate import BenchmarkIndex, build_index
from filters.quality_classifier import QualityClassifierStage
from pipeline.app.config import RunConfig, load_config
from pipeline.app.warc import process_records, warc_stages
from pipeline.core.parts import PartWriter
from pipeline.core.stats import PartStats, merge_parts

THREE = ("quality_classifier", "decontaminate", "pii")


def one_pass(
    files: list[Path], config: RunConfig, index: BenchmarkIndex | None, out: Path
) -> tuple[float, float, PartStats]:
    """Wall and CPU seconds of the WARC pass's chain over ``files``, and its merged stats."""
    stages = warc_stages(config, index)
    parts = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(files):
        stats = PartStats(part=f"part-{i:05d}", inputs=[path.name])
        with PartWriter(out, stats.part) as writer:
            process_records(
                path, path.name, stages, writer, stats, dump=config.source.dump,
                batch_size=config.engine.batch_size, batch_bytes=config.engine.batch_bytes,
            )  # fmt: skip
            writer.commit(stats)
        parts.append(stats)
    return time.perf_counter() - wall, time.process_time() - cpu, merge_parts(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds of each configuration.")
    parser.add_argument(
        "--all-languages", action="store_true", help="Keep every language (more documents reach the three stages)."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = realdata_dir()
    files, _ = split_inputs(warc_dir())
    load = os.getloadavg()[0]
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp_name:
        tmp = Path(tmp_name)
        positives, negatives = training_corpus(root)
        trained = train_classifier(positives, negatives, tmp / "model.bin", TrainSettings())
        bench = tmp / "bench.jsonl"
        bench.write_text("".join(json.dumps({"text": e}) + "\n" for e in benchmark_entries(root, 20_000_000)))
        languages = {"langid.languages": None} if args.all_languages else {}
        without = load_config(overrides={"pii.enabled": False, **languages})
        with_three = load_config(
            overrides={
                **languages,
                "quality_classifier.enabled": True,
                "quality_classifier.model": str(trained.model_path),
                "quality_classifier.threshold": DCLM_THRESHOLD,
                "decontaminate.benchmarks": [{"name": "bench20mb", "path": str(bench)}],
            }
        )
        model_mb = trained.model_path.stat().st_size / 1e6
        t = time.perf_counter()
        QualityClassifierStage(with_three.quality_classifier).prepare()
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        index = build_index(with_three.decontaminate)
        index_s = time.perf_counter() - t
        one_pass(files, without, None, tmp / "warmup")  # lid.176, trafilatura and the readers loaded once
        runs: dict[str, list[tuple[float, float, PartStats]]] = {"without": [], "with": []}
        for r in range(args.rounds):
            runs["without"].append(one_pass(files, without, None, tmp / f"without-{r}"))
            runs["with"].append(one_pass(files, with_three, index, tmp / f"with-{r}"))
            print(f"round {r}: without {runs['without'][-1][0]:.1f} s, with {runs['with'][-1][0]:.1f} s", flush=True)
    wall = {k: statistics.median(x[0] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x[1] for x in v) for k, v in runs.items()}
    stats = runs["with"][0][2]
    stage_rows = []
    own = []
    for name in THREE:
        s = [run[2].stage(name) for run in runs["with"]]
        seconds = statistics.median(x.seconds for x in s)
        own.append(seconds)
        dropped = s[0].docs_in - s[0].docs_out
        stage_rows.append([name, s[0].docs_in, dropped, seconds * 1000, s[0].docs_in / seconds if seconds else 0.0])
    extracted = stats.stage("extract").docs_in
    pass_rows = [
        ["without the three", wall["without"], cpu["without"], extracted, runs["without"][0][2].docs_out],
        ["with the three", wall["with"], cpu["with"], extracted, stats.docs_out],
    ]
    share_wall = (wall["with"] - wall["without"]) / wall["with"]
    share_cpu = (cpu["with"] - cpu["without"]) / cpu["with"]
    share_own = sum(own) / wall["with"]
    share_own_cpu = sum(own) / cpu["with"]
    flag = " --all-languages" if args.all_languages else ""
    text = "\n".join(
        [
            f"# The quality classifier, decontamination and PII stages in the WARC pass ({started:%Y-%m-%d %H:%M} UTC)",
            "",
            f"Machine: {machine_info()}; load average {load:.1f} at the start. Command: "
            f"`python -m bench.bench_stage_share --rounds {args.rounds}{flag}`. {len(files)} complete real WARC "
            f"samples, languages kept: {'all' if args.all_languages else 'en (the default)'}; median of alternating "
            "rounds.",
            "",
            markdown_table(["pass", "wall s", "CPU s", "pages extracted", "documents kept"], pass_rows),
            "",
            f"The three stages' share of the pass: **{share_wall:.1%}** of its wall time (difference of the medians), "
            f"{share_cpu:.1%} of its CPU time; by the stages' own seconds {share_own:.1%} of the wall time, "
            f"{share_own_cpu:.1%} of the CPU time.",
            "",
            markdown_table(["stage", "docs in", "dropped", "ms in the pass", "docs/s"], stage_rows),
            "",
            f"Once per run, before the workers: classifier model loaded in {load_s:.2f} s "
            f"({model_mb:,.0f} MB), benchmark index built in {index_s:.2f} s "
            f"({len(index):,} 13-grams). Training the classifier (DCLM's recipe, {trained.train_positives} + "
            f"{trained.train_negatives} documents): {trained.seconds:.1f} s.",
            "",
        ]
    )
    print(text)
    name = "stage_share_all_languages.md" if args.all_languages else "stage_share.md"
    print(f"written {write_result(name, text)}")


if __name__ == "__main__":
    main()
