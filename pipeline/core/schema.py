"""The one document schema, carried through every stage.

Stages add columns by filling the nullable ones below; nothing is ever renamed.
HTML only exists in RAW_SCHEMA, the batch the WARC reader hands to extraction.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

DROP_REASON = "drop_reason"
"""Column a filter stage sets per row: null keeps the row, a rule name drops it."""

_COMMON_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("dump", pa.string()),
    pa.field("warc_path", pa.string()),
    pa.field("warc_date", pa.timestamp("ms", tz="UTC")),
]

RAW_SCHEMA = pa.schema([*_COMMON_FIELDS, pa.field("html", pa.large_string())])
"""What the WARC reader yields: decoded HTML plus record metadata."""

DOCUMENT_SCHEMA = pa.schema(
    [
        *_COMMON_FIELDS,
        pa.field("text", pa.large_string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("dup_cluster_id", pa.string()),
        pa.field("dup_cluster_size", pa.int32()),
        pa.field("quality_score", pa.float64()),  # the quality classifier's score, kept to re-threshold later
    ]
)
"""Every documents/part-*.parquet file has exactly this schema."""

REJECTED_SCHEMA = pa.schema([*DOCUMENT_SCHEMA, pa.field("drop_stage", pa.string()), pa.field(DROP_REASON, pa.string())])
"""Rows kept for inspection with --keep-rejected: the document plus the stage and rule that dropped it."""


def document_id(warc_record_id: str) -> str:
    """Stable document id from the WARC-Record-ID (``<urn:uuid:...>``).

    The record id is unique per crawl; we keep the bare uuid when it is one, else a sha1 of the raw id,
    so ids are short, URL-safe and identical across reruns and engines.
    """
    rid = warc_record_id.strip().strip("<>")
    if rid.startswith("urn:uuid:") and len(rid) == 45:
        return rid[9:]
    return hashlib.sha1(rid.encode("utf-8", "surrogatepass")).hexdigest()


def conform(table: pa.Table, schema: pa.Schema = DOCUMENT_SCHEMA) -> pa.Table:
    """Project a table onto ``schema``: order columns, add missing ones as nulls, drop extras, cast types."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = column.cast(field.type)
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def empty(schema: pa.Schema = DOCUMENT_SCHEMA) -> pa.Table:
    return schema.empty_table()
