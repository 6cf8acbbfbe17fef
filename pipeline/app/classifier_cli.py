"""``refinery classifier ...``: train a quality classifier for the ``quality_classifier`` stage (DCLM's recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.app.cli_common import EXIT_USAGE, VerboseOpt, errors, fail, setup_logging

classifier_app = typer.Typer(
    help="Quality classifiers (fastText) for the quality_classifier stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@classifier_app.command("train")
def train(
    positive: Annotated[
        list[str],
        typer.Option(
            "--positive",
            "-p",
            help="Documents of the kind to keep (label __label__hq): Parquet files or folders of them (a run's "
            "documents/, `text` column), or text files with one document per line (repeatable).",
        ),
    ],
    negative: Annotated[
        list[str],
        typer.Option(
            "--negative", "-n", help="Documents of the kind to drop (label __label__cc), same formats (repeatable)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (model.bin).")],
    quantize: Annotated[
        bool, typer.Option("--quantize", help="Quantise the model (much smaller, slightly less exact); writes .ftz.")
    ] = False,
    cutoff: Annotated[
        int,
        typer.Option("--cutoff", min=1, help="With --quantize: keep the N most useful words and n-grams, retrain."),
    ] = 100_000,
    holdout: Annotated[
        float, typer.Option("--holdout", min=0.0, max=0.9, help="Share of each class held out to measure the model.")
    ] = 0.1,
    epoch: Annotated[int, typer.Option("--epoch", min=1, help="Passes over the data (DCLM: 5).")] = 5,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate (DCLM: 0.1).")] = 0.1,
    dim: Annotated[int, typer.Option("--dim", min=1, help="Vector size (DCLM: 100).")] = 100,
    word_ngrams: Annotated[int, typer.Option("--word-ngrams", min=1, help="Word n-grams (DCLM: 2).")] = 2,
    bucket: Annotated[
        int, typer.Option("--bucket", min=1, help="Hash buckets for n-grams (DCLM: 2,000,000; 4 bytes x dim each).")
    ] = 2_000_000,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="Training threads; 1 (default) makes training reproducible.")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split and of training.")] = 42,
    verbose: VerboseOpt = False,
) -> None:
    """Train a fastText quality classifier with DCLM's recipe and print how it does on held-out documents.

        DCLM's recipe: fastText supervised, word bigrams, fastText's defaults otherwise (lr 0.1, dim 100, ws 5,
    epoch 5, minCount 1, softmax), labels __label__hq (positives) and __label__cc (negatives), each document's text
    normalised as the stage scores it (stripped, lines joined by spaces). A share of each class (--holdout) is kept
    apart and scored: precision and recall of __label__hq at score 0.5, and the ROC AUC.

    Use the model with `quality_classifier: {enabled: true, model: model.bin, threshold: ...}` in the run config.

    Examples:

    * `refinery classifier train -p good/documents -n bad/documents -o model.bin`

    * `refinery classifier train -p wiki.txt -n out/run/rejected -o small.bin --quantize` (writes small.ftz)
    """
    setup_logging(verbose)
    from filters.classifier_train import TrainSettings, read_documents, train_classifier
    from filters.quality_classifier import ClassifierModelError

    settings = TrainSettings(
        lr=lr, dim=dim, epoch=epoch, word_ngrams=word_ngrams, bucket=bucket, threads=threads, holdout=holdout,
        seed=seed, cutoff=cutoff,
    )  # fmt: skip
    with errors(f"training a classifier into {output}", verbose, usage=(ValueError, FileNotFoundError)):
        positives, negatives = read_documents(positive), read_documents(negative)
        if not positives or not negatives:
            fail(f"error: no documents in the {'positive' if not positives else 'negative'} inputs", EXIT_USAGE)
        try:
            result = train_classifier(positives, negatives, output, settings, quantize=quantize)
        except ClassifierModelError as e:
            fail(f"error: {e}", EXIT_USAGE)
    typer.echo(f"model:      {result.model_path} ({result.model_path.stat().st_size / 1e6:,.1f} MB)")
    typer.echo(f"trained on: {result.train_positives:,} positive + {result.train_negatives:,} negative documents "
               f"in {result.seconds:.1f} s")  # fmt: skip
    held = result.held_out
    if held is None:
        typer.echo("held out:   none (--holdout 0 or too few documents)")
        return
    typer.echo(f"held out:   {held.positives:,} positive + {held.negatives:,} negative documents")
    typer.echo(f"precision:  {held.precision:.3f}   (of documents scored >= 0.5, the share that are positive)")
    typer.echo(f"recall:     {held.recall:.3f}   (of positive documents, the share scored >= 0.5)")
    typer.echo(f"AUC:        {held.auc:.3f}   (chance a positive outscores a negative; 0.5 is chance)")
