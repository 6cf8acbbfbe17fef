"""The layers hold: nothing imports upward (core <- sources, stages, ... <- app <- flows), checked by import-linter
with the contracts in pyproject.toml, on the real code and on a copy with one upward import planted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("pipeline", "filters", "tokenization", "validation", "flows")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install 'cc-refinery[dev]')")
    return subprocess.run(
        [str(lint), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_code_keeps_its_layers() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("pipeline/core/stats.py", "from pipeline.app import config as _upward", "Layers"),
        ("pipeline/dedup/minhash.py", "import flows as _upward", "Layers"),
        ("tokenization/shards.py", "import prefect as _upward", "Only the flows import Prefect"),
        ("validation/model.py", "import pipeline.core.parts as _upward", "The validation job"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("sample_data", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    report = " ".join(done.stdout.split())  # contract names wrap across lines
    verdict = re.search(re.escape(contract) + r".*? (KEPT|BROKEN)", report)
    assert verdict is not None and verdict.group(1) == "BROKEN", done.stdout
