"""Per-document distributions of a batch, small enough to live in a part's stats and merge across parts.

The report must not re-read the corpus, so every pass profiles the documents it keeps, batch by batch:
language counts and language-score histograms, log-spaced length histograms (characters, words and,
once tokenized, tokens), and domain and TLD counters. Histograms use fixed bins, so merging two
profiles is adding counts. Domain and TLD counters keep the top ``top_n`` entries and fold the rest
into an "other" count: totals stay exact, but a merged top list is approximate (a domain spread thinly
over many parts can be missing from it), which the report says.

Quality filters can add ``signals``: histograms of a signal over everything a filter saw, split into
kept and dropped rows, with the filter's thresholds, so the report draws where each cut falls.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.schema import DROP_REASON

PROFILE_VERSION = 1
TOP_N = 2000
"""Domains (and TLDs) kept per profile; the rest are counted in ``*_other``."""

UNKNOWN = "(none)"
"""Key for documents without a language or domain."""

SCORE_EDGES: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
"""Language score bins: 20 bins of 0.05 over [0, 1]; a score of exactly 1.0 counts in the last bin."""

LENGTH_EDGES: tuple[float, ...] = (0.0, *(round(10 ** (k / 10), 6) for k in range(81)))
"""Length bins: [0, 1), then 10 log-spaced bins per decade from 1 to 1e8; longer values count in the last bin."""


@dataclass
class Histogram:
    """Counts over fixed ``edges`` (bin i is [edges[i], edges[i+1])); values outside are clamped to the ends."""

    edges: tuple[float, ...]
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.edges) < 2:
            raise ValueError("a histogram needs at least two edges")
        if not self.counts:
            self.counts = [0] * (len(self.edges) - 1)
        elif len(self.counts) != len(self.edges) - 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.edges) - 1} bins")

    @property
    def total(self) -> int:
        return sum(self.counts)

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (NaN ignored), vectorised."""
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        bins = bin_index(values, self.edges)
        added = np.bincount(bins, minlength=len(self.counts))
        self.counts = [a + int(b) for a, b in zip(self.counts, added, strict=True)]

    def merge(self, other: Histogram) -> None:
        if tuple(other.edges) != tuple(self.edges):
            raise ValueError("cannot merge histograms with different bins")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    def quantile(self, q: float) -> float | None:
        """Approximate ``q``-quantile: the upper edge of the bin where the cumulative count reaches q."""
        total = self.total
        if total == 0:
            return None
        target = q * total
        running = 0
        for i, count in enumerate(self.counts):
            running += count
            if running >= target and count:
                return float(self.edges[i + 1])
        return float(self.edges[-1])

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Histogram:
        return cls(tuple(float(e) for e in d["edges"]), [int(c) for c in d["counts"]])


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value for ``edges``, clamped to the first and last bin."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def log_edges(low: float, high: float, per_decade: int = 10) -> tuple[float, ...]:
    """Log-spaced edges from ``low`` to ``high`` (both > 0), ``per_decade`` bins per factor of ten."""
    if not 0 < low < high:
        raise ValueError("log edges need 0 < low < high")
    n = max(1, math.ceil(math.log10(high / low) * per_decade))
    return tuple(float(x) for x in np.round(np.geomspace(low, high, n + 1), 9))


def linear_edges(low: float, high: float, bins: int = 20) -> tuple[float, ...]:
    if not low < high or bins < 1:
        raise ValueError("linear edges need low < high and bins >= 1")
    return tuple(float(x) for x in np.round(np.linspace(low, high, bins + 1), 9))


