"""Settings of where WARC files come from and how they are fetched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pipeline.core.settings import Settings
from pipeline.core.storage import StorageError, location
from pipeline.sources.store import is_store_url

COMMON_CRAWL_BASE_URL = "https://data.commoncrawl.org/"
DEFAULT_DUMP = "CC-MAIN-2024-22"
_DUMP_RE = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")


class SourceConfig(Settings):
    """Where WARC files come from and how they are fetched."""

    cc_base_url: str = Field(
        COMMON_CRAWL_BASE_URL,
        description="Where Common Crawl is read from (holds crawl-data/DUMP/warc.paths.gz): its HTTP server, "
        "its bucket s3://commoncrawl/ (read anonymously when no AWS credentials are set), any store URL "
        "(s3://bucket/prefix/, gs://...), or a local folder.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        exclude=True,  # may hold credentials: never written back (config.yaml, report, Prefect parameters)
        repr=False,
        description="fsspec options for reading a store cc_base_url only, over the run's storage_options, e.g. "
        "{anon: true} or {profile: cc}. Never recorded in the run's outputs.",
    )
    dump: str = Field(DEFAULT_DUMP, description="Crawl id, e.g. CC-MAIN-2024-22.")
    limit_warcs: int | None = Field(None, ge=1, description="Process only the first N WARC files of the dump.")
    download_dir: Path | None = Field(
        None,
        description="Where WARC files are cached with keep_warcs (default: OUTPUT_DIR/warc-cache, shared by the runs "
        "there; local scratch when OUTPUT_DIR is on a store).",
    )
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
    keep_warcs: bool = Field(
        False,
        description="Download each remote WARC file whole into download_dir before reading it, and keep it there "
        "(later runs and reruns read it without a request). Off: read it by byte ranges while it is processed, "
        "nothing written to disk, a unit fetching only its own range (a split file's, the rest after a checkpoint).",
    )
    checkpoint_every: int = Field(
        1000,
        ge=0,
        description="Commit a WARC file's documents in chunks of this many HTML pages, each with the byte offset "
        "of the next record, so a killed run resumes inside the file instead of redoing it (0: one commit per "
        "file). 1,000 pages is about a minute of one core; a 1 GB Common Crawl file has 30,000-40,000.",
    )
    split_warcs: int = Field(
        1,
        ge=1,
        le=1000,
        description="Cut every WARC file into this many byte ranges on record boundaries, each its own work unit, "
        "so one file is spread over several workers. Files that are not one gzip member per record are read "
        "whole by their first range. Keep it the same when rerunning into a run folder.",
    )

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
        if is_store_url(v):
            try:
                location(v)
            except StorageError as e:
                raise ValueError(str(e)) from None
        return v if v.endswith("/") else v + "/"
