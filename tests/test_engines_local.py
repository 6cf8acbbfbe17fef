"""The local engine's scheduling: worker processes claim units as they become free and run many each."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.parts import PartWriter
from pipeline.core.stats import PartStats
from pipeline.engines.base import RunIncomplete, WorkUnit
from pipeline.engines.local import run_local


@dataclass
class RecordPid:
    """Writes its part with the id of the process that ran it; the ``slow`` part takes a while."""

    slow: str = ""
    die: str = ""

    def __call__(self, unit: WorkUnit, out_dir: Path) -> None:
        if unit.part == self.die:
            os._exit(3)
        if unit.part == self.slow:
            time.sleep(1.5)
        with PartWriter(out_dir, unit.part) as writer:
            writer.write(pa.table({"id": [unit.part], "text": [str(os.getpid())]}))
            writer.commit(PartStats(part=unit.part))
        (out_dir / "pids").mkdir(exist_ok=True)
        (out_dir / "pids" / unit.part).write_text(json.dumps(os.getpid()))


def _pids(out: Path) -> dict[str, int]:
    return {p.name: json.loads(p.read_text()) for p in (out / "pids").iterdir()}


@pytest.mark.timeout(120)
def test_worker_processes_run_many_units_and_a_slow_one_holds_no_other_back(tmp_path: Path) -> None:
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(f"in-{i}",)) for i in range(10)]
    out = tmp_path / "out"
    result = run_local(units, RecordPid(slow="part-00000"), out, workers=2, progress=False)
    assert sorted(result.done) == [u.part for u in units]
    pids = _pids(out)
    assert len(set(pids.values())) < len(units)  # processes were reused (one S3 client set-up each, not per unit)
    others = {pid for part, pid in pids.items() if part != "part-00000"}
    assert others - {pids["part-00000"]}, "the other worker ran the rest while the slow unit ran"
    assert sum(pid != pids["part-00000"] for pid in pids.values()) >= 5


@pytest.mark.timeout(120)
def test_a_dead_worker_fails_only_its_unit_and_the_others_run(tmp_path: Path) -> None:
    units = [WorkUnit(part=f"part-{i:05d}", inputs=(f"in-{i}",)) for i in range(8)]
    with pytest.raises(RunIncomplete) as raised:
        run_local(units, RecordPid(die="part-00003"), tmp_path / "out", workers=2, progress=False)
    assert list(raised.value.result.failed) == ["part-00003"]
    assert "worker process" in raised.value.result.failed["part-00003"]
    assert sorted(raised.value.result.done) == [u.part for u in units if u.part != "part-00003"]
    result = run_local(units, RecordPid(), tmp_path / "out", workers=2, progress=False)
    assert result.done == ["part-00003"] and len(result.skipped) == 7
