"""The ``refinery`` flow: the whole pipeline as Prefect tasks, one task per pass, the run's state between them.

Thin on purpose: the passes, their order and what each reads and writes are
:data:`pipeline.app.passes.PASSES`, the list ``refinery run`` loops over too; this module wraps each
enabled entry in a task (retries, live progress, logs) and publishes the results as artifacts. Resume is
the pipeline's: parts with a completion marker are skipped, so retrying a task or rerunning the flow only
redoes what is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.exceptions import ParameterTypeError
from prefect.states import Completed, State
from prefect.tasks import Task, exponential_backoff

from flows.artifacts import RunOutputs, artifact_key, publish_run_artifacts
from flows.outputs import site_from_env
from flows.progress import ProgressReporter, read_progress
from pipeline.app.config import ConfigError, RunConfig, apply_recipe
from pipeline.app.passes import Pass, RunState, enabled_passes, start_run
from pipeline.app.recipes import RECIPES, RecipeName
from pipeline.app.run import newest_dump_at, sample_conflict, sample_source
from pipeline.core.lock import output_lock
from pipeline.core.parts import document_files
from pipeline.core.stats import format_funnel
from pipeline.core.storage import Location, StorageError, absolute, check_writable, configure_storage
from pipeline.engines import make_engine
from pipeline.sources.download import DownloadError, NotGzipError

DEFAULT_CONFIG = RunConfig()
"""The form's defaults in the UI: exactly ``RunConfig``'s, the one source of defaults and descriptions."""

COMPLETED_WITH_FAILURES = "Completed with failures"
"""The final state's name when up to ``max_failed_parts`` WARC files failed (``refinery run`` exits 3)."""

PASS_RETRIES = 2
PASS_BACKOFF_S = 30.0
"""A failed pass is retried twice, after ~30 s then ~60 s; each retry redoes only the parts without a marker."""

OUR_LOGGERS = ("pipeline", "filters", "tokenization", "validation")
QUIET_LOGGERS = ("trafilatura", "htmldate", "courlan")
"""trafilatura warns for every page it discards; the funnel counts those already (as the CLI does)."""


def worth_retrying(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry what waiting can fix (network, throttling, a crashed worker), not a wrong dump or bad settings."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, ValueError | TypeError | FileNotFoundError | PermissionError | NotGzipError | StorageError):
        return False
    return not (isinstance(exc, DownloadError) and exc.status is not None and exc.status in (400, 401, 403, 404, 410))


def _task_options(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "retries": PASS_RETRIES,
        "retry_delay_seconds": exponential_backoff(PASS_BACKOFF_S),
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": worth_retrying,
        # resume is by the pipeline's part markers; a Prefect cache could skip work whose output was deleted
        "cache_policy": NO_CACHE,
        "persist_result": False,
    }


def _plan(config: RunConfig) -> RunState:
    """The WARC files this run reads (the dump's listing, cut to ``limit_warcs``)."""
    state = start_run(config)
    get_run_logger().info("%s: %d WARC files from %s", config.source.dump, len(state.warc_paths),
                          config.source.cc_base_url)  # fmt: skip
    return state


def _resolve_dump(base_url: str, timeout_s: float, storage_options: dict[str, Any] | None = None) -> str:
    return newest_dump_at(base_url, timeout_s, storage_options)


def _report_json(html: Location) -> dict[str, Any]:
    """The ``report.json`` written next to the report's ``index.html``."""
    return json.loads((html.parent / "report.json").read_text())


def _run_pass(spec: Pass, config: RunConfig, state: RunState) -> RunState:
    """Run one pass with live progress; log its start and end; return the run's state after it."""
    logger = get_run_logger()
    engine = make_engine(config.engine, progress=False)  # the flow shows progress as artifacts
    if spec.parts is None:
        logger.info("%s pass started", spec.name)
        spec.run(config, engine, state)
        logger.info("%s pass finished", spec.name)
        return state
    out_dir, parts = spec.out_dir(config), spec.parts(state)
    logger.info("%s pass started: %d inputs", spec.name, len(parts))
    key = artifact_key(config.name or config.source.dump, f"{spec.name}-progress")
    with ProgressReporter(f"{spec.name} pass", out_dir, parts, key=key, logger=logger) as reporter:
        spec.run(config, engine, state)
    finished = reporter.last or read_progress(out_dir, parts)
    logger.info("%s -> %s", finished.describe(f"{spec.name} pass finished"), out_dir)
    return state


plan_task = task(_plan, **{**_task_options("plan"), "task_run_name": "plan"})
resolve_dump_task = task(_resolve_dump, **{**_task_options("newest-dump"), "task_run_name": "newest dump"})


def pass_task(spec: Pass) -> Task[..., RunState]:
    """The Prefect task of one pass (built at call time, so tests and operators can tune the retry policy)."""
    return task(_run_pass, **{**_task_options(f"{spec.name}-pass"), "task_run_name": f"{spec.name} pass"})


_FORK_HOOK_INSTALLED = False


def _forked_children_die_on_sigterm() -> None:
    """Give processes forked from the flow process the default SIGTERM action back.

    Prefect's flow engine turns SIGTERM into an exception; forked engine workers would inherit that handler,
    so a worker told to stop (SIGTERM from a scheduler or a user) would raise inside its task instead of
    ending, and could be left running.
    """
    global _FORK_HOOK_INSTALLED
    if not _FORK_HOOK_INSTALLED and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_default_sigterm)
        _FORK_HOOK_INSTALLED = True


