"""Counters a pass writes per part (``part-NNNNN.stats.json``) and merges for the funnel and the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageStats:
    """Documents and text bytes in and out of one stage, and drops per rule (``stage:rule``)."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    drops: Counter[str] = field(default_factory=Counter)

    def merge(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds += other.seconds
        self.drops.update(other.drops)

    @property
    def dropped(self) -> int:
        return self.docs_in - self.docs_out


@dataclass
class PartStats:
    """Everything one part of one pass counted: what the source skipped, and each stage's funnel."""

    part: str
    inputs: list[str] = field(default_factory=list)
    source: Counter[str] = field(default_factory=Counter)
    stages: list[StageStats] = field(default_factory=list)
    docs_out: int = 0
    seconds: float = 0.0

    def stage(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        s = StageStats(name)
        self.stages.append(s)
        return s

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = dict(self.source)
        for s in d["stages"]:
            s["drops"] = dict(s["drops"])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PartStats:
        stages = [StageStats(**{**s, "drops": Counter(s.get("drops", {}))}) for s in d.get("stages", [])]
        return cls(
            part=d["part"],
            inputs=list(d.get("inputs", [])),
            source=Counter(d.get("source", {})),
            stages=stages,
            docs_out=int(d.get("docs_out", 0)),
            seconds=float(d.get("seconds", 0.0)),
        )

    @classmethod
    def load(cls, path: Path) -> PartStats:
        return cls.from_json(json.loads(Path(path).read_text()))


def merge_parts(parts: list[PartStats], name: str = "total") -> PartStats:
    """Sum several parts into one funnel, keeping stage order as first seen."""
    total = PartStats(part=name)
    for p in parts:
        total.inputs.extend(p.inputs)
        total.source.update(p.source)
        total.docs_out += p.docs_out
        total.seconds += p.seconds
        for s in p.stages:
            total.stage(s.name).merge(s)
    return total
