"""Common Crawl's layout: a dump's ``warc.paths.gz`` listing, and a deterministic split of it across workers."""

from __future__ import annotations

import gzip
import logging
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.storage import scratch_dir
from pipeline.sources.download import DownloadError, TruncatedGzipError, fetch_warc, join_url

logger = logging.getLogger(__name__)


def warc_paths_url(base_url: str, dump: str) -> str:
    """Where a dump's listing lives: ``<base>/crawl-data/<dump>/warc.paths.gz``."""
    return join_url(base_url, _listing_rel(dump))


def warc_url(base_url: str, rel_path: str) -> str:
    """The URL (or local path, for a local base) of one listing entry."""
    return join_url(base_url, rel_path)


def list_warc_paths(
    base_url: str,
    dump: str,
    *,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """The dump's WARC paths, relative to ``base_url``, in listing order.

    The listing goes through the same retrying, verifying download as WARC files (over HTTP, or from a store
    URL with ``storage_options``), so a throttled or truncated listing is retried rather than silently shortened.
    """
    url = warc_paths_url(base_url, dump)
    with tempfile.TemporaryDirectory(prefix="cc-listing-", dir=scratch_dir()) as tmp:
        try:
            path = fetch_warc(
                base_url,
                _listing_rel(dump),
                Path(tmp),
                retries=retries,
                timeout_s=timeout_s,
                backoff_s=backoff_s,
                storage_options=storage_options,
            )
        except DownloadError as e:
            if e.status == 404:
                raise DownloadError(
                    f"no listing for dump {dump!r}: {url} not found; check the dump id "
                    f"(e.g. CC-MAIN-2024-22) and the base URL {base_url!r}",
                    url=url,
                    status=404,
                ) from None
            if isinstance(e, TruncatedGzipError):
                raise DownloadError(f"listing {url} is not a valid gzip file: {e}", url=url) from None
            raise
        paths = _read_listing(path, url)
    logger.info("listing %s: %d WARC files", url, len(paths))
    return paths


def select_warc_paths(paths: list[str], limit: int | None = None, shard: int = 0, num_shards: int = 1) -> list[str]:
    """The first ``limit`` paths, then every ``num_shards``-th from ``shard``: workers are disjoint and cover all."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    head = paths if limit is None else paths[:limit]
    return head[shard::num_shards]


def _listing_rel(dump: str) -> str:
    if not dump or "/" in dump or dump in (".", ".."):
        raise ValueError(f"invalid dump id {dump!r} (expected e.g. CC-MAIN-2024-22)")
    return f"crawl-data/{dump}/warc.paths.gz"


def _read_listing(path: Path, url: str) -> list[str]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            paths = [line.strip() for line in f if line.strip()]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DownloadError(f"listing {url} cannot be read as gzip text: {e}", url=url) from None
    if not paths:
        raise DownloadError(f"listing {url} is empty: no WARC paths", url=url)
    return paths
