"""Counters a pass writes per part (``stats/part-NNNNN.json``) and merges for the funnel and the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.core.profile import DocumentProfile
from pipeline.core.storage import Location, read_bytes

SAMPLES_PER_RULE = 5


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
    counts: Counter[str] = field(default_factory=Counter)
    """What a stage counted beyond drops (``stage:counter``, e.g. ``pii:email`` replacements); sums over parts."""
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """A few dropped documents per rule (id, url, snippet), so a person can judge whether the rule is right."""

    def add_samples(self, rule: str, rows: list[dict[str, str]], limit: int = SAMPLES_PER_RULE) -> None:
        kept = self.samples.setdefault(rule, [])
        kept.extend(rows[: max(0, limit - len(kept))])

    def merge(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds += other.seconds
        self.drops.update(other.drops)
        self.counts.update(other.counts)
        for rule, rows in other.samples.items():
            self.add_samples(rule, rows)

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
    profile: DocumentProfile = field(default_factory=DocumentProfile)
    """Distributions of the documents this part kept (languages, lengths, domains) and stages' quality signals."""

    def stage(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        s = StageStats(name)
        self.stages.append(s)
        return s

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "inputs": list(self.inputs),
            "source": dict(self.source),
            "stages": [_stage_json(s) for s in self.stages],
            "docs_out": self.docs_out,
            "seconds": self.seconds,
            "profile": self.profile.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PartStats:
        stages = [
            StageStats(
                **{
                    **s,
                    "drops": Counter(s.get("drops", {})),
                    "counts": Counter(s.get("counts", {})),
                    "samples": s.get("samples", {}),
                }
            )
            for s in d.get("stages", [])
        ]
        return cls(
            part=d["part"],
            inputs=list(d.get("inputs", [])),
            source=Counter(d.get("source", {})),
            stages=stages,
            docs_out=int(d.get("docs_out", 0)),
            seconds=float(d.get("seconds", 0.0)),
            profile=DocumentProfile.from_json(d["profile"]) if "profile" in d else DocumentProfile(),
        )

    @classmethod
    def load(cls, path: Location | str) -> PartStats:
        return cls.from_json(json.loads(read_bytes(path)))


def _stage_json(s: StageStats) -> dict[str, Any]:
    return {
        **{f.name: getattr(s, f.name) for f in fields(s)},
        "drops": dict(s.drops),
        "counts": dict(s.counts),
        "samples": dict(s.samples),
    }


def merge_parts(parts: list[PartStats], name: str = "total") -> PartStats:
    """Sum several parts into one funnel, keeping stage order as first seen."""
    total = PartStats(part=name)
    for p in parts:
        total.inputs.extend(p.inputs)
        total.source.update(p.source)
        total.docs_out += p.docs_out
        total.seconds += p.seconds
        total.profile.merge(p.profile)
        for s in p.stages:
            total.stage(s.name).merge(s)
    return total


def format_funnel(stats: PartStats) -> str:
    """A short plain-text funnel: source counters, docs in/out per stage, drop reasons."""
    lines = []
    if stats.source:
        source = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.source.items()))
        lines.append(f"source: {source}")
    w = max([12, *(len(s.name) for s in stats.stages)])
    header = f"{'stage':<{w}} {'docs in':>9} {'docs out':>9} {'dropped':>8} {'MB in':>8} {'MB out':>8} {'sec':>7}"
    lines.append(header)
    for s in stats.stages:
        lines.append(
            f"{s.name:<{w}} {s.docs_in:>9,} {s.docs_out:>9,} {s.dropped:>8,} "
            f"{s.bytes_in / 1e6:>8.1f} {s.bytes_out / 1e6:>8.1f} {s.seconds:>7.1f}"
        )
    drops = sum((s.drops for s in stats.stages), Counter())
    lines += _counter_table("drop reasons:", drops.most_common())
    counts = sum((s.counts for s in stats.stages), Counter())
    lines += _counter_table("stage counters:", sorted(counts.items()))
    return "\n".join(lines)


def _counter_table(title: str, rows: list[tuple[str, int]]) -> list[str]:
    """``title`` then one aligned ``name  count`` line per row; nothing when there are no rows."""
    if not rows:
        return []
    width = max(len(k) for k, _ in rows)
    return [title, *(f"  {key:<{width}} {count:>8,}" for key, count in rows)]


def nothing_kept(docs_in: int, drops: Counter[str]) -> str:
    """Why a run kept no document, in one line (the CLI, the flow and the report say it the same way)."""
    if not drops:
        return "no document was kept: no HTML page was read from the WARC files"
    top = ", ".join(f"{key} ({count:,})" for key, count in drops.most_common(3))
    return f"no document was kept: {docs_in:,} read, largest drop reasons: {top}"
