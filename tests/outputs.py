"""Read a run folder back for comparisons between runs: documents per part and the stats funnel per part."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.app.passes import DEDUP_DIR
from pipeline.core.parts import DOCUMENTS, MARKERS, load_stats


def documents_by_part(run_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Per part file: (id, text) of every kept document, in file order."""
    out = {}
    for path in sorted((Path(run_dir) / DOCUMENTS).glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", "text"])
        out[path.name] = list(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    return out


def funnel(run_dir: Path) -> dict[str, list]:
    """Per part: source counters, documents out and each stage's (name, in, out, drop reasons)."""
    return {
        s.part: [s.source, s.docs_out, [(st.name, st.docs_in, st.docs_out, dict(st.drops)) for st in s.stages]]
        for s in load_stats(run_dir)
    }


def document_pass_dirs(run_dir: Path) -> list[Path]:
    """Folders of the document passes a run has written, in run order (the run folder, then dedup/)."""
    run_dir = Path(run_dir)
    return [d for d in (run_dir, run_dir / DEDUP_DIR) if (d / MARKERS).is_dir()]