@dataclass(frozen=True)
class SignalSpec:
    """How a quality signal is binned, and the thresholds a filter applies to it (label -> value)."""

    edges: tuple[float, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    log: bool = False
    stage: str = ""


@dataclass
class SignalHistogram:
    """One quality signal over the rows a filter saw: kept and dropped counts per bin, plus its thresholds."""

    kept: Histogram
    dropped: Histogram
    thresholds: dict[str, float] = field(default_factory=dict)
    log: bool = False
    stage: str = ""
    missing: int = 0

    @classmethod
    def empty(cls, spec: SignalSpec) -> SignalHistogram:
        return cls(Histogram(spec.edges), Histogram(spec.edges), dict(spec.thresholds), spec.log, spec.stage)

    def merge(self, other: SignalHistogram) -> None:
        self.kept.merge(other.kept)
        self.dropped.merge(other.dropped)
        self.thresholds = {**other.thresholds, **self.thresholds}
        self.missing += other.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "edges": list(self.kept.edges),
            "kept": list(self.kept.counts),
            "dropped": list(self.dropped.counts),
            "thresholds": dict(self.thresholds),
            "log": self.log,
            "stage": self.stage,
            "missing": self.missing,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SignalHistogram:
        edges = tuple(float(e) for e in d["edges"])
        return cls(
            Histogram(edges, [int(c) for c in d["kept"]]),
            Histogram(edges, [int(c) for c in d["dropped"]]),
            {str(k): float(v) for k, v in d.get("thresholds", {}).items()},
            bool(d.get("log", False)),
            str(d.get("stage", "")),
            int(d.get("missing", 0)),
        )


def _length_histogram() -> Histogram:
    return Histogram(LENGTH_EDGES)


@dataclass
class DocumentProfile:
    """Distributions of a set of documents; :meth:`merge` adds another set (another batch or part)."""

    docs: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    tokens: int = 0
    token_docs: int = 0
    """Documents that had a token count (the ``tokens`` histogram and sum cover only these)."""
    languages: Counter[str] = field(default_factory=Counter)
    language_score: dict[str, Histogram] = field(default_factory=dict)
    """Score histogram per language (SCORE_EDGES)."""
    chars_hist: Histogram = field(default_factory=_length_histogram)
    words_hist: Histogram = field(default_factory=_length_histogram)
    tokens_hist: Histogram = field(default_factory=_length_histogram)
    domains: Counter[str] = field(default_factory=Counter)
    domains_other: int = 0
    tlds: Counter[str] = field(default_factory=Counter)
    tlds_other: int = 0
    top_n: int = TOP_N
    truncated: bool = False
    """True once a domain/TLD counter dropped entries: its top list is then approximate."""
    signals: dict[str, SignalHistogram] = field(default_factory=dict)

    def merge(self, other: DocumentProfile) -> DocumentProfile:
        """Add ``other`` into this profile (in place) and return self."""
        self.docs += other.docs
        self.bytes += other.bytes
        self.chars += other.chars
        self.words += other.words
        self.tokens += other.tokens
        self.token_docs += other.token_docs
        self.languages.update(other.languages)
        for lang, hist in other.language_score.items():
            self.language_score.setdefault(lang, Histogram(SCORE_EDGES)).merge(hist)
        self.chars_hist.merge(other.chars_hist)
        self.words_hist.merge(other.words_hist)
        self.tokens_hist.merge(other.tokens_hist)
        self.domains.update(other.domains)
        self.domains_other += other.domains_other
        self.tlds.update(other.tlds)
        self.tlds_other += other.tlds_other
        self.truncated = self.truncated or other.truncated
        self.add_signals(other.signals)
        self._truncate()
        return self

    def add_signals(self, signals: Mapping[str, SignalHistogram]) -> None:
        """Merge signal histograms (e.g. from :func:`signal_histograms` on a filter's output) into this profile."""
        for name, sig in signals.items():
            if name in self.signals:
                self.signals[name].merge(sig)
            else:
                self.signals[name] = SignalHistogram.from_json(sig.to_json())

    def language_score_total(self) -> Histogram:
        total = Histogram(SCORE_EDGES)
        for hist in self.language_score.values():
            total.merge(hist)
        return total

    def _truncate(self) -> None:
        """Keep the top ``top_n`` domains and TLDs, folding the rest into ``*_other`` (ties broken by name)."""
        if len(self.domains) > self.top_n:
            self.domains, dropped = _top(self.domains, self.top_n)
            self.domains_other += dropped
            self.truncated = True
        if len(self.tlds) > self.top_n:
            self.tlds, dropped = _top(self.tlds, self.top_n)
            self.tlds_other += dropped
            self.truncated = True

    def to_json(self) -> dict[str, Any]:
        self._truncate()
        return {
            "version": PROFILE_VERSION,
            "docs": self.docs,
            "bytes": self.bytes,
            "chars": self.chars,
            "words": self.words,
            "tokens": self.tokens,
            "token_docs": self.token_docs,
            "languages": dict(self.languages.most_common()),
            "language_score": {
                "edges": list(SCORE_EDGES),
                "by_language": {k: v.counts for k, v in sorted(self.language_score.items())},
            },
            "chars_hist": self.chars_hist.to_json(),
            "words_hist": self.words_hist.to_json(),
            "tokens_hist": self.tokens_hist.to_json(),
            "domains": dict(_sorted_items(self.domains)),
            "domains_other": self.domains_other,
            "tlds": dict(_sorted_items(self.tlds)),
            "tlds_other": self.tlds_other,
            "top_n": self.top_n,
            "truncated": self.truncated,
            "signals": {k: v.to_json() for k, v in sorted(self.signals.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DocumentProfile:
        version = int(d.get("version", PROFILE_VERSION))
        if version != PROFILE_VERSION:
            raise ValueError(f"profile version {version} is not supported (expected {PROFILE_VERSION})")
        score = d.get("language_score", {})
        score_edges = tuple(float(e) for e in score.get("edges", SCORE_EDGES))
        return cls(
            docs=int(d.get("docs", 0)),
            bytes=int(d.get("bytes", 0)),
            chars=int(d.get("chars", 0)),
            words=int(d.get("words", 0)),
            tokens=int(d.get("tokens", 0)),
            token_docs=int(d.get("token_docs", 0)),
            languages=Counter({str(k): int(v) for k, v in d.get("languages", {}).items()}),
            language_score={k: Histogram(score_edges, list(v)) for k, v in score.get("by_language", {}).items()},
            chars_hist=Histogram.from_json(d["chars_hist"]) if "chars_hist" in d else _length_histogram(),
            words_hist=Histogram.from_json(d["words_hist"]) if "words_hist" in d else _length_histogram(),
            tokens_hist=Histogram.from_json(d["tokens_hist"]) if "tokens_hist" in d else _length_histogram(),
            domains=Counter({str(k): int(v) for k, v in d.get("domains", {}).items()}),
            domains_other=int(d.get("domains_other", 0)),
            tlds=Counter({str(k): int(v) for k, v in d.get("tlds", {}).items()}),
            tlds_other=int(d.get("tlds_other", 0)),
            top_n=int(d.get("top_n", TOP_N)),
            truncated=bool(d.get("truncated", False)),
            signals={k: SignalHistogram.from_json(v) for k, v in d.get("signals", {}).items()},
        )


def _sorted_items(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def _top(counter: Counter[str], n: int) -> tuple[Counter[str], int]:
    items = _sorted_items(counter)
    return Counter(dict(items[:n])), sum(v for _, v in items[n:])


def profile_documents(table: pa.Table, top_n: int = TOP_N) -> DocumentProfile:
    """Profile a batch of kept documents (any subset of the document columns), vectorised with pyarrow.

    Words are runs of non-whitespace (Unicode whitespace), so for scripts written without spaces a
    "word" is a whole phrase; characters are Unicode code points; bytes are UTF-8 bytes.
    """
    profile = DocumentProfile(docs=table.num_rows, top_n=top_n)
    if table.num_rows == 0:
        return profile
    names = set(table.column_names)
    if "text" in names:
        _profile_text(profile, table.column("text"))
    if "language" in names:
        _profile_languages(
            profile, table.column("language"), table.column("language_score") if "language_score" in names else None
        )
    if "token_count" in names:
        _profile_tokens(profile, table.column("token_count"))
    if "domain" in names:
        _profile_domains(profile, table.column("domain"))
    profile._truncate()
    return profile


def _profile_text(profile: DocumentProfile, text: pa.ChunkedArray) -> None:
    text = pc.fill_null(text, "")
    profile.bytes = int(pc.sum(pc.binary_length(text)).as_py() or 0)
    chars = pc.utf8_length(text).to_numpy(zero_copy_only=False)
    words = word_counts(text)
    profile.chars = int(chars.sum())
    profile.words = int(words.sum())
    profile.chars_hist.add(chars)
    profile.words_hist.add(words)


def word_counts(text: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Words per document as ``str.split()`` counts them: runs of non-whitespace (Unicode whitespace).

    Arrow's whitespace split yields empty strings between consecutive spaces, so only non-empty pieces
    count; done on the flattened pieces with their parent index, no Python loop.
    """
    chunks = text.chunks if isinstance(text, pa.ChunkedArray) else [text]
    counts = [np.zeros(0, dtype=np.int64)]
    for chunk in chunks:
        pieces = pc.utf8_split_whitespace(chunk)
        parents = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False)
        nonempty = pc.greater(pc.binary_length(pc.list_flatten(pieces)), 0).to_numpy(zero_copy_only=False)
        counts.append(np.bincount(parents[nonempty], minlength=len(chunk)))
    return np.concatenate(counts)


def _profile_languages(profile: DocumentProfile, language: pa.ChunkedArray, score: pa.ChunkedArray | None) -> None:
    language = pc.fill_null(language, UNKNOWN)
    for item in pc.value_counts(language).to_pylist():
        profile.languages[item["values"]] += item["counts"]
    if score is None:
        return
    encoded = pc.dictionary_encode(language).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = pc.fill_null(pc.cast(score, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
    valid = ~np.isnan(values)
    nbins = len(SCORE_EDGES) - 1
    keys = codes[valid].astype(np.int64) * nbins + bin_index(values[valid], SCORE_EDGES)
    counts = np.bincount(keys, minlength=len(encoded.dictionary) * nbins).reshape(-1, nbins)
    for i, lang in enumerate(encoded.dictionary.to_pylist()):
        if counts[i].any():
            hist = profile.language_score.setdefault(lang, Histogram(SCORE_EDGES))
            hist.merge(Histogram(SCORE_EDGES, [int(c) for c in counts[i]]))


def _profile_tokens(profile: DocumentProfile, token_count: pa.ChunkedArray) -> None:
    valid = pc.drop_null(token_count)
    if len(valid) == 0:
        return
    values = valid.to_numpy()
    profile.token_docs = int(values.size)
    profile.tokens = int(values.sum(dtype=np.int64))
    profile.tokens_hist.add(values)


def _profile_domains(profile: DocumentProfile, domain: pa.ChunkedArray) -> None:
    for item in pc.value_counts(pc.fill_null(domain, UNKNOWN)).to_pylist():
        host, count = item["values"], item["counts"]
        profile.domains[host] += count
        profile.tlds[public_suffix(host)] += count


@functools.lru_cache(maxsize=1)
def _extractor() -> Any:
    """tldextract on the public suffix snapshot bundled with the package: never touches the network."""
    from tldextract import TLDExtract

    return TLDExtract(suffix_list_urls=(), cache_dir=None)


@functools.lru_cache(maxsize=200_000)
def public_suffix(host: str) -> str:
    """The public suffix of ``host`` (``com``, ``co.uk``); ``(ip)`` for addresses, ``(none)`` when unknown."""
    if host == UNKNOWN or not host:
        return UNKNOWN
    bare = host.strip("[]")
    if ":" in bare or bare.replace(".", "").isdigit():
        return "(ip)"
    suffix = _extractor()(host).suffix
    return suffix or UNKNOWN


def signal_histograms(table: pa.Table, specs: Mapping[str, SignalSpec]) -> dict[str, SignalHistogram]:
    """Histogram each signal column named in ``specs`` over every row of a filter's output.

    Call it on the output *before* dropped rows are split off, so rows past a threshold are counted too;
    rows whose ``drop_reason`` is set count as dropped. Missing columns are skipped; null values are
    counted in ``missing``.
    """
    if DROP_REASON in table.column_names:
        dropped = pc.is_valid(table.column(DROP_REASON)).to_numpy(zero_copy_only=False)
    else:
        dropped = np.zeros(table.num_rows, dtype=bool)
    out: dict[str, SignalHistogram] = {}
    for name, spec in specs.items():
        if name not in table.column_names:
            continue
        sig = SignalHistogram.empty(spec)
        values = pc.cast(table.column(name), pa.float64())
        sig.missing = values.null_count
        array = pc.fill_null(values, float("nan")).to_numpy(zero_copy_only=False)
        sig.kept.add(array[~dropped])
        sig.dropped.add(array[dropped])
        out[name] = sig
    return out


RATIO_EDGES = linear_edges(0.0, 1.0, 50)
"""Bins of signals named ``*_frac`` / ``*_ratio``: fractions, 50 bins over [0, 1] (above 1 counts in the last)."""
MAGNITUDE_EDGES = (0.0, *log_edges(0.1, 1e7, 20))
"""Bins of other signals (counts, lengths): [0, 0.1), then 20 log-spaced bins per decade up to 1e7."""


def default_signal_spec(name: str, thresholds: Mapping[str, float] | None = None, stage: str = "") -> SignalSpec:
    """Fixed bins chosen from the signal's name, so the same signal merges across parts and runs."""
    if name.endswith(("_frac", "_ratio")) or "_frac_" in name or "_ratio_" in name:
        return SignalSpec(RATIO_EDGES, dict(thresholds or {}), log=False, stage=stage)
    return SignalSpec(MAGNITUDE_EDGES, dict(thresholds or {}), log=True, stage=stage)


def stage_signal_histograms(
    stage: Any, before: pa.Table, after: pa.Table, measured: Mapping[str, np.ndarray] | None = None
) -> dict[str, SignalHistogram]:
    """The quality signals of one stage over every row it judged (kept and dropped), with its thresholds.

    Understands two kinds of stage, by duck typing:

    - a filter with ``signals(texts) -> {name: array}`` and ``thresholds() -> [(rule, signal, op, value)]``
      (``filters.base.TextFilter``): the signals are measured on the stage's input texts, a second
      measurement pass costing about what the filter itself costs, unless the caller passes them as
      ``measured`` (a filter with ``filter_with_signals`` measured them while deciding);
    - a stage with ``signal_columns: {column: SignalSpec}`` whose output carries the signal as a column
      (e.g. the language score): nothing is measured twice.

    ``before`` is the stage's input, ``after`` its output before dropped rows are split off (same rows).
    Returns {} for any other stage.
    """
    columns = getattr(stage, "signal_columns", None)
    if isinstance(columns, Mapping) and columns:
        return signal_histograms(after, columns)
    measure, rules = getattr(stage, "signals", None), getattr(stage, "thresholds", None)
    if not callable(measure) or after.num_rows != before.num_rows or "text" not in before.column_names:
        return {}
    name = str(getattr(stage, "name", ""))
    thresholds: dict[str, dict[str, float]] = {}
    for rule in rules() if callable(rules) else []:
        thresholds.setdefault(rule.signal, {})[f"{rule.rule} ({rule.op})"] = float(rule.value)
    values = measured if measured is not None else measure([t or "" for t in before.column("text").to_pylist()])
    table = after.select([c for c in after.column_names if c == DROP_REASON])
    specs: dict[str, SignalSpec] = {}
    for signal, array in values.items():
        if len(array) != after.num_rows:
            continue
        table = table.append_column(
            signal, pa.array(np.asarray(array, dtype=np.float64), pa.float64(), from_pandas=True)
        )
        specs[signal] = default_signal_spec(signal, thresholds.get(signal), stage=name)
    return signal_histograms(table, specs)
