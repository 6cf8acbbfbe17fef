"""Schema, stage contract, stats and atomic part files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.app.config import ConfigError, load_config
from pipeline.core.parts import PartWriter, done_parts, read_documents, total_stats
from pipeline.core.schema import DOCUMENT_SCHEMA, REJECTED_SCHEMA, conform, document_id
from pipeline.core.stage import run_chain, with_drop_reasons
from pipeline.core.stats import PartStats, format_funnel


def _docs(texts: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": [f"id{i}" for i in range(len(texts))],
            "url": [f"https://example.org/{i}" for i in range(len(texts))],
            "text": texts,
        }
    )


class ShortFilter:
    name = "short"

    def __call__(self, table: pa.Table) -> pa.Table:
        return with_drop_reasons(table, ["too_short" if len(t) < 5 else None for t in table.column("text").to_pylist()])


class NoDigits:
    name = "digits"

    def __call__(self, table: pa.Table) -> pa.Table:
        return with_drop_reasons(
            table, ["has_digit" if any(c.isdigit() for c in t) else None for t in table["text"].to_pylist()]
        )


def test_document_id_is_stable_and_short() -> None:
    rid = "<urn:uuid:3f4c1a9e-0c2b-4f6e-9a51-9d7c1c2b7f10>"
    assert document_id(rid) == "3f4c1a9e-0c2b-4f6e-9a51-9d7c1c2b7f10"
    odd = document_id("<urn:x-weird:123>")
    assert odd == document_id("<urn:x-weird:123>") and len(odd) == 40


def test_run_chain_counts_and_keeps_rejected() -> None:
    stats = PartStats("p")
    kept, rejected = run_chain(
        [ShortFilter(), NoDigits()], _docs(["hello world", "hi", "year 2024 text", "fine text"]), stats
    )
    assert kept.column("text").to_pylist() == ["hello world", "fine text"]
    assert "drop_reason" not in kept.column_names
    short, digits = stats.stages
    assert (short.docs_in, short.docs_out, short.drops) == (4, 3, Counter({"short:too_short": 1}))
    assert (digits.docs_in, digits.docs_out, digits.drops) == (3, 2, Counter({"digits:has_digit": 1}))
    assert [r.column("drop_stage").to_pylist() for r in rejected] == [["short"], ["digits"]]
    assert rejected[1].column("text").to_pylist() == ["year 2024 text"]
    assert "short:too_short" in format_funnel(stats)


def test_part_writer_is_atomic_and_readable_without_project_code(tmp_path: Path) -> None:
    stats = PartStats("part-00000")
    kept, rejected = run_chain([ShortFilter()], _docs(["a long enough text", "no"]), stats)
    with PartWriter(tmp_path, "part-00000", keep_rejected=True) as w:
        w.write(kept, rejected)
        assert not list((tmp_path / "documents").glob("*.parquet"))  # nothing visible before commit
        w.commit(stats)
    assert done_parts(tmp_path) == ["part-00000"]
    assert pq.read_schema(tmp_path / "documents/part-00000.parquet") == DOCUMENT_SCHEMA
    assert pq.read_schema(tmp_path / "rejected/part-00000.parquet") == REJECTED_SCHEMA
    rows = duckdb.sql(f"select id, text from read_parquet('{tmp_path}/documents/*.parquet')").fetchall()
    assert rows == [("id0", "a long enough text")]
    assert json.loads((tmp_path / "stats/part-00000.json").read_text())["docs_out"] == 1
    assert total_stats(tmp_path).stage("short").drops["short:too_short"] == 1


def test_part_writer_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), PartWriter(tmp_path, "part-00001") as w:
        w.write(_docs(["some text here"]))
        raise RuntimeError("killed mid-part")
    assert done_parts(tmp_path) == []
    assert list(tmp_path.rglob("*part-00001*")) == []
    assert read_documents(tmp_path).num_rows == 0


def test_rerun_replaces_half_written_part(tmp_path: Path) -> None:
    docs = tmp_path / "documents"
    docs.mkdir()
    (docs / ".part-00000.parquet.123.tmp").write_bytes(b"half")
    (docs / "part-00000.parquet").write_bytes(b"not a parquet file: written but never marked done")
    with PartWriter(tmp_path, "part-00000") as w:
        w.write(_docs(["the real content"]))
        w.commit(PartStats("part-00000"))
    assert read_documents(tmp_path).column("text").to_pylist() == ["the real content"]
    assert not list(docs.glob(".*"))


def test_conform_orders_and_fills_columns() -> None:
    table = conform(pa.table({"text": ["x"], "id": ["a"], "extra": [1]}))
    assert table.schema == DOCUMENT_SCHEMA
    assert table.column("language").to_pylist() == [None]


def test_config_yaml_and_clear_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("source:\n  dump: CC-MAIN-2023-50\n  limit_warcs: 3\nlangid:\n  languages: [en, de]\n")
    config = load_config(cfg, {"langid.threshold": 0.5})
    assert (config.source.dump, config.source.limit_warcs, config.langid.languages) == (
        "CC-MAIN-2023-50",
        3,
        ["en", "de"],
    )
    assert config.langid.threshold == 0.5
    cfg.write_text("source:\n  dump: 2023-50\n  limit_warcs: 0\nlangid:\n  threshold: 1.5\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    message = str(err.value)
    for expected in ("source.dump", "source.limit_warcs", "langid.threshold", "bogus"):
        assert expected in message
    cfg.write_text("- not\n- a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
