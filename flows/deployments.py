"""The deployments of the ``refinery`` and ``ablate`` flows, and two ways to run them.

* ``python -m flows.deployments serve``: register the deployments with the Prefect API in
  ``PREFECT_API_URL`` and run their flow runs in subprocesses of this process (what ``make ui`` starts).
* ``python -m flows.deployments deploy --work-pool NAME``: register them against a *process* work pool,
  for a team server where ``prefect worker start --pool NAME`` executes them (see ``infra/prefect``).

Every ``refinery`` deployment stores a complete ``RunConfig`` as its parameters, so the UI form opens filled
in with the real defaults; the ``ablate`` deployment stores its defaults and leaves the runs and the reference,
which have none, for the form to ask. The entrypoints are module paths, so any machine with the package
installed can run them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from prefect import deploy, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows.ablate_flow import ablate
from flows.refinery_flow import refinery
from pipeline.app.config import RunConfig

log = logging.getLogger(__name__)

LOCAL = "local"
SAMPLE = "sample"
WEEKLY = "weekly-newest-dump"
SPARK_CLUSTER = "spark-cluster"
ABLATE = "ablate"
SPARK_MASTER_ENV = "REFINERY_SPARK_MASTER"
"""Master URL the spark-cluster deployment's form starts with (read when the deployments are registered)."""
WEEKLY_CRON = "0 3 * * 1"
"""Mondays 03:00 (UTC): Common Crawl publishes a dump roughly monthly, so a weekly look finds each one within days."""
WEEKLY_LIMIT_WARCS = 8
"""The weekly run is a canary on the newest dump (a whole dump is ~90,000 WARC files); raise it in the form."""
EXTRA_LOGGERS = "pipeline,filters,tokenization,validation"
"""Our loggers whose records Prefect ships to the run's log in the UI."""


def _config(**overrides: Any) -> dict[str, Any]:
    """A full RunConfig (defaults from pipeline.app.config) with ``overrides``, as the deployment's JSON parameters."""
    return RunConfig.model_validate(overrides).model_dump(mode="json")


def deployment_parameters() -> dict[str, dict[str, Any]]:
    """Parameters of each deployment, by deployment name."""
    return {
        LOCAL: {"config": _config(), "sample": False, "newest_dump": False, "recipe": None},
        SAMPLE: {
            "config": _config(name="sample", keep_rejected=True),
            "sample": True,
            "newest_dump": False,
            "recipe": None,
        },
        WEEKLY: {
            "config": _config(source={"limit_warcs": WEEKLY_LIMIT_WARCS}),
            "sample": False,
            "newest_dump": True,
            "recipe": None,
        },
        SPARK_CLUSTER: {
            "config": _config(
                source={"limit_warcs": WEEKLY_LIMIT_WARCS},
                engine={"kind": "spark", "master": os.environ.get(SPARK_MASTER_ENV) or None},
            ),
            "sample": False,
            "newest_dump": False,
            "recipe": None,
        },
        # runs and reference have no default: the form asks for them (the API refuses a run without them)
        ABLATE: {
            "tokens": None,
            "seeds": 3,
            "preset": "auto",
            "device": "auto",
            "confidence": 0.95,
            "min_delta": 0.0,
            "reference_tokens": 1_000_000,
            "output": None,
        },
    }


