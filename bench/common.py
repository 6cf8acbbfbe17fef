"""Helpers shared by the benchmarks: where the real data is, what machine ran, markdown tables."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def realdata_dir() -> Path:
    """``$CC_REFINERY_REALDATA`` or the ``shared/realdata`` folder next to the repository."""
    env = os.environ.get("CC_REFINERY_REALDATA")
    path = Path(env) if env else REPO.parent / "shared" / "realdata"
    if not path.is_dir():
        raise SystemExit(f"real test data not found at {path}; set CC_REFINERY_REALDATA")
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> str:
    """One line naming the machine, for the header of every result file."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats get 3 significant decimals, numbers are right-aligned."""

    def fmt(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in cells)
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    """Write ``text`` to ``bench/results/<name>`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path
