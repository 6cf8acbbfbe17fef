"""The dataset report: what a run kept, what it dropped and why, from the stats its passes wrote.

``build_report`` collects ``report.json`` (schema in ``SCHEMA.md``), ``render_html`` turns it into one
self-contained ``index.html``, ``compare_runs`` says which stage and rule changed between two runs.
"""

from __future__ import annotations

from pipeline.report.build import ReportConfig, build_report, write_report
from pipeline.report.compare import compare_runs

__all__ = ["ReportConfig", "build_report", "compare_runs", "write_report"]