def build_deployments(*, work_pool: str | None = None, working_dir: Path | None = None) -> list[RunnerDeployment]:
    """The deployments; ``work_pool`` set means they run on that pool's workers instead of ``serve``.

    ``working_dir`` is where a pool's workers run the flow (relative output folders resolve there); a served
    deployment runs in the serve process's folder.
    """
    params = deployment_parameters()
    common: dict[str, Any] = {
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "enforce_parameter_schema": True,
        "concurrency_limit": 1,  # two runs of one deployment would write the same output folder
        "work_pool_name": work_pool,
    }
    if work_pool is not None:
        common["job_variables"] = {"working_dir": str(Path(working_dir or Path.cwd()).resolve())}
    return [
        refinery.to_deployment(
            name=LOCAL,
            parameters=params[LOCAL],
            description="The whole pipeline on the local engine. Set the dump, the number of WARC files "
            "(source.limit_warcs), languages, thresholds and workers in the form, then Run.",
            tags=["local-engine"],
            **common,
        ),
        refinery.to_deployment(
            name=SAMPLE,
            parameters=params[SAMPLE],
            description="A small run on the embedded sample crawl, built and served on 127.0.0.1: "
            "no internet needed, done in seconds. Output: <output_dir>/sample. The crawl fixes the source: "
            "a run with another source.dump or source.cc_base_url fails and says so (use the local deployment).",
            tags=["local-engine", "sample"],
            **common,
        ),
        refinery.to_deployment(
            name=WEEKLY,
            parameters=params[WEEKLY],
            cron=WEEKLY_CRON,
            description=f"Every Monday 03:00 UTC: the newest Common Crawl dump (from collinfo.json), first "
            f"{WEEKLY_LIMIT_WARCS} WARC files. Needs internet access to Common Crawl.",
            tags=["local-engine", "scheduled"],
            **common,
        ),
        refinery.to_deployment(
            name=SPARK_CLUSTER,
            parameters=params[SPARK_CLUSTER],
            description="The whole pipeline on a Spark cluster: the flow run is the Spark driver and submits "
            "every pass to engine.master (spark://host:7077, k8s://...; empty: local[*]). Spark's stage progress "
            "and failed task attempts are logged here, part progress shows as artifacts. output_dir is "
            "an object-store URL (s3://bucket/runs: the worker's AWS_* variables reach the executors with their "
            "tasks) or a filesystem the executors share (see infra/README.md).",
            tags=["spark-engine"],
            **common,
        ),
        ablate.to_deployment(
            name=ABLATE,
            parameters=params[ABLATE],
            description="Which run makes better training data: the same small GPT trained on each run's token "
            "shards (same budget, same seeds), every model scored on one reference set, a verdict per pair. Give "
            "two or more runs (run folders, token folders or store URLs) and the reference; tokens sets the budget "
            "per model. On a CUDA worker the preset auto is GPT-2 124M with the validation job's GPU settings (bf16, "
            "torch.compile, MFU in the log); elsewhere tiny, a CPU model of seconds. Needs torch on the worker "
            "(the train extra). Writes ablation.json and index.html (default RUN_A/ablations/A-vs-B).",
            tags=["training"],
            **common,
        ),
    ]


def serve_deployments(*, limit: int | None = 1, poll_s: float = 2.0) -> None:
    """Register the deployments (both flows') and execute their runs here until interrupted (Ctrl-C)."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", EXTRA_LOGGERS)  # inherited by every flow-run process
    serve(*build_deployments(), limit=limit, query_seconds=poll_s, print_starting_message=False)


def deploy_to_pool(work_pool: str, working_dir: Path | None = None) -> list[str]:
    """Register the deployments against an existing process work pool; return their ids."""
    deployments = build_deployments(work_pool=work_pool, working_dir=working_dir)
    ids = deploy(*deployments, work_pool_name=work_pool, ignore_warnings=True)
    return [str(i) for i in ids]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="register the deployments and run their flow runs in this process")
    p_serve.add_argument("--limit", type=int, default=1, help="flow runs at the same time (default 1; 0: no limit)")
    p_serve.add_argument("--poll", type=float, default=2.0, help="seconds between looks for runs to start")
    p_deploy = sub.add_parser("deploy", help="register the deployments against a process work pool")
    p_deploy.add_argument("--work-pool", required=True, help="name of an existing process work pool")
    p_deploy.add_argument(
        "--working-dir", type=Path, default=None, help="folder the workers run flows in (default: this folder)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    if args.command == "serve":
        serve_deployments(limit=args.limit or None, poll_s=args.poll)
    else:
        ids = deploy_to_pool(args.work_pool, args.working_dir)
        log.info("registered %d deployments on work pool %s", len(ids), args.work_pool)


if __name__ == "__main__":
    main()
