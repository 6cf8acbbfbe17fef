"""What a finished run shows in the Prefect UI: the funnel, drop reasons per rule, output paths, the report link.

The row builders are plain functions over :class:`pipeline.stats.PartStats` (tested without Prefect);
``publish_run_artifacts`` turns them into Prefect artifacts keyed by run name, so the Artifacts page
keeps one history per run name.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from pipeline.stats import PartStats


@dataclass(frozen=True)
class RunOutputs:
    """Where a run's results are, as the flow returns them (paths, never data)."""

    run_dir: Path
    documents_dir: Path
    documents: list[Path]
    tokens: Path | None = None
    report: Path | None = None

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


def outputs_markdown(outputs: RunOutputs, stats: PartStats) -> str:
    """Where everything is, with totals, as Markdown."""
    run_dir = outputs.run_dir.resolve()
    documents = outputs.documents_dir.resolve() / "documents"
    size = sum(p.stat().st_size for p in outputs.documents if p.exists())
    lines = [
        f"## Run `{run_dir.name}`",
        "",
        "| what | where |",
        "|---|---|",
        f"| documents | `{documents}` ({len(outputs.documents)} parts, {stats.docs_out:,} documents, "
        f"{size / 1e6:.1f} MB) |",
    ]
    if outputs.tokens is not None:
        lines.append(f"| token shards | `{outputs.tokens.resolve()}` (`refinery shards inspect` it) |")
    if outputs.report is not None:
        lines.append(f"| report | `{outputs.report.resolve()}` |")
    lines.append(f"| stats per part and pass | `{run_dir}/**/stats` |")
    rejected = sorted(str(p) for p in (run_dir, outputs.documents_dir.resolve()) if (p / "rejected").is_dir())
    if rejected:
        lines.append("| dropped documents | " + ", ".join(f"`{p}/rejected`" for p in dict.fromkeys(rejected)) + " |")
    lines.append(f"| configuration | `{run_dir / 'config.yaml'}` |")
    lines += ["", "Read the documents with pyarrow, DuckDB, Spark or Hugging Face `datasets`:", ""]
    lines.append(f"```python\nimport duckdb\nduckdb.sql(\"select count(*) from '{documents}/*.parquet'\")\n```")
    return "\n".join(lines)


def publish_run_artifacts(run_name: str, outputs: RunOutputs, stats: PartStats) -> dict[str, str]:
    """Create the end-of-run artifacts; return their keys by kind."""
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
        outputs_markdown(outputs, stats), key=keys["outputs"], description=f"Output paths of run {run_name}."
    )
    if outputs.report is not None:
        keys["report"] = artifact_key(run_name, "report")
        create_link_artifact(
            outputs.report.resolve().as_uri(),
            link_text=f"dataset report of {run_name}",
            key=keys["report"],
            description="The HTML dataset report (open it from the machine that holds the output).",
        )
    return keys
