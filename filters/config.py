"""Typed settings of the quality filters; defaults are FineWeb's, i.e. datatrove's filters as FineWeb ran them.

FineWeb's pipeline (datatrove ``examples/fineweb.py``) runs, after language ID: ``GopherRepetitionFilter()``,
``GopherQualityFilter()``, ``C4QualityFilter(filter_no_terminal_punct=False)``, ``FineWebQualityFilter()``, all
with their defaults otherwise. As in datatrove, a threshold set to null (or 0, for the Gopher fractions and
word counts) turns its rule off.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.core.settings import Settings

Language = Literal["en"]


class GopherRepetitionConfig(Settings):
    """Gopher's repetition rules (Rae et al. 2021, table A1): repeated lines, paragraphs and n-grams."""

    enabled: bool = True
    dup_line_frac: float | None = Field(0.3, ge=0, le=1, description="Max fraction of lines that repeat a line.")
    dup_para_frac: float | None = Field(0.3, ge=0, le=1, description="Max fraction of paragraphs that repeat.")
    dup_line_char_frac: float | None = Field(0.2, ge=0, le=1, description="Max share of characters in repeated lines.")
    dup_para_char_frac: float | None = Field(
        0.2, ge=0, le=1, description="Max share of characters in repeated paragraphs."
    )
    top_n_grams: tuple[tuple[int, float], ...] = Field(
        ((2, 0.2), (3, 0.18), (4, 0.16)),
        description="(n, max share of characters covered by the most frequent word n-gram).",
    )
    dup_n_grams: tuple[tuple[int, float], ...] = Field(
        ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
        description="(n, max share of characters in word n-grams that repeat an earlier one).",
    )
    language: Language = "en"


class GopherQualityConfig(Settings):
    """Gopher's quality rules: length, word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    enabled: bool = True
    min_doc_words: int | None = Field(50, ge=0, description="Min words that are not only punctuation.")
    max_doc_words: int | None = Field(100_000, ge=0, description="Max words that are not only punctuation.")
    min_avg_word_length: float | None = Field(3, ge=0, description="Min mean length of those words.")
    max_avg_word_length: float | None = Field(10, ge=0, description="Max mean length of those words.")
    max_symbol_word_ratio: float | None = Field(0.1, ge=0, description="Max '#' (and, apart, ellipses) per word.")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1, description="Max share of lines starting '•'/'-'.")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1, description="Max share of lines ending '...'.")
    max_non_alpha_words_ratio: float | None = Field(
        0.8, ge=0, le=1, description="Min share of words with a letter (datatrove's name for it, kept)."
    )
    min_stop_words: int | None = Field(2, ge=0, description="Min distinct stop words present.")
    stop_words: tuple[str, ...] | None = Field(None, description="Stop words (default: Gopher's eight).")
    language: Language = "en"


class C4Config(Settings):
    """C4's rules (Raffel et al. 2020): line cleaning, then document rules; FineWeb keeps unpunctuated lines."""

    enabled: bool = True
    split_paragraph: bool = Field(True, description="Judge lines (C4); false judges spaCy sentences instead.")
    remove_citations: bool = Field(True, description="Remove Wikipedia-style [1], [edit], [citation needed].")
    filter_no_terminal_punct: bool = Field(False, description="Remove lines not ending in . ? ! \" ' (C4: true).")
    min_num_sentences: int = Field(5, ge=-1, description="Drop documents with fewer sentences left (-1: off).")
    min_words_per_line: int = Field(3, ge=-1, description="Remove lines with fewer words (-1: off).")
    max_word_length: int = Field(1000, ge=-1, description="Remove lines holding a longer word (-1: off).")
    filter_lorem_ipsum: bool = Field(True, description="Drop documents containing 'lorem ipsum'.")
    filter_javascript: bool = Field(True, description="Remove lines mentioning 'javascript'.")
    filter_curly_bracket: bool = Field(True, description="Drop documents containing '{'.")
    filter_policy: bool = Field(True, description="Remove lines about cookies, terms of use, privacy policy.")
    language: Language = "en"


class FineWebQualityConfig(Settings):
    """FineWeb's own rules (Penedo et al. 2024): punctuation, short lines, duplicated lines, list-like pages."""

    enabled: bool = True
    line_punct_thr: float = Field(0.12, ge=0, le=1, description="Min share of lines ending in terminal punctuation.")
    line_punct_exclude_zero: bool = Field(False, description="Keep documents where no line ends in punctuation.")
    stop_chars: tuple[str, ...] | None = Field(None, description="Line-ending characters (default: terminal ones).")
    short_line_thr: float = Field(0.67, ge=0, le=1, description="Max share of lines of at most short_line_length.")
    short_line_length: int = Field(30, ge=0, description="Characters that make a line short.")
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1, description="Max share of characters in repeated lines.")
    new_line_ratio: float = Field(0.3, ge=0, description="Max newlines per word.")
    language: Language = "en"


