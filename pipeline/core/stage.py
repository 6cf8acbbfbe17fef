"""The stage contract: a named, configured, pure ``pyarrow.Table -> pyarrow.Table`` transformation.

A stage never does I/O and holds no global state, so every engine can run every stage on any batch.
A filter stage does not remove rows itself: it sets the ``drop_reason`` column to a bare rule name
(``"too_large"``) or null, and :func:`run_chain` splits kept from dropped rows and counts drops per
``"<stage>:<rule>"``. That keeps the
decision and its reason together, and lets ``--keep-rejected`` write dropped rows for inspection.

A stage that counts something per row (replacements, say) declares ``count_columns: {column: counter}``
and returns those columns as integers: :func:`run_chain` sums them into the stage's ``counts`` under
``"<stage>:<counter>"`` and removes them, so counting stays as pure as dropping.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.profile import stage_signal_histograms
from pipeline.core.schema import DROP_REASON
from pipeline.core.stats import SAMPLES_PER_RULE, PartStats, StageStats


@runtime_checkable
class Stage(Protocol):
    """Anything with a ``name`` that maps a batch of documents to a batch of documents."""

    name: str

    def __call__(self, table: pa.Table) -> pa.Table: ...


def with_drop_reasons(table: pa.Table, reasons: Sequence[str | None] | pa.Array) -> pa.Table:
    """Return ``table`` with its ``drop_reason`` column set to ``reasons`` (null = keep)."""
    array = reasons if isinstance(reasons, pa.Array | pa.ChunkedArray) else pa.array(reasons, pa.string())
    if DROP_REASON in table.column_names:
        return table.set_column(table.column_names.index(DROP_REASON), DROP_REASON, array)
    return table.append_column(DROP_REASON, array)


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of the text a batch carries (``text`` once extracted, ``html`` before)."""
    for column in ("text", "html"):
        if column in table.column_names and table.num_rows:
            return int(pc.sum(pc.binary_length(table.column(column))).as_py() or 0)
    return 0


def split_dropped(table: pa.Table, stage_name: str) -> tuple[pa.Table, pa.Table | None]:
    """Split a stage's output into kept rows (no drop column) and dropped rows (with ``drop_stage``)."""
    if DROP_REASON not in table.column_names:
        return table, None
    reasons = table.column(DROP_REASON)
    dropped_mask = pc.is_valid(reasons)
    kept = table.filter(pc.invert(dropped_mask)).drop_columns([DROP_REASON])
    if kept.num_rows == table.num_rows:
        return kept, None
    dropped = table.filter(dropped_mask)
    dropped = dropped.append_column("drop_stage", pa.array([stage_name] * dropped.num_rows, pa.string()))
    return kept, dropped


def run_chain(stages: Sequence[Stage], table: pa.Table, stats: PartStats) -> tuple[pa.Table, list[pa.Table]]:
    """Run ``stages`` in order on one batch, updating ``stats``; return kept rows and dropped batches."""
    rejected: list[pa.Table] = []
    for stage in stages:
        stage_stats = stats.stage(stage.name)
        stage_stats.docs_in += table.num_rows
        stage_stats.bytes_in += text_bytes(table)
        if table.num_rows == 0:
            continue
        start = time.perf_counter()
        measured = None
        if callable(with_signals := getattr(stage, "filter_with_signals", None)):  # decides and measures at once
            out, measured = with_signals(table)
        else:
            out = stage(table)
        stage_stats.seconds += time.perf_counter() - start
        # quality signals over every row the stage judged, kept and dropped, with its thresholds (report)
        stats.profile.add_signals(stage_signal_histograms(stage, table, out, measured))
        out = _take_counts(stage, out, stage_stats)
        table, dropped = split_dropped(out, stage.name)
        if dropped is not None:
            counts = pc.value_counts(dropped.column(DROP_REASON)).to_pylist()
            for item in counts:
                stage_stats.drops[f"{stage.name}:{item['values']}"] += item["counts"]
            _sample_dropped(stage_stats, stage.name, dropped)
            rejected.append(dropped)
        stage_stats.docs_out += table.num_rows
        stage_stats.bytes_out += text_bytes(table)
    return table, rejected


def _take_counts(stage: Stage, out: pa.Table, stage_stats: StageStats) -> pa.Table:
    """Sum the stage's declared ``count_columns`` into its counts and drop them from the batch."""
    columns = getattr(stage, "count_columns", None)
    if not isinstance(columns, Mapping) or not columns:
        return out
    present = [c for c in columns if c in out.column_names]
    for column in present:
        stage_stats.counts[f"{stage.name}:{columns[column]}"] += int(pc.sum(out.column(column)).as_py() or 0)
    return out.drop_columns(present) if present else out


SNIPPET_CHARS = 300


def _sample_dropped(stage_stats: StageStats, stage_name: str, dropped: pa.Table) -> None:
    """Keep the first few dropped rows per rule as (id, url, snippet) in the stats, for the report."""
    for rule in pc.unique(dropped.column(DROP_REASON)).to_pylist():
        key = f"{stage_name}:{rule}"
        have = len(stage_stats.samples.get(key, []))
        if have >= SAMPLES_PER_RULE:
            continue
        rows = dropped.filter(pc.equal(dropped.column(DROP_REASON), rule)).slice(0, SAMPLES_PER_RULE - have)
        n = rows.num_rows

        def column(name: str, table: pa.Table = rows, n: int = n) -> list:
            return table.column(name).to_pylist() if name in table.column_names else [None] * n

        stage_stats.add_samples(
            key,
            [
                {"id": i or "", "url": u or "", "snippet": (t or "")[:SNIPPET_CHARS]}
                for i, u, t in zip(column("id"), column("url"), column("text"), strict=True)
            ],
        )
