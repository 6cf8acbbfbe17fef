"""``refinery``: run the pipeline (WARC pass, dedup, tokens, validation, report) or one pass or stage of it, and
build and serve the sample crawl. Sub-commands: ``report`` (report_cli), ``shards`` and ``tokenizer`` (shards_cli)."""

from __future__ import annotations

import contextlib
import faulthandler
import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from pipeline.app.cli_common import (
    EXIT_COMPLETED_WITH_FAILURES,
    EXIT_USAGE,
    ConfigOpt,
    EngineOpt,
    ExtractorOpt,
    KeepRejectedOpt,
    LanguagesOpt,
    MasterOpt,
    NoProgressOpt,
    RecipeOpt,
    SetOpt,
    SparkConfOpt,
    ThresholdOpt,
    VerboseOpt,
    WorkersOpt,
    common_flags,
    errors,
    overrides,
    parse_sets,
    setup_logging,
)
from pipeline.app.config import SAMPLE_DUMP, ConfigError, RunConfig, format_validation_error, load_config
from pipeline.core.stats import format_funnel
from pipeline.core.storage import Location, check_readable, check_writable, location, read_bytes

app = typer.Typer(
    name="refinery",
    help="Turn Common Crawl into LLM pretraining data: WARC files in, clean Parquet documents out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _load(config_file: str | None, overrides: dict, recipe: str | None = None, require_model: bool = True) -> RunConfig:
    try:
        return load_config(config_file, overrides, recipe, require_model=require_model)
    except ConfigError as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config_file: ConfigOpt = None,
    recipe: RecipeOpt = None,
    cc_base_url: Annotated[
        str | None,
        typer.Option(
            "--cc-base-url",
            help="Common Crawl base: https://data.commoncrawl.org/, s3://commoncrawl/ (anonymous without AWS "
            "credentials), any store URL, or a local mirror folder.",
        ),
    ] = None,
    dump: Annotated[str | None, typer.Option("--dump", help="Crawl id, e.g. CC-MAIN-2024-22.")] = None,
    limit_warcs: Annotated[int | None, typer.Option("--limit-warcs", help="Only the first N WARC files.")] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Root folder for runs (out): a local path or a store URL (s3://bucket/prefix)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: the dump id).")] = None,
    workers: WorkersOpt = None,
    tasks: Annotated[int | None, typer.Option("--tasks", help="Tasks to split the WARC files into.")] = None,
    engine: EngineOpt = None,
    master: MasterOpt = None,
    spark_conf: SparkConfOpt = None,
    languages: LanguagesOpt = None,
    lang_threshold: ThresholdOpt = None,
    keep_rejected: KeepRejectedOpt = False,
    extractor: ExtractorOpt = None,
    set_values: SetOpt = None,
    max_failed_parts: Annotated[
        int | None,
        typer.Option(
            "--max-failed-parts",
            min=0,
            help="Let dedup, tokens and the report run when at most N WARC files failed (404, truncated at the "
            "source, not gzip); they are listed and the run exits 3. Default 0: a failed file stops the run.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-every",
            min=0,
            help="Commit each WARC file in chunks of N HTML pages, so a killed run resumes inside the file "
            "(default 1000, about a minute of one core; 0: once per file).",
        ),
    ] = None,
    split_warcs: Annotated[
        int | None,
        typer.Option(
            "--split-warcs",
            min=1,
            help="Cut every WARC file into K byte ranges on record boundaries, one work unit each, to spread a "
            "file over K workers (default 1). Keep K when rerunning into the same run folder.",
        ),
    ] = None,
    keep_warcs: Annotated[
        bool,
        typer.Option(
            "--keep-warcs",
            help="Download each WARC file whole into the cache (OUTPUT/warc-cache; $REFINERY_SCRATCH/warc-cache when "
            "OUTPUT is a store URL; source.download_dir moves it) and keep it for later runs; "
            "default: read it by byte ranges while processing, nothing written to disk.",
        ),
    ] = False,
    sample: Annotated[
        bool, typer.Option("--sample", help="Build and serve the embedded sample crawl, and run on it.")
    ] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="After tokenizing, train a small GPT on the shards (needs torch).")
    ] = False,
    newest_dump: Annotated[
        bool,
        typer.Option(
            "--newest-dump",
            help="Run on the newest dump the source offers (Common Crawl's collinfo.json, or a mirror's newest "
            "crawl-data/ folder) instead of --dump.",
        ),
    ] = False,
    no_progress: NoProgressOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the pipeline on a dump: the WARC pass (download -> URL filter -> extraction -> language ID -> quality
    filters), dedup, token shards, optional shard validation, and the report.

        The corpus goes to `OUTPUT/NAME/dedup/documents/part-*.parquet` (one part per WARC file), token shards to
    OUTPUT/NAME/tokens, the report to OUTPUT/NAME/report/index.html. Rerunning the same
    command resumes: finished parts are skipped, half-written ones are redone. One run per output folder:
    a second run on it is refused while the first lives. OUTPUT may be a store URL (s3://bucket/runs: credentials
    from `AWS_*` variables, ~/.aws or storage_options in --config); temporary files then go to $REFINERY_SCRATCH
    (else the system temp folder).

    Exit codes: 0 done; 1 failed (some WARC files failed: rerun to retry them); 2 bad configuration;
    3 completed with failures (at most --max-failed-parts WARC files failed; the rest went through every pass).

    Examples:

    * `refinery run --sample`

    * `refinery run --dump CC-MAIN-2024-22 --limit-warcs 2 --workers 2`

    * `refinery run --config run.yaml --keep-rejected`

    * `refinery run --dump CC-MAIN-2024-22 --recipe dclm-like --set quality_classifier.model=dclm.bin` (recipe,
    then --config, then flags)

    * `refinery run --dump CC-MAIN-2024-22 --limit-warcs 1 --split-warcs 8 --workers 8` (one file, 8 cores)

    * `refinery run --sample --engine spark` (Spark in this process, local[*])

    * `refinery run --dump CC-MAIN-2024-22 --master spark://head:7077 --output /shared/out` (see infra/README.md)
    """
    setup_logging(verbose)
    flags = overrides(
        **{
            "source.cc_base_url": cc_base_url,
            "source.dump": dump,
            "source.limit_warcs": limit_warcs,
            "output_dir": output,
            "name": name,
            "engine.tasks": tasks,
            "validate_shards": True if validate else None,
            "max_failed_parts": max_failed_parts,
            "source.checkpoint_every": checkpoint_every,
            "source.split_warcs": split_warcs,
            "source.keep_warcs": True if keep_warcs else None,
            "extraction.backend": extractor,
        }
    )
    shared = common_flags(workers=workers, engine=engine, master=master, spark_conf=spark_conf,
                          keep_rejected=keep_rejected, languages=languages, lang_threshold=lang_threshold)  # fmt: skip
    flags.update(shared)
    flags.update(parse_sets(set_values))
    config = _load(config_file, flags, recipe)
    from pipeline.app.run import run_pipeline, sample_conflict, sample_source, with_newest_dump

    if sample and (problem := sample_conflict(config, newest_dump)):
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_USAGE)
    from filters.decontaminate import BenchmarkError
    from filters.quality_classifier import ClassifierModelError

    usage = (ClassifierModelError, BenchmarkError)  # a bad model or benchmark file: what to fix, exit 2
    with contextlib.ExitStack() as stack, errors("running the pipeline", verbose, usage=usage):
        if sample:
            config = stack.enter_context(sample_source(config, newest_dump=newest_dump))
            typer.echo(f"serving the sample crawl at {config.source.cc_base_url}", err=True)
        elif newest_dump:
            config = with_newest_dump(config)
        if newest_dump:
            typer.echo(f"newest dump: {config.source.dump}", err=True)
        summary = run_pipeline(config, progress=not no_progress)
        verdict = _validation_verdict(summary.run_dir) if config.validate_shards else None
    typer.echo(format_funnel(summary.stats))
    typer.echo(f"\ndocuments: {summary.documents_dir} ({summary.stats.docs_out:,} documents)")
    if summary.tokens_dir is not None:
        typer.echo(f"tokens:    {summary.tokens_dir} (inspect: refinery shards inspect {summary.tokens_dir})")
    if verdict is not None:
        typer.echo(f"validate:  {summary.run_dir / 'validation' / 'validation.json'} (verdict: {verdict})")
    if summary.report_path is not None:
        typer.echo(f"report:    {summary.report_path}")
    typer.echo(f"stats:     {summary.run_dir}/**/stats (one JSON per part and pass)")
    if config.keep_rejected:
        typer.echo(f"rejected:  {summary.run_dir}/**/rejected (dropped documents with stage and rule)")
    for warning in summary.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if summary.failed:
        typer.secho(
            f"completed with failures: {len(summary.failed)} WARC file(s) failed and are not in the output "
            f"(max_failed_parts {config.max_failed_parts}); rerun the same command to retry them:",
            fg=typer.colors.RED,
            err=True,
        )
        for path, error in summary.failed.items():
            typer.secho(f"  {path}: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_COMPLETED_WITH_FAILURES)


def _validation_verdict(run_dir: Location) -> str | None:
    """The shard validation's verdict, if it ran."""
    try:
        return json.loads(read_bytes(run_dir / "validation" / "validation.json")).get("verdict", "?")
    except FileNotFoundError:
        return None


