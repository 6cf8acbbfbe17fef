"""``refinery report RUN_DIR [--compare RUN_B] [--open]``: write the dataset report (and a comparison).

Run folders and the output folder are local paths or store URLs (``s3://bucket/runs/a``); credentials come
from the environment (``AWS_*``, ``~/.aws``) or the ``storage_options`` of a run config (``--config``), never
from the command line. Mounted by the main CLI with ``app.command("report")(report_command)``.
"""

from __future__ import annotations

import logging
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from pipeline.app.cli_common import StoreConfigOpt, VerboseOpt, errors, setup_logging
from pipeline.app.config import ConfigError, load_config
from pipeline.core.storage import Location, is_remote, location
from pipeline.report.build import ReportConfig, ReportError, write_report

log = logging.getLogger(__name__)


def report_command(
    run_dir: Annotated[
        str, typer.Argument(help="Run folder (holds config.yaml, stats/, documents/): a path or a store URL.")
    ],
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Second run folder (path or URL): also write what changed from RUN_DIR to it, and how many "
            "documents crossed the quality classifier each way (by id, for runs made with --keep-rejected).",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Folder (path or URL) for index.html and report.json (RUN_DIR/report)."),
    ] = None,
    dedup_clusters: Annotated[
        str | None, typer.Option("--dedup-clusters", help="Cluster summary, relative to RUN_DIR.")
    ] = None,
    token_manifest: Annotated[str | None, typer.Option("--token-manifest", help="Shard manifest, relative.")] = None,
    validation: Annotated[str | None, typer.Option("--validation", help="Validation result, relative.")] = None,
    run_config: StoreConfigOpt = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write the dataset report: the funnel, drop reasons with examples, languages, lengths, domains, duplicates,
    tokens and validation, as one self-contained HTML page plus report.json.

        Built from the stats every pass writes and a few sampled documents, so it takes seconds on any run.

    Examples:

    * `refinery report out/sample --open`

    * `refinery report out/run-a --compare out/run-b`

    * `refinery report s3://bucket/runs/a --compare out/run-b` (credentials from AWS_* or ~/.aws)
    """
    setup_logging(verbose)
    overrides = {"dedup_clusters": dedup_clusters, "token_manifest": token_manifest, "validation": validation}
    config = ReportConfig(**{k: v for k, v in overrides.items() if v is not None})
    with errors(f"writing the report of {run_dir}", verbose, usage=(ReportError, ConfigError, FileNotFoundError)):
        if run_config is not None:
            load_config(run_config, require_model=False)  # installs its storage_options; no classifier here
        files = write_report(location(run_dir), config, out_dir=location(output) if output else None)
        comparison = None
        if compare is not None:
            from pipeline.report.compare import write_comparison

            comparison = write_comparison(run_dir, compare, out_dir=files.html_path.parent, config=config)
    funnel = files.report["funnel"]
    typer.echo(f"{funnel['docs_in']:,} documents in, {funnel['docs_out']:,} kept")
    for warning in files.report["warnings"]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"report: {files.html_path}")
    typer.echo(f"json:   {files.json_path}")
    page = files.html_path
    if comparison is not None:
        typer.echo(comparison.result["summary"])
        typer.echo(f"comparison: {comparison.html_path}")
        page = comparison.html_path
    if open_browser:
        _open(page)


def _open(page: Location) -> None:
    """Show the page in a browser; a page on a store has no URL a browser can open, so say how to get it."""
    if is_remote(page):
        typer.echo(f"the report is on a store: copy {page} to this machine to open it", err=True)
    elif not webbrowser.open(Path(page).resolve().as_uri()):
        typer.echo("no browser found; open the file above by hand", err=True)


def main() -> None:
    """Run the command on its own (``python -m pipeline.app.report_cli``), e.g. before it is mounted."""
    typer.run(report_command)


if __name__ == "__main__":
    main()
