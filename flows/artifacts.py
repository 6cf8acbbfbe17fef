"""What a finished run shows in the Prefect UI: the funnel, drop reasons per rule, output paths, the report.

The row builders are plain functions over :class:`pipeline.core.stats.PartStats` and the report's JSON (tested
without Prefect); ``publish_run_artifacts`` turns them into Prefect artifacts keyed by run name, so the
Artifacts page keeps one history per run name. The UI opens no ``file://`` link, so the report is linked
over HTTP when ``make ui`` serves the outputs (:mod:`flows.outputs`) and named by its path otherwise; a run
on an object store is named by its store URL (which holds no credentials), never linked.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.outputs import OutputsSite
from pipeline.core.parts import DOCUMENTS, REJECTED
from pipeline.core.stats import PartStats
from pipeline.core.storage import Location, absolute, is_remote, list_files, list_names

TOP_DROPS = 5
"""Drop reasons in the report's headline (the drop-reasons artifact and the report list them all)."""


@dataclass(frozen=True)
class RunOutputs:
    """Where a run's results are, as the flow returns them (paths, never data)."""

    run_dir: Location
    documents_dir: Location
    documents: list[Location]
    tokens: Location | None = None
    report: Location | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "documents_dir": str(self.documents_dir),
            "documents": [str(p) for p in self.documents],
            "tokens": str(self.tokens) if self.tokens else None,
            "report": str(self.report) if self.report else None,
        }


def artifact_key(run_name: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for ``what`` of run ``run_name``."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-") or "run"
    return f"{slug}-{what}"


def funnel_rows(stats: PartStats) -> list[dict[str, Any]]:
    """Documents and MB in/out per stage, in pipeline order, with the share kept."""
    rows = []
    for s in stats.stages:
        rows.append(
            {
                "stage": s.name,
                "docs in": s.docs_in,
                "docs out": s.docs_out,
                "dropped": s.dropped,
                "kept %": round(100.0 * s.docs_out / s.docs_in, 1) if s.docs_in else 0.0,
                "MB in": round(s.bytes_in / 1e6, 2),
                "MB out": round(s.bytes_out / 1e6, 2),
                "seconds": round(s.seconds, 1),
            }
        )
    return rows


def source_rows(stats: PartStats) -> list[dict[str, Any]]:
    """What the WARC reader counted before the first stage (records, responses, skips by reason)."""
    return [{"counter": k, "records": v} for k, v in sorted(stats.source.items())]


def drop_rows(stats: PartStats) -> list[dict[str, Any]]:
    """One row per ``stage:rule``, most drops first, with its share of the stage's input and an example URL."""
    rows = []
    for s in stats.stages:
        for rule, count in Counter(s.drops).most_common():
            examples = s.samples.get(rule) or []
            rows.append(
                {
                    "stage": s.name,
                    "rule": rule,
                    "dropped": count,
                    "% of stage input": round(100.0 * count / s.docs_in, 1) if s.docs_in else 0.0,
                    "example": examples[0].get("url", "") if examples else "",
                }
            )
    return sorted(rows, key=lambda r: -r["dropped"])


def where(path: Location) -> str:
    """A location as shown to a user: an absolute local path, or the store URL (no credentials in it)."""
    return str(absolute(path))


def report_location(report: Location, site: OutputsSite | None) -> str:
    """The report as Markdown: a link when the outputs are served over HTTP, else its path or store URL (never
    a file:// or s3:// link, which the UI would show broken)."""
    if is_remote(report):
        return f"`{report}` (on the object store: copy it to a machine with a browser to open it)"
    url = site.url_for(report) if site is not None else None
    if url is not None:
        return f"[{url}]({url})"
    where_ = "outside the folder `make ui` serves" if site is not None else "no outputs server runs"
    return f"`{where(report)}` (open it on the machine that holds the output; {where_})"


def report_markdown(run_name: str, report: dict[str, Any], location: str) -> str:
    """The report's headline numbers (documents in/out, tokens, top drop reasons, verdict) and where it is."""
    funnel = report["funnel"]
    lines = [
        f"## Dataset report of run `{run_name}`",
        "",
        f"Report: {location}",
        "",
        "| | |",
        "|---|---:|",
        f"| documents in | {funnel['docs_in']:,} |",
        f"| documents out | {funnel['docs_out']:,} |",
        f"| tokens | {_tokens_text(report)} |",
    ]
    verdict = _verdict_text(report)
    if verdict is not None:
        lines.append(f"| validation verdict | {verdict} |")
    drops = report.get("drops") or []
    if drops:
        lines += ["", f"Top drop reasons (of {len(drops)}):", ""]
        lines += ["| rule | dropped | % of stage input |", "|---|---:|---:|"]
        for d in drops[:TOP_DROPS]:
            lines.append(f"| {d['key']} | {d['count']:,} | {100.0 * (d['share_of_stage_input'] or 0.0):.1f} |")
    return "\n".join(lines)