def _default_sigterm() -> None:
    with contextlib.suppress(ValueError):  # only the main thread may set handlers; a forked child's thread is main
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def pipeline_logs_to_run() -> Iterator[None]:
    """Ship our loggers' INFO records (engine progress, Spark stages, failed attempts) to this run's log.

    Prefect does it by itself for PREFECT_LOGGING_EXTRA_LOGGERS (what ``serve`` sets); otherwise an API
    handler is attached for the length of the run, so any way of starting the flow shows them.
    """
    from prefect.logging.handlers import APILogHandler

    added: list[tuple[logging.Logger, logging.Handler]] = []
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            logger.addHandler(handler)
            added.append((logger, handler))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, handler in added:
            logger.removeHandler(handler)


def _checked_parameters(config: Any, sample: Any, newest_dump: Any, recipe: Any = None) -> tuple[RunConfig, bool, bool]:
    """The parameters validated as Prefect would (``validate_parameters=False`` on the flow), plus sample rules;
    the config with the recipe applied under it.

    Validating here, inside the run, lets the error go to the run's log; Prefect's own validation fails
    the run before it has a logger, so the Logs tab stayed empty.
    """
    given = {"config": config, "sample": sample, "newest_dump": newest_dump, "recipe": recipe}
    params = refinery.validate_parameters(given)
    config, sample, newest_dump = params["config"], params["sample"], params["newest_dump"]
    if params.get("recipe"):
        config = apply_recipe(config, params["recipe"])
    problem = sample_conflict(config, newest_dump) if sample else None
    if problem is not None:
        raise ConfigError(problem)
    return config, sample, newest_dump


