#!/usr/bin/env python
"""The local engine's WARC pass on a Slurm cluster: datatrove's ``SlurmPipelineExecutor``, one array task per WARC file.

The same units and processor as ``refinery run`` (``plan_units`` + ``WarcPass`` in datatrove's ``UnitsStep``),
so the parts, markers and stats are those of the local engine and a later ``refinery run`` with the same config
resumes from them. ``--finish`` adds a one-task job, started when the array is over, that runs the rest of the
pipeline (dedup, tokenization, report) on one node; WARC files that failed in the array are retried there first.

Run it from a login node, in the virtualenv the compute nodes use (on the shared filesystem, with the project
installed), with the run's output on that shared filesystem too:

    python infra/slurm/datatrove-local-engine.py --config run.yaml --partition cpu --time 04:00:00 --finish
    python infra/slurm/datatrove-local-engine.py --config run.yaml --partition cpu --dry-run   # print, submit nothing
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import dill
from datatrove.executor.slurm import SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from pipeline.app.config import ConfigError, RunConfig, load_config
from pipeline.app.warc import WarcPass, plan_units
from pipeline.core.parts import done_parts
from pipeline.core.storage import absolute, check_writable
from pipeline.engines.base import WorkUnit
from pipeline.engines.local import UnitsStep

log = logging.getLogger("datatrove-local-engine")


class FinishRun(PipelineStep):
    """The finishing job's step: ``run_pipeline`` skips the parts the array wrote, then dedups, tokenizes, reports."""

    name = "cc-refinery finish"
    type = "run"

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config

    def run(self, data: object = None, rank: int = 0, world_size: int = 1) -> None:
        # dill ships this class by value, without this script's globals: everything is imported here
        import logging

        from pipeline.app.run import run_pipeline
        from pipeline.core.stats import format_funnel

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        summary = run_pipeline(self.config, progress=False)
        logging.getLogger("cc-refinery").info(
            "run finished: %s (%d documents)\n%s",
            summary.documents_dir,
            summary.stats.docs_out,
            format_funnel(summary.stats),
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Submit the WARC pass of a cc-refinery run to Slurm through datatrove (one array task per "
        "WARC file), optionally followed by a job that finishes the run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="run config YAML (`refinery config` writes one)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by its dotted key, e.g. source.limit_warcs=100 (repeatable)",
    )
    parser.add_argument("--partition", required=True, help="Slurm partition")
    parser.add_argument("--time", default="04:00:00", help="time limit of each array task")
    parser.add_argument("--tasks", type=int, help="array tasks (default: one per WARC file not yet done)")
    parser.add_argument("--workers", type=int, default=-1, help="array tasks running at once (-1: no limit)")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per array task (a WARC file uses one)")
    parser.add_argument("--mem-per-cpu-gb", type=int, default=4, help="memory per CPU in GB")
    parser.add_argument("--qos", help="Slurm QOS (default: none given)")
    parser.add_argument("--job-name", default="cc-refinery-warc", help="Slurm job name of the array")
    parser.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH directive, e.g. account=myproj or constraint=cpu (repeatable)",
    )
    parser.add_argument("--max-array-size", type=int, default=1001, help="the cluster's MaxArraySize")
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(sys.prefix) if sys.prefix != sys.base_prefix else None,
        help="virtualenv the tasks activate (default: the one running this script)",
    )
    parser.add_argument("--logging-dir", type=Path, help="datatrove logs, stats, sbatch scripts (default: <run>/logs)")
    parser.add_argument("--finish", action="store_true", help="then run dedup, tokenization and report in one job")
    parser.add_argument("--finish-cpus", type=int, default=8, help="CPUs (and local workers) of the finishing job")
    parser.add_argument("--finish-time", default="12:00:00", help="time limit of the finishing job")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch scripts, submit nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    args = parser.parse_args(argv)
    if args.tasks is not None and args.tasks < 1:
        parser.error("--tasks must be >= 1")
    return args