class UrlFilterConfig(Settings):
    """FineWeb's URL filter: UT1 blocklist plus banned and soft-banned words (lists shipped with datatrove)."""

    enabled: bool = True
    soft_word_threshold: int = Field(2, ge=1, description="Drop a URL with at least this many soft-banned words.")
    extra_domains: list[str] = Field(default_factory=list, description="More domains to block.")
    extra_urls: list[str] = Field(default_factory=list, description="More exact URLs to block.")
    extra_banned_words: list[str] = Field(default_factory=list, description="More words that block a URL.")


PII_KINDS = ("email", "ip")
"""What the PII stage can replace, in the order it replaces them (datatrove's ``PIIFormatter``)."""

PiiKind = Literal["email", "ip"]


class PiiConfig(Settings):
    """FineWeb's last step: email and public IP addresses replaced as datatrove's ``PIIFormatter`` does."""

    enabled: bool = Field(True, description="Replace email and IP addresses in the text (FineWeb's last step).")
    kinds: tuple[PiiKind, ...] = Field(PII_KINDS, description="What to replace: email, ip (or both).")
    only_public_ips: bool = Field(
        True, description="Replace only public IP addresses (not private, loopback, reserved), as FineWeb."
    )
    email_replacements: tuple[str, ...] = Field(
        ("email@example.com", "firstname.lastname@example.org"),
        min_length=1,
        description="Replacement emails, used in turn within a document.",
    )
    ip_replacements: tuple[str, ...] = Field(
        ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168"),
        min_length=1,
        description="Replacement IP addresses, used in turn within a document.",
    )


class BenchmarkConfig(Settings):
    """One benchmark to decontaminate against: a name (the drop reason) and a file with a text field."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Names the drop reason: decontaminate:<name>.")
    path: str = Field(description="JSONL, Parquet or text file (.gz allowed): a local path or a store URL.")
    field: str = Field("text", description="The text field (JSONL, Parquet); a list of strings counts each one.")
    format: Literal["auto", "jsonl", "parquet", "text"] = Field(
        "auto", description="auto: from the file name (.jsonl/.json/.ndjson, .parquet, .txt); text: one entry a line."
    )


class DecontaminateConfig(Settings):
    """Benchmark decontamination: drop documents sharing a word n-gram with a benchmark (off with no benchmark)."""

    benchmarks: tuple[BenchmarkConfig, ...] = Field((), description="Benchmarks to index, each named.")
    n: int = Field(13, ge=1, description="Words per n-gram (13: GPT-3's decontamination).")
    normalise_numbers: bool = Field(True, description="Match numbers whatever their digits (each becomes 0).")

    @property
    def enabled(self) -> bool:
        return bool(self.benchmarks)

    @model_validator(mode="after")
    def _unique_names(self) -> DecontaminateConfig:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names must be unique, got {names}")
        return self


DCLM_THRESHOLD = 0.018112
"""DCLM-Baseline's cut on its fastText classifier's ``__label__hq`` score (about its top 10%)."""


class QualityClassifierConfig(Settings):
    """Model-based quality scoring with a fastText supervised classifier (DCLM's, or your own); off by default."""

    enabled: bool = Field(False, description="Score every document (quality_score) after the quality filters.")
    model: str | None = Field(
        None, description="fastText supervised model (.bin/.ftz): a local path or a URL (https://, s3://), cached."
    )
    label: str = Field("__label__hq", description="The label whose probability is the score (DCLM: __label__hq).")
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"Drop documents scoring below this (DCLM-Baseline: {DCLM_THRESHOLD}); null: score only.",
    )

    @model_validator(mode="after")
    def _usable_model(self) -> QualityClassifierConfig:
        """A missing or wrong local model file must fail when the config loads (its header is enough to tell)."""
        if not self.enabled:
            return self
        if not self.model:
            raise ValueError("quality_classifier.enabled needs quality_classifier.model (a path or URL)")
        from filters.quality_classifier import check_model_file, model_file
        from pipeline.core.storage import is_remote

        if not is_remote(self.model):
            check_model_file(model_file(self.model), self.model)
        return self


QUALITY_FILTER_ORDER = ("gopher_repetition", "gopher_quality", "c4", "fineweb_quality")
"""FineWeb's order of the quality filters (after language ID)."""


class QualityConfig(Settings):
    """The quality filters of a run: which run, in what order, and their settings."""

    filters: tuple[str, ...] = Field(
        QUALITY_FILTER_ORDER, description="Registered filter names, in the order they run (disabled ones skipped)."
    )
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb_quality: FineWebQualityConfig = Field(default_factory=FineWebQualityConfig)
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Settings of filters registered outside this package, by filter name."
    )
    plugins: tuple[str, ...] = Field(
        (), description="Modules to import before the filters are built (where extra filters register)."
    )
    extra: tuple[str, ...] = Field(
        (), description="Registered filter names to run after `filters` (plugins, without restating the default list)."
    )

    @property
    def chain(self) -> tuple[str, ...]:
        """Every filter name in the order the filters run: ``filters``, then ``extra``."""
        return (*self.filters, *self.extra)

    @model_validator(mode="after")
    def _known_filters(self) -> QualityConfig:
        """A misspelt filter name must fail when the config loads, not in every part after the downloads."""
        from filters.registry import check_filters

        check_filters(self)
        return self