@flow(
    name="refinery",
    description="Common Crawl -> clean documents (Parquet), llm.c token shards and a dataset report. Passes: "
    "WARC (download, URL filter, extraction, language ID, quality filters), dedup, tokenization, then the report.",
    validate_parameters=False,  # validated in the run by _checked_parameters, so errors reach the run's log
)
def refinery(
    config: RunConfig = DEFAULT_CONFIG,
    sample: bool = False,
    newest_dump: bool = False,
    recipe: RecipeName | None = None,
) -> dict[str, Any]:
    """Run the pipeline; rerunning with the same settings resumes (finished parts are skipped).

    Args:
        config: The run configuration: source dump and mirror, filters, language ID, engine, output folder.
        sample: Build and serve the embedded sample crawl on 127.0.0.1 and run on it (in place of the source's
            base URL and dump, which must keep their defaults; the run is named "sample" unless a name is given).
        newest_dump: Replace the configured dump with the newest one the source offers (Common Crawl's
            collinfo.json, or the newest crawl-data/ folder of a mirror).
        recipe: Start from a preset: fineweb (the default chain), fineweb-edu-like (plus the quality classifier;
            set config.quality_classifier.model), dclm-like (resiliparse extraction and DCLM's classifier threshold;
            set config.quality_classifier.model). The fields changed in config from their defaults keep their
            values, the others take the recipe's.
    """
    logger = get_run_logger()
    try:
        config, sample, newest_dump = _checked_parameters(config, sample, newest_dump, recipe)
    except (ParameterTypeError, ConfigError) as e:
        logger.error("nothing was run: %s", e)
        raise
    _forked_children_die_on_sigterm()
    with contextlib.ExitStack() as stack:
        stack.enter_context(pipeline_logs_to_run())
        if sample:
            config = stack.enter_context(sample_source(config, newest_dump=newest_dump))
        elif newest_dump:
            dump = resolve_dump_task(config.source.cc_base_url, config.source.timeout_s, config.source.storage_options)
            config = config.model_copy(update={"source": config.source.model_copy(update={"dump": dump})})
        run_name = config.name or config.source.dump
        logger.info("run %s -> %s", run_name, absolute(config.run_dir))
        configure_storage(config.storage_options)
        check_writable(config.run_dir)
        stack.enter_context(output_lock(config.run_dir, "flow run"))
        state = plan_task(config)
        for spec in enabled_passes(config):
            state = pass_task(spec)(spec, config, state)
    stats = state.stats()
    site = site_from_env()
    report = absolute(state.report_path) if state.report_path is not None else None
    if report is not None:
        url = site.url_for(report) if site is not None else None
        logger.info("report: %s", f"{url} ({report})" if url else report)
    result = RunOutputs(
        run_dir=absolute(config.run_dir),
        documents_dir=absolute(state.documents_dir),
        documents=[absolute(p) for p in document_files(state.documents_dir)],
        tokens=absolute(state.tokens_dir) if state.tokens_dir is not None else None,
        report=report,
    )
    report_json = _report_json(report) if report is not None else None
    publish_run_artifacts(run_name, result, stats, report_json, site)
    for warning in state.warnings:
        logger.warning("%s", warning)
    logger.info("run %s finished: %d documents\n%s", run_name, stats.docs_out, format_funnel(stats))
    if state.failed:  # as `refinery run` exits 3: every pass ran, without these files
        failed = "\n".join(f"  {path}: {error}" for path, error in state.failed.items())
        message = f"completed with failures: {len(state.failed)} WARC file(s) are not in the output"
        logger.warning("%s:\n%s", message, failed)
        return Completed(name=COMPLETED_WITH_FAILURES, message=message, data=result.to_json())
    return result.to_json()


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.refinery_flow``: one run of the flow; without PREFECT_API_URL Prefect runs it ephemerally."""
    import argparse

    from pipeline.app.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m flows.refinery_flow", description=main.__doc__)
    parser.add_argument("--config", "-c", help="YAML run config, a path or a store URL (see `refinery config`)")
    parser.add_argument("--output", "-o", help="root folder for runs (config output_dir)")
    parser.add_argument("--sample", action="store_true", help="run on the embedded sample crawl")
    parser.add_argument("--newest-dump", action="store_true", help="use the newest dump the source offers")
    parser.add_argument("--recipe", choices=RECIPES, help="start from a preset (then --config, then --output)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, {"output_dir": args.output} if args.output else None, args.recipe)
        check_writable(config.output_dir)  # a bad location is one line and exit 2, before Prefect starts
    except ConfigError as e:
        parser.error(str(e))
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = refinery(config=config, sample=args.sample, newest_dump=args.newest_dump, return_state=True)
    if not state.is_completed():
        return 1
    return 3 if state.name == COMPLETED_WITH_FAILURES else 0


if __name__ == "__main__":
    raise SystemExit(main())