def key_values(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b.c=2"]`` -> ``{"a": "1", "b.c": "2"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_run_config(path: Path, overrides: dict[str, str], finish_cpus: int) -> RunConfig:
    """The run's config with absolute paths (tasks start in other directories) and the local engine."""
    try:
        config = load_config(path, {**overrides, "engine.kind": "local", "engine.workers": finish_cpus})
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    config.output_dir = str(absolute(config.output_dir))  # a store URL stays as it is
    if config.source.download_dir is not None:
        config.source.download_dir = config.source.download_dir.resolve()
    base = config.source.cc_base_url
    if "://" not in base and Path(base).exists():  # a local mirror folder
        config.source.cc_base_url = str(Path(base).resolve())
    return config


def build_executors(
    args: argparse.Namespace, config: RunConfig, todo: list[WorkUnit]
) -> tuple[SlurmPipelineExecutor | None, SlurmPipelineExecutor | None]:
    """The array executor for the WARC files still to do (None if none), and the finishing one (if asked)."""
    logging_dir = args.logging_dir.resolve() if args.logging_dir else absolute(config.run_dir / "logs")
    sbatch_args: dict[str, Any] = key_values(args.sbatch_arg, "--sbatch-arg")
    common: dict[str, Any] = {
        "partition": args.partition,
        "qos": args.qos,
        "venv_path": str(args.venv / "bin" / "activate") if args.venv else None,
        "sbatch_args": sbatch_args,
        "max_array_size": args.max_array_size,
    }
    warc = None
    if todo:
        warc = SlurmPipelineExecutor(
            pipeline=[UnitsStep(todo, WarcPass(config), config.run_dir, quiet=False)],
            tasks=min(args.tasks or len(todo), len(todo)),
            workers=args.workers,
            time=args.time,
            cpus_per_task=args.cpus_per_task,
            mem_per_cpu_gb=args.mem_per_cpu_gb,
            job_name=args.job_name,
            logging_dir=str(logging_dir / "slurm-warc"),
            # resume is by our part markers: the ranks of a rerun cover only the files still to do
            skip_completed=False,
            **common,
        )
    finish = None
    if args.finish:
        finish = SlurmPipelineExecutor(
            pipeline=[FinishRun(config)],
            tasks=1,
            time=args.finish_time,
            cpus_per_task=args.finish_cpus,
            mem_per_cpu_gb=args.mem_per_cpu_gb,
            job_name=f"{args.job_name}-finish",
            logging_dir=str(logging_dir / "slurm-finish"),
            skip_completed=False,
            depends=warc,
            run_on_dependency_fail=True,  # afterany: failed WARC files are retried by the finishing job
            requeue=False,
            **common,
        )
    return warc, finish


def launch_script(executor: SlurmPipelineExecutor) -> str:
    """The sbatch script datatrove submits for ``executor`` (as in ``SlurmPipelineExecutor.launch_job``)."""
    pickled = executor.logging_dir.resolve_paths("executor.pik")
    srun_args = " ".join(f"--{k}={v}" for k, v in (executor.srun_args or {}).items())
    run = f"srun {srun_args} -l -n {executor.nodes_per_task} launch_pickled_pipeline {pickled}"
    jobs = -(-executor.tasks // executor.tasks_per_job)
    max_array = min(jobs, executor.max_array_size) if executor.max_array_size != -1 else jobs
    return executor.get_launch_file_contents(executor.get_sbatch_args(max_array), run)


def dry_run(warc: SlurmPipelineExecutor | None, finish: SlurmPipelineExecutor | None) -> None:
    for executor, how in ((warc, "--export=ALL,RUN_OFFSET=0"), (finish, "--dependency=afterany:<array job id>")):
        if executor is None:
            continue
        dill.dumps(executor)  # what launch_job pickles for the tasks: fail here, not on the cluster
        print(f"# ---- {executor.job_name}: {executor.tasks} task(s), sbatch {how} ----")
        print(launch_script(executor))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_run_config(args.config, key_values(args.overrides, "--set"), args.finish_cpus)
    units = plan_units(config)
    finished = set(done_parts(config.run_dir))  # one listing
    todo = [u for u in units if u.part not in finished]
    log.info("%s: %d WARC files, %d still to do -> %s", config.source.dump, len(units), len(todo), config.run_dir)
    warc, finish = build_executors(args, config, todo)
    if warc is None and finish is None:
        log.info("every WARC file is done; nothing to submit (--finish runs the rest of the pipeline)")
        return 0
    if args.dry_run:
        dry_run(warc, finish)
        return 0
    check_writable(config.run_dir)
    # launching the finishing job launches the array it depends on first
    (finish or warc).run()
    for executor in (warc, finish):
        if executor is not None:
            log.info(
                "%s: job %s, logs in %s", executor.job_name, executor.job_id, executor.logging_dir.resolve_paths("")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
