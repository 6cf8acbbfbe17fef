"""Read what other passes leave beside the stats: duplicate clusters, the token manifest, the validation result.

Each loader returns None when its file is absent (the stage has not run), a ``{"path", "error"}`` dict
when the file is unreadable or not understood (the report says so instead of failing), else the
normalised section described in SCHEMA.md. Loaders accept a few equivalent shapes, listed in their
docstrings, so the report does not break when a producer renames a key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from pipeline.core.storage import Location, read_bytes

SNIPPET_CHARS = 300
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_sample(row: dict[str, Any]) -> dict[str, str]:
    return {
        "id": str(row.get("id", "")),
        "url": str(row.get("url") or ""),
        "snippet": clean_text(str(row.get("snippet") or ""), SNIPPET_CHARS),
    }


def clean_text(text: str, limit: int) -> str:
    """A snippet safe to show: no control characters or lone surrogates, at most ``limit`` characters."""
    return _UNSAFE_CHARS.sub(" ", text[:limit])


def _load(path: Location, parse: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
    """None if ``path`` is absent, ``{"path", "error"}`` if unreadable or not understood, else the section.

    Read without asking first whether it exists: one request on a store, not two.
    """
    try:
        data = json.loads(read_bytes(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        return {"path": str(path), "error": f"unreadable: {e}"}
    if not isinstance(data, dict):
        return {"path": str(path), "error": f"expected a JSON object, got {type(data).__name__}"}
    try:
        return {"path": str(path), **parse(data)}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return {"path": str(path), "error": f"not understood: {type(e).__name__}: {e}"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, str | int | float | bool) or v is None}


def load_dedup(path: Location) -> dict[str, Any] | None:
    """Duplicate clusters: size histogram, totals and the biggest clusters with examples.

    Expected: ``{"size_histogram": {"<size>": <clusters>, ...}, "biggest": [{"cluster_id", "size",
    "examples": [{"id", "url", "snippet"}]}], ...scalars}``; also ``cluster_size_histogram`` or a list of
    ``[size, clusters]`` / ``{"size", "clusters"}``, and ``biggest_clusters`` / ``top_clusters``.
    """
    return _load(path, _parse_dedup)


def _parse_dedup(data: dict[str, Any]) -> dict[str, Any]:
    raw = data.get("size_histogram", data.get("cluster_size_histogram", data.get("histogram", {})))
    hist = _size_histogram(raw)
    biggest = data.get("biggest", data.get("biggest_clusters", data.get("top_clusters", []))) or []
    clusters = []
    for c in biggest[:50] if isinstance(biggest, list) else []:
        if not isinstance(c, dict):
            continue
        examples = c.get("examples", c.get("documents", [])) or []
        clusters.append(
            {
                "cluster_id": str(c.get("cluster_id", c.get("id", ""))),
                "size": int(c.get("size", len(examples))),
                "examples": [clean_sample(e) for e in examples[:5] if isinstance(e, dict)],
            }
        )
    multi = [h for h in hist if h["size"] >= 2]
    return {
        "size_histogram": hist,
        "clusters": sum(h["clusters"] for h in multi),
        "documents_in_clusters": sum(h["size"] * h["clusters"] for h in multi),
        "documents_removed": sum((h["size"] - 1) * h["clusters"] for h in multi),
        "biggest": sorted(clusters, key=lambda c: -c["size"]),
        "summary": _scalars(data),
    }


def _size_histogram(raw: Any) -> list[dict[str, int]]:
    """``{size: clusters}``, ``[[size, clusters], ...]`` or ``[{"size", "clusters"|"count"}]`` -> sorted rows."""
    pairs: list[tuple[int, int]] = []
    if isinstance(raw, dict):
        pairs = [(int(k), int(v)) for k, v in raw.items()]
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                pairs.append((int(item["size"]), int(item.get("clusters", item.get("count", 0)))))
            else:
                size, count = item
                pairs.append((int(size), int(count)))
    else:
        raise TypeError(f"got {type(raw).__name__}")
    merged: dict[int, int] = {}
    for size, count in pairs:
        merged[size] = merged.get(size, 0) + count
    return [{"size": s, "clusters": c} for s, c in sorted(merged.items())]


def load_token_manifest(path: Location) -> dict[str, Any] | None:
    """Token shards: names, splits, token and document counts, dtype, tokenizer and checksums.

    Expected (tokenization's ``manifest.json``): ``{"format", "tokenizer": name or {"name", ...},
    "vocab_size", "eot_token", "shards": [{"name", "split", "num_tokens", "num_documents", "dtype",
    "sha256"}], "totals": {"num_tokens", "num_documents"}}``. Checksums are shown, not recomputed.
    """
    return _load(path, _parse_manifest)


def _parse_manifest(data: dict[str, Any]) -> dict[str, Any]:
    shards = []
    for s in data.get("shards", []) or []:
        if not isinstance(s, dict):
            continue
        name = str(s.get("name", ""))
        shards.append(
            {
                "name": name,
                "split": s.get("split") or ("val" if name.startswith("val") else "train"),
                "num_tokens": int(s.get("num_tokens", 0)),
                "num_documents": s.get("num_documents"),
                "dtype": s.get("dtype"),
                "sha256": s.get("sha256"),
            }
        )
    by_split: dict[str, dict[str, int]] = {}
    for s in shards:
        split = by_split.setdefault(s["split"], {"shards": 0, "num_tokens": 0, "num_documents": 0})
        split["shards"] += 1
        split["num_tokens"] += s["num_tokens"]
        split["num_documents"] += int(s["num_documents"] or 0)
    tokenizer = data.get("tokenizer")
    totals = data.get("totals") if isinstance(data.get("totals"), dict) else {}
    return {
        "tokenizer": tokenizer.get("name") if isinstance(tokenizer, dict) else tokenizer,
        "tokenizer_info": tokenizer,
        "format": data.get("format"),
        "vocab_size": data.get("vocab_size"),
        "eot_token": data.get("eot_token"),
        "dtypes": sorted({str(s["dtype"]) for s in shards if s["dtype"]})
        or ([data["dtype"]] if "dtype" in data else []),
        "shards": shards,
        "by_split": by_split,
        "totals": {
            "shards": len(shards),
            "num_tokens": int(totals.get("num_tokens", sum(s["num_tokens"] for s in shards))),
            "num_documents": int(totals.get("num_documents", sum(int(s["num_documents"] or 0) for s in shards))),
        },
    }


def load_validation(path: Location) -> dict[str, Any] | None:
    """GPU validation: loss curves, the unigram entropy they must beat, throughput and the verdict.

    Expected: ``{"verdict": "pass"|"fail", "passed": bool, "reason", "unigram_entropy",
    "loss_curve": [{"step", "train_loss", "val_loss"}], "tokens_per_second", "mfu", "device",
    "loss_unit"}``; curves may also be ``train_loss``/``val_loss`` lists of ``[step, loss]``.
    """
    return _load(path, _parse_validation)


def _parse_validation(data: dict[str, Any]) -> dict[str, Any]:
    curve = data.get("loss_curve", data.get("curve", []))
    train = _curve(data.get("train_loss", curve), "train_loss")
    val = _curve(data.get("val_loss", curve), "val_loss")
    verdict = data.get("verdict")
    passed = data.get("passed", data.get("pass"))
    if passed is None and isinstance(verdict, str):
        passed = verdict.lower() in ("pass", "passed", "ok")
    return {
        "verdict": verdict if verdict is not None else ("pass" if passed else "fail" if passed is False else None),
        "passed": passed,
        "reason": str(data.get("reason", data.get("message")) or "") or None,
        "unigram_entropy": _number(data.get("unigram_entropy")),
        "final_val_loss": _number(data.get("final_val_loss", val[-1][1] if val else None)),
        "tokens_per_second": _number(data.get("tokens_per_second", data.get("tokens_per_s"))),
        "mfu": _number(data.get("mfu")),
        "device": data.get("device"),
        "loss_unit": data.get("loss_unit", "nats"),
        "train_curve": train,
        "val_curve": val,
        "summary": _scalars(data),
    }


def _curve(raw: Any, key: str) -> list[tuple[float, float]]:
    """Points (step, loss) from ``[{"step", key}]``, ``[[step, loss]]``, ``{"step": [...], key: [...]}`` or losses."""
    points: list[tuple[float, float]] = []
    if isinstance(raw, dict) and key in raw:
        steps = raw.get("step", raw.get("steps", list(range(len(raw[key])))))
        raw = [{"step": s, key: v} for s, v in zip(steps, raw[key], strict=False)]
    if not isinstance(raw, list):
        return points
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            value = item.get(key, item.get("loss") if len(item) == 2 else None)
            step = item.get("step", i)
        elif isinstance(item, list | tuple) and len(item) == 2:
            step, value = item
        else:
            step, value = i, item
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            points.append((float(step), float(value)))
    return points
