"""Compare two runs: which stage and which rule changed the output, and by how much.

A stage is the *cause* of a change when it received the same documents in both runs but dropped a
different number of them; stages after it see a different input and change as a consequence. Both
runs are read through :func:`build_report`, so a comparison costs two reports, not two corpora.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.parts import REJECTED, document_files, done_parts, read_parquet
from pipeline.core.storage import Location, absolute, is_remote, list_names, location, read_bytes
from pipeline.report.build import ReportConfig, build_report, dumps, write_text_atomic

log = logging.getLogger(__name__)

COMPARE_VERSION = 1
ABLATIONS_DIR = "ablations"
"""Per run: one pointer (``<a>-vs-<b>.json``) per ablation the run took part in (``refinery ablate``)."""


def compare_runs(run_a: Location | str, run_b: Location | str, config: ReportConfig | None = None) -> dict[str, Any]:
    """Differences between run A (the baseline) and run B (paths or store URLs), as a JSON-ready dict."""
    run_a, run_b = location(run_a), location(run_b)
    a, b = build_report(run_a, config), build_report(run_b, config)
    result = compare_reports(a, b)
    result["ablation"] = find_ablation(run_a, run_b)
    if result["quality_classifier"] is not None:
        result["quality_classifier"]["documents"] = document_moves(run_a, a, run_b, b)
        result["summary"] = summarise(result)
    return result


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The comparison of two already built reports."""
    stages = _stage_changes(a["funnel"]["stages"], b["funnel"]["stages"])
    rules = _rule_changes(a["drops"], b["drops"])
    causes = [s for s in stages if s["cause"]]
    output = {
        key: _delta(a["funnel"].get(key), b["funnel"].get(key))
        for key in ("docs_in", "docs_out", "bytes_out", "tokens_out")
    }
    config_changes = _config_changes(a["run"].get("config") or {}, b["run"].get("config") or {})
    result = {
        "compare_version": COMPARE_VERSION,
        "a": _run_ref(a),
        "b": _run_ref(b),
        "identical": not any(s["changed"] for s in stages) and not any(r["changed"] for r in rules),
        "config_changes": config_changes,
        "output": output,
        "stages": stages,
        "rules": rules,
        "causes": [s["key"] for s in causes],
        "first_changed_stage": next((s["key"] for s in stages if s["changed"]), None),
        "languages": _count_changes(a, b, "languages", "language"),
        "domains": _count_changes(a, b, "domains", "domain"),
        "quality_classifier": threshold_moves(a, b),
    }
    result["summary"] = summarise(result)
    return result


def _run_ref(report: dict[str, Any]) -> dict[str, Any]:
    run = report["run"]
    return {"name": run.get("name"), "run_dir": run.get("run_dir"), "dump": run.get("dump")}


def _delta(a: float | None, b: float | None) -> dict[str, Any]:
    delta = None if a is None or b is None else b - a
    return {"a": a, "b": b, "delta": delta, "relative": round(delta / a, 6) if delta is not None and a else None}


