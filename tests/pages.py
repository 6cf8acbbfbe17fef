"""What the extraction tests share: a raw batch of pages, and the text measures they compare by."""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa

from pipeline.core.schema import RAW_SCHEMA


def raw_table(htmls: list[str | None]) -> pa.Table:
    """A ``RAW_SCHEMA`` batch holding ``htmls`` (made-up ids and URLs)."""
    n = len(htmls)
    return pa.table(
        {
            "id": [f"doc-{i}" for i in range(n)],
            "url": [f"https://example.org/{i}" for i in range(n)],
            "domain": ["example.org"] * n,
            "dump": ["CC-MAIN-2024-22"] * n,
            "warc_path": ["x.warc.gz"] * n,
            "warc_date": [None] * n,
            "html": htmls,
        },
        schema=RAW_SCHEMA,
    )


def norm(text: str) -> str:
    """``text`` with its whitespace runs made single spaces."""
    return " ".join(text.split())


def words(text: str) -> Counter[str]:
    """Lower-cased word counts, for token precision/recall."""
    return Counter(re.findall(r"\w+", text.lower()))
