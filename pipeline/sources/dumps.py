"""Which Common Crawl dump is the newest (the scheduled "newest dump" deployment runs on it).

Common Crawl announces finished crawls in ``collinfo.json`` on its index server, newest first;
a local mirror folder, or a mirror on an object store, simply holds ``crawl-data/<dump>/warc.paths.gz`` per dump.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from pipeline.core.storage import describe_storage_error
from pipeline.sources.download import DownloadError, is_local, local_dir, new_session
from pipeline.sources.store import S3_SCHEMES, is_store_url, source_filesystem

log = logging.getLogger(__name__)

COLLINFO_URL = "https://index.commoncrawl.org/collinfo.json"
_DUMP_RE = re.compile(r"^CC-MAIN-(\d{4})-(\d{2})$")
_COMMON_CRAWL_HOSTS = ("commoncrawl.org", "commoncrawl.s3.amazonaws.com")
_COMMON_CRAWL_BUCKET = "commoncrawl"


def dump_order(dump: str) -> tuple[int, int]:
    """(year, week) of a dump id, so ids sort by time; ValueError for anything else."""
    m = _DUMP_RE.match(dump)
    if not m:
        raise ValueError(f"not a dump id: {dump!r} (expected e.g. CC-MAIN-2024-22)")
    return int(m.group(1)), int(m.group(2))


def newest_of(dumps: list[str]) -> str:
    """The newest dump id among ``dumps``; entries that are not dump ids are ignored."""
    valid = [d for d in dumps if _DUMP_RE.match(d)]
    if not valid:
        raise ValueError(f"no dump ids (CC-MAIN-YYYY-WW) among {len(dumps)} entries")
    return max(valid, key=dump_order)


def local_dumps(base_url: str) -> list[str]:
    """Dumps of a local mirror folder: ``crawl-data/CC-MAIN-*`` folders that hold a ``warc.paths.gz``."""
    crawl_data = local_dir(base_url) / "crawl-data"
    if not crawl_data.is_dir():
        raise FileNotFoundError(f"{crawl_data} does not exist: {base_url!r} is not a Common Crawl mirror folder")
    return sorted(p.name for p in crawl_data.iterdir() if _DUMP_RE.match(p.name) and (p / "warc.paths.gz").is_file())


def newest_store_dump(
    base_url: str, storage_options: Mapping[str, Any] | None = None, *, timeout_s: float = 30.0
) -> str:
    """The newest dump of a mirror on a store: its newest ``crawl-data/CC-MAIN-*`` folder with a ``warc.paths.gz``.

    One listing of ``crawl-data/``, then one existence check per dump from the newest down (usually one).
    """
    where = base_url.rstrip("/") + "/crawl-data/"
    try:
        fs, path = source_filesystem(where, storage_options, timeout_s=timeout_s)
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
        for dump in sorted((n for n in names if _DUMP_RE.match(n)), key=dump_order, reverse=True):
            if fs.exists(f"{path.rstrip('/')}/{dump}/warc.paths.gz"):
                return dump
    except FileNotFoundError as e:
        if "bucket does not exist" in describe_storage_error(e, where):
            raise DownloadError(describe_storage_error(e, where), url=where) from None
        raise DownloadError(f"cannot list dumps: {where} not found", url=where, status=404) from None
    except Exception as e:  # the store's own errors (denied, unreachable, no backend...)
        raise DownloadError(f"cannot list dumps: {describe_storage_error(e, where)}", url=where) from None
    raise DownloadError(f"cannot list dumps: no crawl-data/CC-MAIN-*/warc.paths.gz under {base_url}", url=where)


def collinfo_url_for(base_url: str) -> str:
    """Where the dump list of ``base_url`` lives: Common Crawl's index server, or ``<mirror>/collinfo.json``."""
    parsed = urlparse(base_url)
    host = parsed.hostname or ""
    if any(host == h or host.endswith("." + h) for h in _COMMON_CRAWL_HOSTS):
        return COLLINFO_URL
    if parsed.scheme.lower() in S3_SCHEMES and parsed.netloc == _COMMON_CRAWL_BUCKET:
        return COLLINFO_URL
    return base_url.rstrip("/") + "/collinfo.json"


def read_collinfo(url: str, *, retries: int = 3, timeout_s: float = 30.0, backoff_s: float = 2.0) -> list[str]:
    """Dump ids listed in a ``collinfo.json`` (a JSON list of objects with an ``id``), retrying transient errors."""
    last: Exception | None = None
    with new_session() as session:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                resp = session.get(url, timeout=timeout_s)
            except requests.RequestException as e:
                last = e
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = DownloadError(f"HTTP {resp.status_code} for {url}", url=url, status=resp.status_code)
                continue
            if resp.status_code != 200:
                raise DownloadError(f"cannot list dumps: HTTP {resp.status_code} for {url}", url=url)
            try:
                entries = json.loads(resp.content)
            except ValueError as e:
                raise DownloadError(f"cannot list dumps: {url} is not JSON ({e})", url=url) from None
            if not isinstance(entries, list):
                raise DownloadError(f"cannot list dumps: {url} holds {type(entries).__name__}, not a list", url=url)
            return [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]
    raise DownloadError(f"cannot list dumps from {url} after {retries + 1} attempts: {last}", url=url)


def newest_dump(
    base_url: str,
    *,
    collinfo_url: str | None = None,
    timeout_s: float = 30.0,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """The newest dump ``base_url`` offers: a mirror folder's (local or on a store) newest ``crawl-data/`` dump,
    else (Common Crawl itself, its bucket included, or an HTTP mirror) the newest in collinfo.json."""
    if collinfo_url is None and is_store_url(base_url) and collinfo_url_for(base_url) != COLLINFO_URL:
        dump = newest_store_dump(base_url, storage_options, timeout_s=timeout_s)
        log.info("newest dump at %scrawl-data/: %s", base_url.rstrip("/") + "/", dump)
        return dump
    if is_local(base_url) and collinfo_url is None:
        dumps = local_dumps(base_url)
        where = str(Path(local_dir(base_url)) / "crawl-data")
    else:
        where = collinfo_url or collinfo_url_for(base_url)
        dumps = read_collinfo(where, timeout_s=timeout_s)
    dump = newest_of(dumps)
    log.info("newest dump at %s: %s (of %d)", where, dump, len(dumps))
    return dump