@app.command()
def stage(
    name: Annotated[
        str,
        typer.Argument(
            help="Stage to run: url_filter, prescreen (language pre-screen), extract, langid, or a quality filter "
            "(gopher_repetition, gopher_quality, "
            "c4, fineweb_quality, or one registered by a plugin), quality_classifier (fastText model score; needs "
            "quality_classifier.model in the config), decontaminate (benchmark n-grams; needs "
            "decontaminate.benchmarks in the config), or pii (email and IP anonymisation)."
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input", "-i", help="WARC or Parquet file, or a folder of them, local or a store URL (repeatable)."
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output folder (documents/, stats/, rejected/), local or a store URL.")
    ],
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most N documents per input file.")] = None,
    config_file: ConfigOpt = None,
    languages: LanguagesOpt = None,
    lang_threshold: ThresholdOpt = None,
    workers: WorkersOpt = None,
    engine: EngineOpt = None,
    master: MasterOpt = None,
    spark_conf: SparkConfOpt = None,
    keep_rejected: KeepRejectedOpt = False,
    extractor: ExtractorOpt = None,
    set_values: SetOpt = None,
    no_progress: NoProgressOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run one stage on a few files (local or on a store), for tuning on samples; prints the funnel and drop reasons.

        WARC input is read into records first (and extracted first for stages that need text); Parquet input
    must hold documents (e.g. a previous run's documents/ folder).

    Examples:

    * `refinery stage extract -i sample.warc.gz -o /tmp/extracted --limit 1000`

    * `refinery stage extract -i sample.warc.gz -o /tmp/resiliparse --extractor resiliparse`

    * `refinery stage langid -i /tmp/extracted/documents -o /tmp/lang --languages en,de --keep-rejected`

    * `refinery stage c4 -i s3://bucket/runs/a/documents/ -o s3://bucket/tuning/c4` (inputs and output on a store)
    """
    setup_logging(verbose)
    flags = common_flags(workers=workers, engine=engine, master=master, spark_conf=spark_conf,
                         keep_rejected=keep_rejected, languages=languages, lang_threshold=lang_threshold)  # fmt: skip
    flags.update(overrides(**{"extraction.backend": extractor}))
    flags.update(parse_sets(set_values))
    config = _load(config_file, flags)
    from pipeline.app.stagerun import run_stage
    from pipeline.core.parts import total_stats

    with errors(f"running stage {name} into {output}", verbose, usage=(ValueError, FileNotFoundError)):
        check_writable(output)
        run_stage(name, inputs, output, config, limit=limit, progress=not no_progress)
        stats = total_stats(output)
    typer.echo(format_funnel(stats))
    typer.echo(f"\ndocuments: {location(output) / 'documents'} ({stats.docs_out:,} documents)")
    if config.keep_rejected:
        typer.echo(f"rejected:  {location(output) / 'rejected'}")


@app.command()
def dedup(
    input_dir: Annotated[
        str, typer.Argument(help="A pass's output folder (documents/ + markers/), e.g. out/sample or s3://b/run.")
    ],
    output_dir: Annotated[
        str, typer.Argument(help="Where the deduplicated parts go, e.g. out/sample/dedup or s3://b/run/dedup.")
    ],
    config_file: ConfigOpt = None,
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            help="dump (FineWeb) or run: where duplicates are looked for (default: --config's dedup.scope, else dump).",
        ),
    ] = None,
    no_exact: Annotated[bool, typer.Option("--no-exact", help="Skip exact (normalised text) dedup.")] = False,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Target Jaccard; picks bands x rows for it (default 14 x 8).")
    ] = None,
    workers: WorkersOpt = None,
    engine: EngineOpt = None,
    master: MasterOpt = None,
    spark_conf: SparkConfOpt = None,
    keep_rejected: KeepRejectedOpt = False,
    no_progress: NoProgressOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Exact + MinHash near-duplicate dedup of a pass's documents, as its own resumable pass.

    Keeps the document with the smallest id in each cluster (independent of input order and workers),
    and writes dup_cluster_id / dup_cluster_size and dedup_clusters.json. INPUT and OUTPUT may be store URLs
    (s3://...): credentials and endpoint from the AWS_* variables (AWS_ENDPOINT_URL), ~/.aws, or the
    storage_options of a run config given with --config (whose dedup section is the starting point the flags
    here change).
    """
    setup_logging(verbose)
    from pipeline.core.parts import total_stats
    from pipeline.dedup.config import DedupConfig, MinHashConfig
    from pipeline.dedup.dedup_pass import run_dedup

    flags = common_flags(workers=workers, engine=engine, master=master, spark_conf=spark_conf)
    run_config = _load(config_file, flags, require_model=False)  # dedup runs no classifier
    try:
        settings = run_config.dedup.model_dump()
        if scope is not None:
            settings["scope"] = scope
        if no_exact:
            settings["exact"] = False
        if threshold is not None:  # bands x rows and the verification; the config's shingles and seed stay
            tuned = MinHashConfig.for_threshold(threshold)
            settings["minhash"].update(bands=tuned.bands, rows=tuned.rows, verify_threshold=tuned.verify_threshold)
        config = DedupConfig.model_validate(settings)
    except ValueError as e:
        message = format_validation_error(e) if isinstance(e, ValidationError) else str(e)
        typer.secho(f"error: {message.replace('invalid configuration: ', 'dedup.')}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    from pipeline.engines import make_engine

    with errors(f"deduplicating into {output_dir}", verbose, usage=(ValueError, FileNotFoundError)):
        check_readable(input_dir)
        check_writable(output_dir)
        run_dedup(input_dir, output_dir, config, keep_rejected=keep_rejected,
                  engine=make_engine(run_config.engine, progress=not no_progress))  # fmt: skip
        stats = total_stats(output_dir)
    typer.echo(format_funnel(stats))
    typer.echo(f"\ndocuments: {location(output_dir) / 'documents'}")
    typer.echo(f"clusters:  {location(output_dir) / 'dedup_clusters.json'}")


@app.command(
    "validate-shards",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Check token shards and train a small GPT on them: PASS when they train (needs the train extra; "
    "--help for options).",
)
def validate_shards_cmd(ctx: typer.Context) -> None:
    from pipeline.app.shards_cli import validate_shards_main

    raise typer.Exit(validate_shards_main(ctx.args))


@app.command("sample-crawl")
def sample_crawl(
    dest: Annotated[Path, typer.Argument(help="Folder to write the mirror into.")] = Path("out/sample-crawl"),
    dump: Annotated[str, typer.Option("--dump", help="Crawl id to name the sample.")] = SAMPLE_DUMP,
    num_warcs: Annotated[int, typer.Option("--num-warcs", help="Number of WARC files.")] = 4,
) -> None:
    """Write the embedded sample crawl in Common Crawl's layout (crawl-data/<dump>/warc.paths.gz, segments).

        Real pages (news, blogs, several languages) plus planted cases: blocklisted URLs, near-duplicates,
    boilerplate-heavy pages, non-HTML records, odd charsets and a malformed record.
    """
    from pipeline.demo.samplecrawl import build_sample_crawl

    crawl = build_sample_crawl(dest, dump=dump, num_warcs=num_warcs)
    typer.echo(f"sample crawl: {crawl.root} ({len(crawl.warc_paths)} WARC files, {crawl.num_html_responses} pages)")
    typer.echo(f"serve it with: refinery serve-crawl {crawl.root}")


@app.command("serve-crawl")
def serve_crawl(
    root: Annotated[Path, typer.Argument(help="Mirror folder (holds crawl-data/).")] = Path("out/sample-crawl"),
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port (0 picks a free one).")] = 8765,
) -> None:
    """Serve a Common Crawl mirror folder over HTTP (with Range support) until Ctrl-C.

    Then: `refinery run --cc-base-url http://127.0.0.1:8765/ --dump CC-MAIN-2024-22`
    """
    from pipeline.demo.mirror import serve_forever

    setup_logging(verbose=True)
    if not (root / "crawl-data").is_dir():
        typer.secho(f"error: {root} has no crawl-data/ folder (build one with `refinery sample-crawl`)", err=True)
        raise typer.Exit(2)
    serve_forever(root, host=host, port=port)


@app.command()
def config(
    config_file: ConfigOpt = None,
    recipe: RecipeOpt = None,
    set_values: SetOpt = None,
) -> None:
    """Print the run configuration as YAML (defaults, a recipe, or a file after validation), to start a config
    file from.

        With --recipe, the recipe's full configuration (recipe, then --config, then --set). A recipe whose
    classifier has no model yet is printed with `model: null` and a note on stderr.
    """
    cfg = _load(config_file, parse_sets(set_values), recipe, require_model=False)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)
    if cfg.quality_classifier.enabled and not cfg.quality_classifier.model:
        typer.secho(
            f"note: recipe {cfg.recipe} runs only with quality_classifier.model set "
            "(--set quality_classifier.model=PATH, or in the config file)",
            fg=typer.colors.YELLOW,
            err=True,
        )


spark_app = typer.Typer(no_args_is_help=True, help="Run on a Spark cluster: package the code for spark-submit.")

SPARK_ENTRY = '''"""spark-submit entry point: the ``refinery`` command line, e.g. ``refinery_main.py run ...``."""

from pipeline.app.cli import main

main()
'''


@spark_app.command("package")
def spark_package(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the zip and the entry script.")] = Path(
        "dist"
    ),
) -> None:
    """Write the project's code as a zip (for --py-files) and the entry script, and print the spark-submit command.

        Executors import the project from the zip, so they need no copy of the source; they need its
    third-party dependencies (`pip install 'cc-refinery[spark]'` or a packed venv, see infra/README.md).
    """
    from pipeline.core.storage import write_bytes_atomic
    from pipeline.engines.spark_code import build_code_archive

    archive = build_code_archive(output)
    entry = output / "refinery_main.py"
    write_bytes_atomic(entry, SPARK_ENTRY.encode())
    typer.echo(f"code:  {archive}")
    typer.echo(f"entry: {entry}")
    typer.echo("submit with, e.g.:")
    typer.echo(
        f"  spark-submit --master spark://HOST:7077 --py-files {archive} {entry} "
        "run --engine spark --dump CC-MAIN-2024-22 --limit-warcs 8 --output /shared/out"
    )


def _mount_subcommands() -> None:
    from pipeline.app.ablate import ablate_command
    from pipeline.app.classifier_cli import classifier_app
    from pipeline.app.report_cli import report_command
    from pipeline.app.shards_cli import shards_app, tokenizer_app

    app.command("report")(report_command)
    app.command("ablate")(ablate_command)

    app.add_typer(shards_app, name="shards", help="Inspect, verify and build llm.c token shards.")
    app.add_typer(tokenizer_app, name="tokenizer", help="Tokenizer assets (offline GPT-2 / cl100k rank files).")
    app.add_typer(spark_app, name="spark")
    app.add_typer(classifier_app, name="classifier", help="Train quality classifiers (fastText, DCLM's recipe).")


_mount_subcommands()


def main() -> None:
    faulthandler.enable()  # a worker killed by SIGSEGV/SIGBUS prints where it was
    app()


if __name__ == "__main__":
    main()