def _stage_changes(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_b = {(r["pass"], r["stage"]): r for r in rows_b}
    keys = [(r["pass"], r["stage"]) for r in rows_a] + [
        k for k in ((r["pass"], r["stage"]) for r in rows_b) if k not in {(r["pass"], r["stage"]) for r in rows_a}
    ]
    by_a = {(r["pass"], r["stage"]): r for r in rows_a}
    out = []
    for key in keys:
        ra, rb = by_a.get(key), by_b.get(key)
        row = {
            "key": key[1] if key[0] == "main" else f"{key[0]}:{key[1]}",
            "pass": key[0],
            "stage": key[1],
            "present": "both" if ra and rb else ("a" if ra else "b"),
        }
        for field in ("docs_in", "docs_out", "docs_dropped", "bytes_out", "drop_rate"):
            row[field] = _delta(ra.get(field) if ra else None, rb.get(field) if rb else None)
        input_changed = row["docs_in"]["delta"] != 0
        dropped_changed = row["docs_dropped"]["delta"] != 0 or row["bytes_out"]["delta"] != 0
        row["input_changed"] = input_changed
        row["changed"] = row["present"] != "both" or input_changed or dropped_changed
        row["cause"] = row["present"] != "both" or (not input_changed and dropped_changed)
        out.append(row)
    return out


def _rule_changes(drops_a: list[dict[str, Any]], drops_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    a = {(d["pass"], d["key"]): d for d in drops_a}
    b = {(d["pass"], d["key"]): d for d in drops_b}
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        da, db = a.get(key), b.get(key)
        count = _delta(da["count"] if da else 0, db["count"] if db else 0)
        share = _delta(
            da["share_of_stage_input"] if da else 0.0,
            db["share_of_stage_input"] if db else 0.0,
        )
        if share["delta"] is not None:
            share["delta"] = round(share["delta"], 6)
        rows.append(
            {
                "pass": key[0],
                "key": key[1],
                "stage": (da or db)["stage"],
                "rule": (da or db)["rule"],
                "count": count,
                "share_of_stage_input": share,
                "changed": count["delta"] != 0,
            }
        )
    rows.sort(key=lambda r: (-abs(r["count"]["delta"]), r["key"]))
    return rows


def _count_changes(a: dict[str, Any], b: dict[str, Any], section: str, key: str) -> list[dict[str, Any]]:
    """Per-value document counts that differ (languages, domains), largest change first."""
    da, db = a.get("documents"), b.get("documents")
    if not da or not db:
        return []
    items_a = da[section] if isinstance(da[section], list) else da[section]["top"]
    items_b = db[section] if isinstance(db[section], list) else db[section]["top"]
    ca = {i[key]: i["docs"] for i in items_a}
    cb = {i[key]: i["docs"] for i in items_b}
    rows = [{key: k, **_delta(ca.get(k, 0), cb.get(k, 0))} for k in dict.fromkeys([*ca, *cb])]
    rows = [r for r in rows if r["delta"]]
    rows.sort(key=lambda r: (-abs(r["delta"]), r[key]))
    return rows[:30]


CLASSIFIER = "quality_classifier"
BELOW_KEY = "quality_classifier:below_threshold"


def threshold_moves(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """How many documents crossed the quality classifier's threshold from A to B, or None if neither run scored.

    From the counts the runs already hold (documents scored, dropped below the threshold): ``moved`` is B's drops
    minus A's (positive: more documents fell below the threshold in B). It counts individual documents exactly
    when both runs scored the same documents with the same model and label (scores are deterministic, so changing
    only the threshold moves documents one way); otherwise it is a net change, and ``exact`` is false.
    """
    sides = [_classifier_side(r) for r in (a, b)]
    if sides[0] is None and sides[1] is None:
        return None
    empty = {"scored": 0, "below": 0, "threshold": None, "model": None, "label": None}
    side_a, side_b = (s or empty for s in sides)
    same_scores = side_a["model"] is not None and (side_a["model"], side_a["label"]) == (
        side_b["model"],
        side_b["label"],
    )
    same_input = side_a["scored"] == side_b["scored"]
    return {
        "threshold": {"a": side_a["threshold"], "b": side_b["threshold"]},
        "scored": _delta(side_a["scored"], side_b["scored"]),
        "below": _delta(side_a["below"], side_b["below"]),
        "moved": side_b["below"] - side_a["below"],
        "exact": bool(same_input and same_scores and None not in sides),
    }


def _classifier_side(report: dict[str, Any]) -> dict[str, Any] | None:
    rows = [r for r in report["funnel"]["stages"] if r["stage"] == CLASSIFIER]
    if not rows:
        return None
    config = (report["run"].get("config") or {}).get(CLASSIFIER) or {}
    below = sum(d["count"] for d in report["drops"] if d["key"] == BELOW_KEY)
    return {
        "scored": sum(r["docs_in"] or 0 for r in rows),
        "below": below,
        "threshold": config.get("threshold"),
        "model": config.get("model"),
        "label": config.get("label"),
    }


def document_moves(run_a: Location, a: dict[str, Any], run_b: Location, b: dict[str, Any]) -> dict[str, Any]:
    """Documents, by id, that one run's classifier pass kept and the other run's classifier dropped.

    ``kept_a_dropped_b``: in the documents A's classifier pass wrote, and among the rows B's classifier dropped;
    ``dropped_a_kept_b`` the other way round. A direction is null when the dropping run kept no rejected rows
    (``--keep-rejected``): only ids tell which documents moved. Reads the ``id`` column of A's and B's documents
    and the rejected rows' ``id`` and ``drop_stage``, never the text.
    """
    dirs = [_classifier_pass_dir(run, report) for run, report in ((run_a, a), (run_b, b))]
    dropped = [_classifier_dropped_ids(d) if d is not None else None for d in dirs]
    return {
        "kept_a_dropped_b": _count_kept(dirs[0], dropped[1]),
        "dropped_a_kept_b": _count_kept(dirs[1], dropped[0]),
    }


def _classifier_pass_dir(run: Location, report: dict[str, Any]) -> Location | None:
    """The folder of the pass that ran the classifier ("main" is the run folder itself)."""
    name = next((r["pass"] for r in report["funnel"]["stages"] if r["stage"] == CLASSIFIER), None)
    if name is None:
        return None
    return run if name in ("main", ".", "") else run / name


def _classifier_dropped_ids(pass_dir: Location) -> pa.Array | None:
    """Ids of the rows the classifier dropped in this pass, or None when the pass kept no rejected rows."""
    present = set(list_names(pass_dir / REJECTED, suffix=".parquet"))
    names = [n for n in done_parts(pass_dir) if f"{n}.parquet" in present]
    if not names:
        return None
    ids = []
    for name in names:
        rows = read_parquet(pass_dir / REJECTED / f"{name}.parquet", columns=["id", "drop_stage"])
        ids.append(rows.filter(pc.equal(rows.column("drop_stage"), CLASSIFIER)).column("id").combine_chunks())
    return pc.unique(pa.concat_arrays(ids)) if ids else pa.array([], pa.string())


def _count_kept(pass_dir: Location | None, ids: pa.Array | None) -> int | None:
    """How many of ``ids`` are among the documents the pass in ``pass_dir`` kept."""
    if pass_dir is None or ids is None:
        return None
    if not len(ids):
        return 0
    return sum(
        int(pc.sum(pc.is_in(read_parquet(f, columns=["id"]).column("id"), value_set=ids)).as_py() or 0)
        for f in document_files(pass_dir)
    )


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


IGNORED_CONFIG_KEYS = ("name", "output_dir", "source.cc_base_url", "source.download_dir")
"""Config keys that name where a run went, not what it did."""


def _config_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    fa, fb = _flatten(a), _flatten(b)
    ignored = [k for k in dict.fromkeys([*fa, *fb]) if "storage_options" in k.split(".")]  # never compared
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k not in IGNORED_CONFIG_KEYS and k not in ignored]
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in keys if fa.get(k) != fb.get(k)]


def summarise(result: dict[str, Any]) -> str:
    """One or two plain sentences: what changed first and what it did to the output."""
    if result["identical"]:
        return "No stage and no rule changed: both runs kept and dropped the same number of documents."
    parts = []
    for key in result["causes"]:
        stage = next(s for s in result["stages"] if s["key"] == key)
        rules = [
            r for r in result["rules"] if r["changed"] and (r["stage"] == stage["stage"]) and r["pass"] == stage["pass"]
        ]
        detail = ", ".join(f"{r['key']} {r['count']['a']:,} -> {r['count']['b']:,}" for r in rules[:3])
        dd = stage["docs_dropped"]
        parts.append(f"{key} dropped {_signed(dd['delta'])} documents ({detail or 'bytes changed'})")
    out = result["output"]["docs_out"]
    text = "; ".join(parts) if parts else "Stage inputs differ"
    if out["delta"] is not None:
        rel = f" ({out['relative']:+.1%})" if out["relative"] is not None else ""
        text += f". Output: {out['a']:,} -> {out['b']:,} documents{rel}."
    moves = (result.get("quality_classifier") or {}).get("documents") or {}
    if moves.get("kept_a_dropped_b") is not None or moves.get("dropped_a_kept_b") is not None:
        text += (
            f" Quality classifier: {_count(moves.get('kept_a_dropped_b'))} documents kept in A were dropped in B, "
            f"{_count(moves.get('dropped_a_kept_b'))} dropped in A were kept in B."
        )
    return text


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _signed(n: int | None) -> str:
    return "?" if n is None else f"{n:+,}"


# ---------------------------------------------------------------- HTML


def stages_figure(result: dict[str, Any]) -> str | None:
    """Documents out of every stage in A and B, side by side."""
    import matplotlib

    from pipeline.report.html import KEPT, PALETTE, RC, new_figure, svg_data_uri

    stages = result["stages"]
    if not stages:
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(9, 0.5 * len(stages) + 1.2)
        y = list(range(len(stages)))
        ax.barh(
            [i - 0.2 for i in y], [s["docs_out"]["a"] or 0 for s in stages], height=0.4, color=PALETTE[6], label="A"
        )
        ax.barh([i + 0.2 for i in y], [s["docs_out"]["b"] or 0 for s in stages], height=0.4, color=KEPT, label="B")
        ax.set_yticks(y, [s["key"] for s in stages])
        ax.invert_yaxis()
        ax.set_title("documents out of each stage")
        ax.legend(frameon=False, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return svg_data_uri(fig)


def rules_figure(result: dict[str, Any]) -> str | None:
    """Change in documents dropped per rule (B - A): positive drops more in B."""
    import matplotlib

    from pipeline.report.html import DROPPED, KEPT, RC, hbar, new_figure, svg_data_uri

    rules = [r for r in result["rules"] if r["changed"]][:25]
    if not rules:
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(9, 0.32 * len(rules) + 1.0)
        deltas = [r["count"]["delta"] for r in rules]
        hbar(ax, [r["key"] for r in rules], deltas, [DROPPED if d > 0 else KEPT for d in deltas], min_rows=3)
        ax.axvline(0, color="#333333", linewidth=0.8)
        for i, d in enumerate(deltas):
            ax.annotate(f" {d:+,}", (d, i), va="center", fontsize=8)
        ax.set_title("documents dropped per rule, B minus A")
    return svg_data_uri(fig)


def find_ablation(run_a: Location | str, run_b: Location | str) -> dict[str, Any] | None:
    """The ablation that trained on both runs (a pointer in either run's ``ablations/``), or None: one of exactly
    these two runs before one with more, then the newest; its verdicts only for the pair A, B."""
    wanted = {str(absolute(run_a)).rstrip("/"), str(absolute(run_b)).rstrip("/")}
    found = []
    for run in (location(run_a), location(run_b)):
        folder = run / ABLATIONS_DIR
        try:
            names = [n for n in list_names(folder) if n.endswith(".json")]
        except Exception:  # no ablations folder: none
            continue
        for name in names:
            try:
                pointer = json.loads(read_bytes(folder / name))
            except (OSError, ValueError):
                pointer = None
            if not isinstance(pointer, dict) or not isinstance(pointer.get("runs"), list):
                log.warning("unreadable ablation pointer %s", folder / name)
                continue
            runs = [str(r).rstrip("/") for r in pointer["runs"]]
            if wanted <= set(runs):
                found.append((len(runs), -float(pointer.get("created") or 0), runs, pointer))
    if not found:
        return None
    _, _, runs, pointer = min(found, key=lambda f: f[:2])
    names = dict(zip(runs, pointer.get("names") or [], strict=False))
    pair = {names.get(r) for r in wanted}
    verdicts = [v for v in pointer.get("verdicts") or [] if isinstance(v, dict) and {v.get("a"), v.get("b")} == pair]
    return {**pointer, "verdicts": verdicts, "href": None}


def render_compare_html(result: dict[str, Any]) -> str:
    """One self-contained page for a comparison (same rules as the report page: no external fetch)."""
    from pipeline.report.html import environment
    from pipeline.report.templates import COMPARE_PAGE, CSS

    env = environment()
    env.filters.update(signed=_signed, spct=_signed_pct)
    figs = {"stages": stages_figure(result), "rules": rules_figure(result)}
    return env.from_string(COMPARE_PAGE).render(c=result, fig=figs, css=CSS)


def _signed_pct(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.1%}"


@dataclass
class ComparisonFiles:
    json_path: Location
    html_path: Location
    result: dict[str, Any]


def write_comparison(
    run_a: Location | str,
    run_b: Location | str,
    out_dir: Location | str | None = None,
    config: ReportConfig | None = None,
) -> ComparisonFiles:
    """Compare two runs and write ``compare-<B>.json`` and ``compare-<B>.html`` into A's report folder (on A's
    store when A is a store URL; either run may be local or on a store)."""
    config = config or ReportConfig()
    run_a, run_b = location(run_a), location(run_b)
    result = compare_runs(run_a, run_b, config)
    out = location(out_dir) if out_dir is not None else run_a / config.output_dir
    stem = f"compare-{_safe_name(_run_name(run_b))}"
    ablation = result.get("ablation")
    if ablation and ablation.get("page") and not is_remote(out) and not is_remote(ablation["page"]):
        ablation["href"] = os.path.relpath(ablation["page"], Path(out).resolve())
    json_path = write_text_atomic(out / f"{stem}.json", dumps(result))
    html_path = write_text_atomic(out / f"{stem}.html", render_compare_html(result))
    return ComparisonFiles(json_path, html_path, result)


def _run_name(run: Location) -> str:
    """The folder name of a run (``.`` resolved on disk; the last part of a store URL)."""
    return run.name if is_remote(run) else Path(run).resolve().name


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"