def _tokens_text(report: dict[str, Any]) -> str:
    """Tokens in the shards when the run tokenized, else the report's estimate, else why there is none."""
    tokens = report.get("tokens")
    if tokens and not tokens.get("error"):
        return f"{tokens['totals']['num_tokens']:,} (in the token shards)"
    estimate = report["funnel"].get("tokens_out")
    return f"~{estimate:,} (estimated, not tokenized)" if estimate else "not tokenized"


def _verdict_text(report: dict[str, Any]) -> str | None:
    validation = report.get("validation")
    if not validation or validation.get("error") or validation.get("verdict") is None:
        return None
    reason = f" ({validation['reason']})" if validation.get("reason") else ""
    return f"{validation['verdict']}{reason}"


def outputs_markdown(outputs: RunOutputs, stats: PartStats, site: OutputsSite | None = None) -> str:
    """Where everything is, with totals, as Markdown (one folder listing each, wherever the run is)."""
    run_dir = where(outputs.run_dir).rstrip("/")
    documents = f"{where(outputs.documents_dir).rstrip('/')}/{DOCUMENTS}"
    sizes = list_files(outputs.documents_dir / DOCUMENTS)
    size = sum(sizes[p.name].size for p in outputs.documents if p.name in sizes)
    lines = [
        f"## Run `{outputs.run_dir.name}`",
        "",
        "| what | where |",
        "|---|---|",
        f"| documents | `{documents}` ({len(outputs.documents)} parts, {stats.docs_out:,} documents, "
        f"{size / 1e6:.1f} MB) |",
    ]
    if outputs.tokens is not None:
        lines.append(f"| token shards | `{where(outputs.tokens)}` (`refinery shards inspect` it) |")
    if outputs.report is not None:
        lines.append(f"| report | {report_location(outputs.report, site)} |")
    lines.append(f"| stats per part and pass | `{run_dir}/**/stats` |")
    folders = (outputs.run_dir, outputs.documents_dir)
    rejected = sorted({where(p).rstrip("/") for p in folders if REJECTED in list_names(p)})
    if rejected:
        lines.append("| dropped documents | " + ", ".join(f"`{p}/{REJECTED}`" for p in rejected) + " |")
    lines.append(f"| configuration | `{run_dir}/config.yaml` |")
    lines += ["", "Read the documents with pyarrow, DuckDB, Spark or Hugging Face `datasets`:", ""]
    lines.append(f"```python\nimport duckdb\nduckdb.sql(\"select count(*) from '{documents}/*.parquet'\")\n```")
    return "\n".join(lines)


def publish_run_artifacts(
    run_name: str,
    outputs: RunOutputs,
    stats: PartStats,
    report: dict[str, Any] | None = None,
    site: OutputsSite | None = None,
) -> dict[str, str]:
    """Create the end-of-run artifacts; return their keys by kind.

    ``report`` is the report's JSON (its headline becomes an artifact); ``site`` serves the outputs over HTTP.
    """
    keys = {
        "funnel": artifact_key(run_name, "funnel"),
        "drops": artifact_key(run_name, "drop-reasons"),
        "source": artifact_key(run_name, "source"),
        "outputs": artifact_key(run_name, "outputs"),
    }
    create_table_artifact(
        funnel_rows(stats),
        key=keys["funnel"],
        description=f"Funnel of run {run_name}: documents in and out of each stage ({stats.docs_out:,} kept).",
    )
    create_table_artifact(
        drop_rows(stats) or [{"stage": "-", "rule": "(nothing dropped)", "dropped": 0}],
        key=keys["drops"],
        description=f"Why documents were dropped in run {run_name}, per stage:rule, with an example URL.",
    )
    create_table_artifact(
        source_rows(stats) or [{"counter": "(no records read)", "records": 0}],
        key=keys["source"],
        description=f"WARC records of run {run_name} before the first stage, and why some were skipped.",
    )
    create_markdown_artifact(
        outputs_markdown(outputs, stats, site), key=keys["outputs"], description=f"Output paths of run {run_name}."
    )
    if outputs.report is not None and report is not None:
        keys["report"] = artifact_key(run_name, "report")
        create_markdown_artifact(
            report_markdown(run_name, report, report_location(outputs.report, site)),
            key=keys["report"],
            description=f"Headline numbers of run {run_name} and where its HTML dataset report is.",
        )
    url = site.url_for(outputs.report) if site is not None and outputs.report is not None else None
    if url is not None:
        keys["report-link"] = artifact_key(run_name, "report-link")
        create_link_artifact(
            url,
            link_text=f"dataset report of {run_name}",
            key=keys["report-link"],
            description="The HTML dataset report, served by `make ui` next to the Prefect server.",
        )
    return keys
