"""What every ``refinery`` command shares: its options, its logging set-up and how failures are reported.

Every command reports a failure the same way (:func:`errors`): one red line saying what failed and where,
exit 1 (2 for bad input or configuration, 3 for a run completed with failures), and ``-v`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Annotated, NoReturn

import typer
import yaml

from pipeline.app.recipes import RECIPES
from pipeline.core.storage import StorageError
from pipeline.engines.base import RunIncomplete

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML run config, a local path or a store URL (see `refinery config`); flags override it.",
    ),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help=f"Start from a preset: {', '.join(RECIPES)} (fineweb is the default chain). The recipe applies first, "
        "then --config, then the other flags.",
    ),
]
ExtractorOpt = Annotated[
    str | None,
    typer.Option(
        "--extractor",
        help="Main-text extractor: trafilatura (FineWeb's settings, default) or resiliparse (DCLM-Baseline's).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any config field as KEY=VALUE, dotted (value read as YAML), e.g. quality_classifier.model=model.bin "
        "or quality_classifier.threshold=0.1 (repeatable; applied after the other flags).",
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO) to stderr.")]
StoreConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Run config (YAML) whose storage_options reach the store (credentials)."),
]
"""For commands that take nothing else from a run config: only its ``storage_options`` matter."""
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bars (for logs and CI).")]
KeepRejectedOpt = Annotated[
    bool, typer.Option("--keep-rejected", help="Also write dropped documents, with the rule that dropped them.")
]
LanguagesOpt = Annotated[
    str | None, typer.Option("--languages", help="Comma-separated ISO 639-1 codes to keep, or 'all'. Default: en.")
]
ThresholdOpt = Annotated[float | None, typer.Option("--lang-threshold", help="Minimum language score (0.65).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-w", help="Processes running at once (1).")]
EngineOpt = Annotated[
    str | None,
    typer.Option("--engine", help="Where stages run: local (processes on this machine) or spark (a Spark cluster)."),
]
MasterOpt = Annotated[
    str | None,
    typer.Option(
        "--master",
        help="Spark master URL (implies --engine spark): spark://host:7077, k8s://https://host, local[4]. "
        "Default: spark-submit's, else local[*].",
    ),
]
SparkConfOpt = Annotated[
    list[str] | None,
    typer.Option("--spark-conf", help="Spark setting KEY=VALUE, e.g. spark.executor.memory=8g (repeatable)."),
]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # trafilatura warns for every page it discards; the funnel counts those already
    for noisy in ("trafilatura", "htmldate", "courlan"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # font fallbacks while drawing the report


def overrides(**flags: object) -> dict:
    """CLI flags that were given, as dotted config keys."""
    return {key: value for key, value in flags.items() if value is not None}


def engine_flags(engine: str | None, master: str | None, spark_conf: list[str] | None) -> dict:
    """``--engine/--master/--spark-conf`` as config overrides; a master or Spark setting implies the Spark engine,
    and so does running under spark-submit (unless ``--engine local``)."""
    flags: dict = {}
    if spark_conf:
        conf = {}
        for item in spark_conf:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                typer.secho(f"--spark-conf wants KEY=VALUE, got {item!r}", fg=typer.colors.RED, err=True)
                raise typer.Exit(2)
            conf[key.strip()] = value.strip()
        flags["engine.spark_conf"] = conf
    if master:
        flags["engine.master"] = master
    if engine or master or spark_conf:
        flags["engine.kind"] = engine or "spark"
    elif os.environ.get("PYSPARK_GATEWAY_PORT"):  # started by spark-submit: its cluster is what the user wants
        flags["engine.kind"] = "spark"
    return flags


def parse_sets(items: list[str] | None) -> dict:
    """``--set KEY=VALUE`` items as config overrides (each value read as YAML: numbers, true/false, null, lists)."""
    flags: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            typer.secho(f"--set wants KEY=VALUE, got {item!r}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        try:
            flags[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            flags[key.strip()] = value
    return flags


def parse_languages(value: str | None) -> list[str] | None | str:
    if value is None:
        return "unset"
    if value.strip().lower() in ("all", "none", ""):
        return None
    return [code.strip() for code in value.split(",") if code.strip()]


EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_FAILURES = 3
"""``refinery run``: every pass ran, but some WARC files failed (tolerated by ``--max-failed-parts``)."""


@contextlib.contextmanager
def errors(what: str, verbose: bool, usage: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """A failure as one red line saying what failed and where (exit 1; ``usage`` errors exit 2); ``-v`` adds
    the traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except RunIncomplete as e:  # already one line per failed part, naming its input
        fail(str(e), EXIT_FAILED, verbose)
    except usage as e:
        fail(f"error: {e}", EXIT_USAGE, verbose)
    except StorageError as e:  # a location that cannot be used as given: what to fix, exit 2
        fail(f"error: {e}", EXIT_USAGE, verbose)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            where = f" ({e.filename})" if e.filename else ""
            fail(f"error: disk full while {what}{where}: free space or write elsewhere", EXIT_FAILED, verbose)
        fail(f"error while {what}: {e}", EXIT_FAILED, verbose)
    except Exception as e:  # listing, lock and config errors: one clear line
        fail(f"error while {what}: {e}", EXIT_FAILED, verbose)


def fail(message: str, code: int = EXIT_FAILED, verbose: bool = False) -> NoReturn:
    """Print ``message`` in red and exit with ``code``; inside an ``except``, ``verbose`` adds the traceback."""
    if verbose:
        traceback.print_exc(file=sys.stderr)
    else:
        message += "\n(-v shows the traceback)" if code == EXIT_FAILED and "\n" not in message else ""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code) from None


def common_flags(
    *,
    workers: int | None,
    engine: str | None,
    master: str | None,
    spark_conf: list[str] | None,
    keep_rejected: bool = False,
    languages: str | None = None,
    lang_threshold: float | None = None,
) -> dict:
    """The options ``run``, ``stage`` and ``dedup`` share, as config overrides (only those given)."""
    flags = overrides(
        **{
            "engine.workers": workers,
            "langid.threshold": lang_threshold,
            "keep_rejected": True if keep_rejected else None,
        }
    )
    flags.update(engine_flags(engine, master, spark_conf))
    langs = parse_languages(languages)
    if langs != "unset":
        flags["langid.languages"] = langs
    return flags
