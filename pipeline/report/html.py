"""Render ``report.json`` as one self-contained ``index.html``: inline SVG plots, inline CSS, no script.

Plots are drawn with matplotlib (``Figure`` objects, no pyplot global state) into SVG and embedded as
``data:`` images, and a Content-Security-Policy forbids every fetch, so the page opens offline and
cannot leak a request to anywhere. Sections for dedup, tokens and validation appear when present.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import jinja2
import matplotlib
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline.report.templates import CSS, PAGE

PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000")
KEPT, DROPPED, THRESHOLD = "#4477aa", "#ee6677", "#222222"
RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "svg.hashsalt": "cc-refinery",
}


# ---------------------------------------------------------------- figures


def svg_data_uri(fig: Figure) -> str:
    """The figure as a base64 ``data:image/svg+xml`` URI (deterministic ids, no metadata date)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def hbar(
    ax: Any, labels: Sequence[str], values: Sequence[float], colors: Sequence[str] | str = KEPT, min_rows: int = 6
) -> None:
    """Horizontal bars, first label on top; bars keep their thickness when there are only a few."""
    y = list(range(len(labels)))
    ax.barh(y, values, color=colors, height=0.7)
    ax.set_yticks(y, [_short(label, 48) for label in labels])
    ax.set_ylim(max(len(labels), min_rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def funnel_figure(report: dict[str, Any]) -> str:
    """Documents after each step (as a share of the input), and text bytes in and out of each stage."""
    rows = report["funnel"]["stages"]
    has_tokens = any(r["tokens_out"] for r in rows)
    with matplotlib.rc_context(RC):
        fig, axes = new_figure(11, 0.45 * len(rows) + 1.6, 3 if has_tokens else 2)
        labels = ["input", *[f"after {r['stage']}" for r in rows]]
        docs = [report["funnel"]["docs_in"], *[r["docs_out"] for r in rows]]
        ax = axes[0]
        hbar(ax, labels, docs, [PALETTE[6], *[KEPT] * len(rows)])
        total = docs[0] or 1
        for i, n in enumerate(docs):
            ax.annotate(f" {n:,} ({n / total:.0%})", (n, i), va="center", fontsize=8)
        ax.set_title("documents")
        ax.margins(x=0.35)
        _io_bars(axes[1], rows, "bytes", 1e6, "MB in and out (log scale)")
        if has_tokens:
            _io_bars(axes[2], rows, "tokens", 1e6, "million tokens (est.)")
    return svg_data_uri(fig)


def _io_bars(ax: Any, rows: list[dict[str, Any]], kind: str, scale: float, title: str) -> None:
    y = list(range(len(rows)))
    values_in = [(r[f"{kind}_in"] or 0) / scale for r in rows]
    values_out = [(r[f"{kind}_out"] or 0) / scale for r in rows]
    bars_in = ax.barh([i - 0.2 for i in y], values_in, height=0.4, color=PALETTE[6], label="in")
    bars_out = ax.barh([i + 0.2 for i in y], values_out, height=0.4, color=KEPT, label="out")
    if kind == "bytes":
        for bar, r in zip(bars_in, rows, strict=True):
            bar.set_hatch("///" if r["bytes_kind_in"] == "html" else "")
        for bar, r in zip(bars_out, rows, strict=True):
            bar.set_hatch("///" if r["bytes_kind_out"] == "html" else "")
        if any(v > 0 for v in values_in + values_out):
            ax.set_xscale("log")
    ax.set_yticks(y, [r["stage"] for r in rows])
    ax.invert_yaxis()
    ax.set_title(title)
    handles = [Patch(color=PALETTE[6], label="in"), Patch(color=KEPT, label="out")]
    if kind == "bytes":
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="///", label="HTML"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)


def drops_figure(report: dict[str, Any]) -> str | None:
    drops = report["drops"][:30]
    if not drops:
        return None
    stages = list(dict.fromkeys([*(r["stage"] for r in report["funnel"]["stages"]), *(d["stage"] for d in drops)]))
    colors = [PALETTE[stages.index(d["stage"]) % len(PALETTE)] for d in drops]
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(9, 0.32 * len(drops) + 1.0)
        hbar(ax, [d["key"] for d in drops], [d["count"] for d in drops], colors)
        for i, d in enumerate(drops):
            ax.annotate(
                f" {d['count']:,} ({(d['share_of_stage_input'] or 0):.1%} of stage input)",
                (d["count"], i),
                va="center",
                fontsize=8,
            )
        ax.margins(x=0.45)
        ax.set_title("documents dropped per rule")
    return svg_data_uri(fig)


def seconds_figure(report: dict[str, Any]) -> str | None:
    seconds = report["run"]["stage_seconds"]
    if not seconds:
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(7, 0.32 * len(seconds) + 1.0)
        hbar(ax, list(seconds), list(seconds.values()), PALETTE[4])
        for i, v in enumerate(seconds.values()):
            ax.annotate(f" {v:,.1f} s", (v, i), va="center", fontsize=8)
        ax.margins(x=0.2)
        ax.set_title("task seconds per stage (summed over parts)")
    return svg_data_uri(fig)


def languages_figure(docs: dict[str, Any]) -> str | None:
    langs = docs["languages"][:20]
    if not langs:
        return None
    score = docs["language_score"]
    with matplotlib.rc_context(RC):
        fig, axes = new_figure(11, max(2.6, 0.22 * len(langs) + 1.2), 2)
        hbar(axes[0], [x["language"] for x in langs], [x["docs"] for x in langs])
        axes[0].set_title("documents per language")
        ax = axes[1]
        edges = score["edges"]
        bottom = [0] * (len(edges) - 1)
        by_lang = score["by_language"]
        for i, (lang, counts) in enumerate(by_lang.items()):
            ax.stairs(
                [b + c for b, c in zip(bottom, counts, strict=True)],
                edges,
                baseline=bottom,
                fill=True,
                color=PALETTE[i % len(PALETTE)],
                label=lang,
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        rest = [t - b for t, b in zip(score["counts"], bottom, strict=True)]
        if any(rest):
            ax.stairs(
                [b + r for b, r in zip(bottom, rest, strict=True)],
                edges,
                baseline=bottom,
                fill=True,
                color=PALETTE[6],
                label="other",
            )
        if score.get("threshold") is not None:
            ax.axvline(
                score["threshold"],
                color=THRESHOLD,
                linestyle="--",
                linewidth=1.2,
                label=f"threshold {score['threshold']}",
            )
        ax.set_xlim(0, 1)
        ax.set_xlabel("language score")
        ax.set_title("language score of kept documents")
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    return svg_data_uri(fig)


def lengths_figure(docs: dict[str, Any]) -> str | None:
    panels = [(k, v) for k, v in docs["lengths"].items() if v and sum(v["counts"])]
    if not panels:
        return None
    with matplotlib.rc_context(RC):
        fig, axes = new_figure(11, 2.8, len(panels))
        for ax, (name, hist) in zip(axes, panels, strict=True):
            edges, counts = hist["edges"][1:], hist["counts"][1:]
            lo, hi = _nonzero_range(counts)
            ax.stairs(counts[lo:hi], edges[lo : hi + 1], fill=True, color=KEPT)
            ax.set_xscale("log")
            if hist["p50"] is not None:
                ax.axvline(
                    hist["p50"], color=THRESHOLD, linestyle=":", linewidth=1, label=f"median \u2264 {hist['p50']:,.0f}"
                )
                ax.legend(fontsize=8, frameon=False)
            zero = hist["counts"][0]
            ax.set_title(f"{name} per document" + (f" ({zero:,} empty)" if zero else ""))
            ax.set_ylabel("documents")
    return svg_data_uri(fig)


def _nonzero_range(counts: Sequence[int]) -> tuple[int, int]:
    nz = [i for i, c in enumerate(counts) if c]
    if not nz:
        return 0, len(counts)
    return max(0, nz[0] - 1), min(len(counts), nz[-1] + 2)


def domains_figure(docs: dict[str, Any]) -> str | None:
    domains, tlds = docs["domains"]["top"][:25], docs["tlds"]["top"][:25]
    if not domains:
        return None
    with matplotlib.rc_context(RC):
        rows = max(len(domains), len(tlds), 6)
        fig, axes = new_figure(11, 0.26 * rows + 1.2, 2)
        hbar(axes[0], [d["domain"] for d in domains], [d["docs"] for d in domains], min_rows=rows)
        axes[0].set_title("top domains")
        hbar(axes[1], [t["tld"] for t in tlds], [t["docs"] for t in tlds], PALETTE[2], min_rows=rows)
        axes[1].set_title("top TLDs (public suffixes)")
    return svg_data_uri(fig)


def signals_figure(docs: dict[str, Any], stage_order: Sequence[str] = ()) -> str | None:
    """Small multiples, one per quality signal, grouped by stage: kept and dropped stacked, thresholds dashed."""
    signals = docs.get("signals") or {}
    if not signals:
        return None
    order = {stage: i for i, stage in enumerate(stage_order)}
    names = sorted(signals, key=lambda n: (order.get(signals[n].get("stage", ""), len(order)), n))
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(11, 2.3 * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, name in zip(axes, names, strict=False):
            _signal_panel(ax, name, signals[name])
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        fig.legend(
            handles=[
                Patch(color=KEPT, label="kept"),
                Patch(color=DROPPED, label="dropped by the stage"),
                Line2D([], [], color=THRESHOLD, linestyle="--", label="threshold"),
            ],
            loc="outside upper center",
            ncols=3,
            frameon=False,
        )
    return svg_data_uri(fig)


def _signal_panel(ax: Any, name: str, sig: dict[str, Any]) -> None:
    edges, kept, dropped = sig["edges"], sig["kept"], sig["dropped"]
    ax.stairs(kept, edges, fill=True, color=KEPT)
    stacked = [k + d for k, d in zip(kept, dropped, strict=True)]
    ax.stairs(stacked, edges, baseline=kept, fill=True, color=DROPPED)
    marks = list(sig["thresholds"].items())
    for label, value in marks:
        ax.axvline(value, color=THRESHOLD, linestyle="--", linewidth=1.1)
        op = label[label.rfind("(") + 1 : label.rfind(")")] if label.endswith(")") else ""
        ax.annotate(
            f"{op} {value:g} ",
            (value, 0.97),
            xycoords=("data", "axes fraction"),
            ha="right",
            va="top",
            fontsize=7,
            rotation=90,
        )
    if sig.get("log"):
        ax.set_xscale("log")
        lo, hi = _nonzero_range(stacked)
        xs = [edges[max(lo, 1)], edges[min(hi, len(edges) - 1)], *(v for _, v in marks if v > 0)]
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax.set_title(f"{sig.get('stage') + ': ' if sig.get('stage') else ''}{name}", fontsize=9)


def dedup_figure(dedup: dict[str, Any]) -> str | None:
    hist = [h for h in dedup.get("size_histogram", []) if h["clusters"]]
    if not hist:
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(7, 2.8)
        ax.bar(
            [h["size"] for h in hist], [h["clusters"] for h in hist], color=KEPT, width=0.8 if len(hist) < 30 else 1.0
        )
        ax.set_yscale("log")
        if max(h["size"] for h in hist) > 50:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters")
        ax.set_title("duplicate cluster sizes")
    return svg_data_uri(fig)


def tokens_figure(tokens: dict[str, Any]) -> str | None:
    shards = tokens.get("shards", [])
    if not shards or len(shards) > 400:
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(9, 2.6)
        colors = [DROPPED if s["split"] == "val" else KEPT for s in shards]
        ax.bar(range(len(shards)), [s["num_tokens"] / 1e6 for s in shards], color=colors)
        if len(shards) <= 12:
            ax.set_xticks(range(len(shards)), [s["name"] for s in shards], rotation=20, fontsize=7)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("shard (red: val, blue: train)")
        ax.set_ylabel("million tokens")
        ax.set_title("tokens per shard")
    return svg_data_uri(fig)


def validation_figure(val: dict[str, Any]) -> str | None:
    if not val.get("train_curve") and not val.get("val_curve"):
        return None
    with matplotlib.rc_context(RC):
        fig, (ax,) = new_figure(8, 3.2)
        if val["train_curve"]:
            ax.plot(*zip(*val["train_curve"], strict=True), color=KEPT, label="train loss")
        if val["val_curve"]:
            ax.plot(*zip(*val["val_curve"], strict=True), color=DROPPED, marker="o", markersize=3, label="val loss")
        if val.get("unigram_entropy") is not None:
            ax.axhline(
                val["unigram_entropy"],
                color=THRESHOLD,
                linestyle="--",
                label=f"unigram entropy {val['unigram_entropy']:.3f}",
            )
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss ({val.get('loss_unit') or 'nats'})")
        ax.set_title("training loss vs the unigram entropy of the data")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    return svg_data_uri(fig)


def figures(report: dict[str, Any]) -> dict[str, str | None]:
    """Every plot of the report as a data URI (None where the data is absent)."""
    docs = report.get("documents")
    plots: dict[str, Callable[[], str | None]] = {
        "funnel": lambda: funnel_figure(report) if report["funnel"]["stages"] else None,
        "drops": lambda: drops_figure(report),
        "seconds": lambda: seconds_figure(report),
        "languages": lambda: languages_figure(docs) if docs else None,
        "lengths": lambda: lengths_figure(docs) if docs else None,
        "domains": lambda: domains_figure(docs) if docs else None,
        "signals": lambda: signals_figure(docs, [s["stage"] for s in report["funnel"]["stages"]]) if docs else None,
        "dedup": lambda: dedup_figure(report["dedup"]) if _ok(report.get("dedup")) else None,
        "tokens": lambda: tokens_figure(report["tokens"]) if _ok(report.get("tokens")) else None,
        "validation": lambda: validation_figure(report["validation"]) if _ok(report.get("validation")) else None,
    }
    return {name: make() for name, make in plots.items()}


def _ok(section: dict[str, Any] | None) -> bool:
    return bool(section) and not section.get("error")


# ---------------------------------------------------------------- page


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, int | float) else str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "\u2013" if value is None else f"{value:.{digits}%}"


def _mb(value: float | None) -> str:
    return "\u2013" if value is None else f"{value / 1e6:,.2f}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        num=_num, pct=_pct, mb=_mb, short=_short, yaml=lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    )
    return env


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one run's report."""
    template = environment().from_string(PAGE)
    return template.render(r=report, fig=figures(report), ok=_ok, css=CSS)
