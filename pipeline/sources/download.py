"""Fetch WARC files over HTTP or from an object store so that a caller only ever sees complete, verified files.

Common Crawl files are about 1 GB and served by a CDN that throttles (503, 429) and
resets connections, so a download resumes with Range requests, backs off with jitter,
and proves the result is a complete gzip stream before it gets its final name. A
``<name>.complete`` sidecar lets a rerun skip verified files without any request.

A connection that stalls or trickles would otherwise hold a worker for hours, so an attempt
must keep a minimum speed over a window (else it is retried like a reset), and the whole
download has a wall-time deadline (else it fails, keeping the partial file for a rerun).

A file whose bytes all arrived (the server's Content-Length / Content-Range total) but whose
gzip stream ends inside a member is truncated at the source: downloading it again returns the
same bytes. With ``salvage_truncated`` it is kept (sidecar ``truncated_at_source``) so the
reader can use the records before the cut; without, it fails at once. Corrupt data, a file
that is not gzip at all and HTTP errors still fail.

A base URL on an object store (``s3://commoncrawl/``, any fsspec URL: see ``pipeline.sources.store``) goes
through the same cache, lock, sidecar, verification, retries and limits; its bytes come in ranged reads
(sized to take about ``STORE_CHUNK_TARGET_S`` each, so the limits are checked as often as over HTTP).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse
from urllib.request import url2pathname

import fsspec
import fsspec.asyn
import fsspec.exceptions
import requests
import urllib3
from tqdm import tqdm

from pipeline import __version__
from pipeline.core.storage import Location, StorageError, describe_storage_error, is_remote, scratch_dir
from pipeline.sources.store import HTTP_SCHEMES, is_anonymous, is_store_url, source_filesystem

logger = logging.getLogger(__name__)

USER_AGENT = f"cc-refinery/{__version__} (Common Crawl pretraining data pipeline)"
CHUNK_BYTES = 1 << 20
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 300.0
MIN_SPEED_BPS = 50_000.0
"""Default minimum transfer speed (bytes/s over ``SPEED_WINDOW_S``); see ``SourceConfig``."""
SPEED_WINDOW_S = 60.0
DEADLINE_S = 3600.0
STALL = "stall"
TOO_SLOW = "too_slow"
DEADLINE = "deadline"
STORE_CHUNK_MIN = 1 << 20
STORE_CHUNK_MAX = 32 << 20
STORE_CHUNK_TARGET_S = 2.0
"""A ranged read from a store is sized to take about this long at the speed seen so far."""
_GZIP_MAGIC = b"\x1f\x8b"
# a malformed URL or an unsupported scheme will not get better by waiting
_BAD_REQUEST_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
# on a store, these say the request (or our code) is wrong, not that the network had a bad moment
_PERMANENT_STORE_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    NameError,
    ImportError,
    NotImplementedError,
)


def backoff_delay(backoff_s: float, failures: int, retry_after_s: float | None = None) -> float:
    """Seconds before retry number ``failures``: exponential with jitter, capped, at least a server's Retry-After
    (itself capped)."""
    delay = min(MAX_BACKOFF_S, backoff_s * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
    return delay if retry_after_s is None else max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))


class DownloadError(RuntimeError):
    """A file could not be fetched completely; ``url``, ``status`` and ``limit`` say what failed when known.

    ``limit`` names the download limit that ended it: ``"stall"``, ``"too_slow"`` or ``"deadline"``.
    """

    def __init__(
        self, message: str, *, url: str | None = None, status: int | None = None, limit: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.limit = limit


class TruncatedGzipError(DownloadError):
    """The file is not a complete gzip stream (clipped last member, corrupt data or empty)."""


class NotGzipError(TruncatedGzipError):
    """The file does not start like gzip at all (e.g. an HTML error page); refetching will not help."""


class SourceTruncatedError(TruncatedGzipError):
    """Every byte the server has arrived, yet the gzip stream ends inside a member: refetching will not help."""


class _Retryable(Exception):
    """An attempt failed for a reason that may go away (5xx, 429, short read, bad partial, stall, too slow)."""

    def __init__(self, reason: str, retry_after_s: float | None = None, limit: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.limit = limit


# --- locations ---------------------------------------------------------------------------------------------------


def is_local(base_url: str) -> bool:
    """True for a plain directory path or a file:// URL (a one-letter scheme is a Windows drive)."""
    scheme = urlparse(base_url).scheme
    return scheme in ("", "file") or len(scheme) == 1


def local_dir(base_url: str) -> Path:
    """The directory a local base (plain path or file:// URL) points at."""
    parsed = urlparse(base_url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(base_url)


def safe_rel_path(rel_path: str) -> PurePosixPath:
    """A listing entry as a relative path that cannot escape the download directory."""
    rel = PurePosixPath(rel_path.strip().lstrip("/"))
    if not rel.parts or any(part in ("..", ".") for part in rel.parts) or "\\" in rel_path:
        raise DownloadError(f"unsafe or empty relative path in listing: {rel_path!r}")
    return rel


def join_url(base_url: str, rel_path: str) -> str:
    """``base_url`` + ``rel_path`` with exactly one slash between (urljoin would drop a last segment).

    Only HTTP URLs are percent-encoded: a store's keys are the names themselves.
    """
    rel = safe_rel_path(rel_path)
    if is_local(base_url):
        return str(local_dir(base_url) / rel)
    if urlparse(base_url).scheme.lower() in HTTP_SCHEMES:
        return base_url.rstrip("/") + "/" + quote(str(rel), safe="/")
    return base_url.rstrip("/") + "/" + str(rel)


def new_session() -> requests.Session:
    """A Session that names the project and asks for the bytes as stored (no transfer decoding)."""
    session = requests.Session()
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return session


# --- integrity ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GzipCheck:
    """What a full pass over a gzip file measured; ``cut_at`` is where an unfinished last member starts."""

    size: int
    sha256: str
    members: int
    uncompressed: int
    cut_at: int | None = None


def check_gzip(path: Path) -> GzipCheck:
    """Decompress every member to its end in constant memory; raise TruncatedGzipError on any defect."""
    check = scan_gzip(path)
    if check.cut_at is not None:
        raise TruncatedGzipError(
            f"truncated gzip: {path} ends at byte {check.size} inside member {check.members + 1}"
            f" (starts at byte {check.cut_at})"
        )
    return check


def scan_gzip(path: Path) -> GzipCheck:
    """Like ``check_gzip``, but a stream that merely stops inside its last member is reported, not raised.

    Corrupt data, an empty file or one that is not gzip still raise: only a clean cut is salvageable. An
    uncompressed WARC file (it starts with ``WARC/``) passes as it is: its records are checked when read.
    """
    digest = hashlib.sha256()
    size = members = uncompressed = member_start = 0
    inflater: zlib._Decompress | None = None
    with open(path, "rb") as f:
        head = f.read(2)
        if not head:
            raise TruncatedGzipError(f"truncated gzip: {path} is empty")
        if head + f.read(3) == b"WARC/":  # an uncompressed WARC file: no gzip to check (the reader checks records)
            f.seek(0)
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
            return GzipCheck(size=size, sha256=digest.hexdigest(), members=0, uncompressed=size)
        if head != _GZIP_MAGIC[: len(head)] or len(head) < 2:
            raise NotGzipError(f"{path} is not a gzip file (starts with {head!r})")
        f.seek(0)
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            data = chunk
            while data:
                if inflater is None:
                    inflater = zlib.decompressobj(31)
                    member_start = size + len(chunk) - len(data)
                try:
                    while True:
                        out = inflater.decompress(data, CHUNK_BYTES)
                        uncompressed += len(out)
                        data = inflater.unconsumed_tail
                        if inflater.eof or (not data and len(out) < CHUNK_BYTES):
                            break
                except zlib.error as e:
                    raise TruncatedGzipError(
                        f"corrupt gzip: {path}, member starting at byte {member_start}: {e}"
                    ) from None
                if inflater.eof:
                    data = inflater.unused_data
                    members += 1
                    inflater = None
            size += len(chunk)
    cut_at = member_start if inflater is not None else None
    return GzipCheck(size=size, sha256=digest.hexdigest(), members=members, uncompressed=uncompressed, cut_at=cut_at)


def verify_gzip(path: Path) -> None:
    """Raise TruncatedGzipError unless ``path`` is a complete gzip stream (all members, CRCs checked)."""
    check_gzip(path)


# --- sidecars ----------------------------------------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".complete")


def _read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None


def _write_sidecar(path: Path, info: dict) -> None:
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp, side)


def _is_recorded_complete(path: Path, info: dict | None) -> bool:
    return info is not None and path.is_file() and info.get("size") == path.stat().st_size


# --- fetching ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """When a download gives up: see ``SourceConfig`` for the defaults' reasoning.

    An attempt that gets fewer than ``min_speed_bps * window_s`` bytes in a ``window_s`` window is
    "too slow"; one that gets no byte at all for ``window_s`` (or ``timeout_s``) has "stalled"; both
    are retried like a reset. The whole download, retries and backoff included, ends at ``deadline_s``.
    """

    min_speed_bps: float = MIN_SPEED_BPS
    window_s: float = SPEED_WINDOW_S
    deadline_s: float | None = DEADLINE_S


def fetch_warc(
    base_url: str,
    rel_path: str,
    dest_dir: Location | str,
    *,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: bool = False,
    min_speed_bps: float = MIN_SPEED_BPS,
    speed_window_s: float = SPEED_WINDOW_S,
    deadline_s: float | None = DEADLINE_S,
    salvage_truncated: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Return the local path of a complete, verified copy of ``base_url/rel_path``.

    A local base is verified in place (never copied). Otherwise (HTTP, or a store URL read with
    ``storage_options`` over the process's defaults) the file streams to ``dest_dir/<rel_path>.partial``,
    resumes where it stopped after a failure, and is renamed to its final name only once it is a complete
    gzip stream of the announced length. With ``salvage_truncated``, a file truncated at the source (see the
    module docstring) is returned too. A ``dest_dir`` on a store is replaced by local scratch: the cache
    must be a local file the WARC reader can seek in.
    """
    rel = safe_rel_path(rel_path)
    if is_local(base_url):
        return _use_local(local_dir(base_url) / rel, salvage_truncated)
    if is_remote(dest_dir):
        logger.debug("WARC cache %s is not local: caching in local scratch", dest_dir)
        dest_dir = scratch_dir() / "warc-cache"
    final = Path(dest_dir) / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    with _one_download_at_a_time(final):  # runs sharing the cache take turns; the second finds the file done
        info = _read_sidecar(final)
        if _is_recorded_complete(final, info) and (salvage_truncated or not info.get("truncated_at_source")):
            logger.debug("already complete: %s", final)
            return final
        partial = final.with_name(final.name + ".partial")
        if final.exists():  # a final name without a matching sidecar is not trusted: check it like a partial
            os.replace(final, partial)
            _sidecar(final).unlink(missing_ok=True)
        url = join_url(base_url, rel_path)
        limits = Limits(min_speed_bps=min_speed_bps, window_s=speed_window_s, deadline_s=deadline_s)
        if is_store_url(base_url):
            try:
                fs, path = source_filesystem(url, storage_options, timeout_s=timeout_s)
            except StorageError as e:  # a scheme without its backend
                raise DownloadError(str(e), url=url) from None
            except Exception as e:  # bad options
                raise DownloadError(describe_storage_error(e, url), url=url) from None
            return _StoreFetch(
                fs, path, url, partial, final, retries, timeout_s, backoff_s, progress, limits, salvage_truncated
            ).run()
        with new_session() as session:
            return _Fetch(
                session, url, partial, final, retries, timeout_s, backoff_s, progress, limits, salvage_truncated
            ).run()


@contextlib.contextmanager
def _one_download_at_a_time(final: Path) -> Iterator[None]:
    """An exclusive POSIX lock on ``.<name>.lock`` beside the file (freed by the kernel if its holder dies), so
    two processes never write the same ``.partial``; a second one waits for the first, then reuses its file."""
    fd = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            logger.info("waiting for another process downloading %s", final)
            fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _use_local(path: Path, salvage: bool) -> Path:
    """A local file is the source itself: a clean cut in it is permanent, so it is salvaged or fails."""
    if not path.is_file():
        raise DownloadError(f"not found: {path}", url=str(path), status=404)
    if not salvage:
        verify_gzip(path)
        return path
    check = scan_gzip(path)
    if check.cut_at is not None:
        logger.warning(
            "%s is truncated (ends inside gzip member %d at byte %d); salvaging the records before the cut",
            path,
            check.members + 1,
            check.size,
        )
    return path


@dataclass
class _Attempt:
    """What one HTTP attempt left behind."""

    total: int | None = None  # full file size, when the server said
    etag: str | None = None


@dataclass
class _Pace:
    """Tumbling windows over one attempt's body: each must bring ``min_bytes``, else the attempt is too slow."""

    min_bytes: float
    window_s: float
    start: float
    bytes_at_start: int

    def too_slow(self, now: float, written: int) -> str | None:
        """A reason when the window that just ended fell short; None while the pace is fine."""
        if now - self.start < self.window_s:
            return None
        got = written - self.bytes_at_start
        if got < self.min_bytes:
            return (
                f"too slow: {got} bytes in the last {now - self.start:.3g} s"
                f" (minimum {self.min_bytes / self.window_s:.0f} bytes/s over {self.window_s:g} s)"
            )
        self.start, self.bytes_at_start = now, written
        return None


class _Fetch:
    """One file's download: attempts, resume state, the two retry budgets and the limits."""

    def __init__(
        self,
        session: requests.Session | None,
        url: str,
        partial: Path,
        final: Path,
        retries: int,
        timeout_s: float,
        backoff_s: float,
        progress: bool,
        limits: Limits | None = None,
        salvage: bool = False,
    ) -> None:
        self.session = session
        self.url = url
        self.partial = partial
        self.final = final
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.limits = limits or Limits()
        self.salvage = salvage
        self.etag: str | None = None
        self.high_water = 0
        self.started = time.monotonic()
        self.attempt_started = self.started
        self.attempt_offset = 0
        self.bar = tqdm(desc=final.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)

    def run(self) -> Path:
        # reset whenever an attempt grows the file at the minimum speed: a 1 GB file may need many resumes,
        # but a trickle that keeps adding a few bytes must still run out of retries
        transport_failures = 0
        integrity_failures = 0  # never reset: a consistently bad file must end in an error
        self.started = time.monotonic()
        self.high_water = self._partial_size()
        try:
            while True:
                try:
                    attempt = self._attempt()
                    return self._finish(attempt)
                except TruncatedGzipError as e:
                    self._discard()
                    if isinstance(e, NotGzipError):
                        raise NotGzipError(f"{self.url} did not return a gzip file: {e}", url=self.url) from None
                    if isinstance(e, SourceTruncatedError):
                        raise SourceTruncatedError(f"{e} (from {self.url})", url=self.url) from None
                    integrity_failures += 1
                    if integrity_failures > self.retries:
                        raise TruncatedGzipError(
                            f"truncated gzip from {self.url} after {integrity_failures} full downloads: {e}",
                            url=self.url,
                        ) from None
                    self._wait(integrity_failures, str(e), None)
                except _BAD_REQUEST_ERRORS as e:
                    raise DownloadError(f"cannot request {self.url}: {e}", url=self.url) from None
                except (_Retryable, *_TRANSPORT_ERRORS) as e:
                    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise  # a full disk is not a network fault: retrying cannot help
                    size = self._partial_size()
                    if size > self.high_water:
                        if self._kept_pace(size):
                            transport_failures = 0
                        self.high_water = size
                    transport_failures += 1
                    reason = _describe(e)
                    limit = getattr(e, "limit", None)
                    if transport_failures > self.retries:
                        raise DownloadError(
                            f"giving up on {self.url} after {transport_failures} failed attempts: {reason}",
                            url=self.url,
                            status=_status_of(reason),
                            limit=limit,
                        ) from None
                    self._wait(transport_failures, reason, getattr(e, "retry_after_s", None))
        finally:
            self.bar.close()

    def _kept_pace(self, size: int) -> bool:
        """Whether the last attempt averaged at least the minimum speed (progress worth a fresh retry budget)."""
        elapsed = time.monotonic() - self.attempt_started
        return size - self.attempt_offset >= self.limits.min_speed_bps * elapsed

    def _left_s(self) -> float:
        """Seconds until the deadline (infinite without one)."""
        if self.limits.deadline_s is None:
            return float("inf")
        return self.limits.deadline_s - (time.monotonic() - self.started)

    def _deadline_error(self, reason: str) -> DownloadError:
        return DownloadError(
            f"deadline: {self.url} not downloaded within {self.limits.deadline_s:g} s"
            f" ({self._partial_size()} bytes kept to resume; last: {reason})",
            url=self.url,
            limit=DEADLINE,
        )

    def _partial_size(self) -> int:
        try:
            return self.partial.stat().st_size
        except FileNotFoundError:
            return 0

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.high_water = 0

    def _wait(self, failures: int, reason: str, retry_after_s: float | None) -> None:
        delay = backoff_delay(self.backoff_s, failures, retry_after_s)
        if delay >= self._left_s():
            raise self._deadline_error(reason)
        logger.warning(
            "fetch %s: attempt %d of %d failed (%s); retrying in %.2fs",
            self.url,
            failures,
            self.retries + 1,
            reason,
            delay,
        )
        time.sleep(delay)

    def _read_timeout_s(self) -> float:
        """No byte for this long is a stall: the timeout, the speed window and the deadline all bound it."""
        return max(0.001, min(self.timeout_s, self.limits.window_s, self._left_s()))

    def _attempt(self) -> _Attempt:
        offset = self._partial_size()
        self.attempt_started, self.attempt_offset = time.monotonic(), offset
        if self._left_s() <= 0:
            raise self._deadline_error("no time left for another attempt")
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.etag and not self.etag.startswith("W/"):
                headers["If-Range"] = self.etag
        read_timeout = self._read_timeout_s()
        timeout = (min(self.timeout_s, read_timeout), read_timeout)
        with self._get(headers, timeout) as resp:
            status = resp.status_code
            if status == 416:
                return self._on_416(resp, offset)
            if status == 429 or status == 408 or status >= 500:
                raise _Retryable(f"HTTP {status} {resp.reason}", _retry_after(resp.headers.get("Retry-After")))
            if status not in (200, 206):
                raise DownloadError(f"HTTP {status} {resp.reason} for {self.url}", url=self.url, status=status)
            self.etag = resp.headers.get("ETag") or self.etag
            if status == 206:
                start, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self._discard()
                    raise _Retryable(f"server resumed at byte {start}, asked for {offset}; restarting")
                mode = "ab"
            else:
                if offset:
                    logger.warning("fetch %s: server ignored Range (HTTP 200); restarting from byte 0", self.url)
                offset = 0
                total = _int_or_none(resp.headers.get("Content-Length"))  # raw bytes are stored, so it applies
                mode = "wb"
            self._stream(resp, mode, offset, total, read_timeout)
            return _Attempt(total=total, etag=self.etag)

    def _get(self, headers: dict[str, str], timeout: tuple[float, float]) -> requests.Response:
        """GET the body as a stream; a server that accepts the connection but sends no headers has stalled."""
        try:
            return self.session.get(self.url, headers=headers, stream=True, timeout=timeout)
        except requests.ConnectTimeout:
            raise
        except requests.ReadTimeout:
            raise _Retryable(f"stalled: no response headers within {timeout[1]:.3g} s", limit=STALL) from None

    def _on_416(self, resp: requests.Response, offset: int) -> _Attempt:
        _, total = _content_range(resp.headers.get("Content-Range"))
        if total is not None and total != offset:
            self._discard()
            raise _Retryable(f"HTTP 416: partial file has {offset} bytes but the file has {total}; restarting")
        logger.info("fetch %s: partial file already holds all %d bytes", self.url, offset)
        return _Attempt(total=total, etag=self.etag)

    def _stream(self, resp: requests.Response, mode: str, offset: int, total: int | None, read_timeout: float) -> None:
        self.bar.reset(total=total)
        self.bar.update(offset)
        written = offset
        pace = _Pace(self.limits.min_speed_bps * self.limits.window_s, self.limits.window_s, time.monotonic(), offset)
        with open(self.partial, mode) as f:
            try:
                for chunk in _body_chunks(resp):
                    f.write(chunk)
                    written += len(chunk)
                    self.bar.update(len(chunk))
                    self._check_limits(pace, written, total)
            except _TRANSPORT_ERRORS as e:
                if not _is_timeout(e):
                    raise
                reason = f"stalled: no data for {read_timeout:.3g} s at byte {written}"
                if self._left_s() <= 0:
                    raise self._deadline_error(reason) from None
                raise _Retryable(reason, limit=STALL) from None
            f.flush()
            os.fsync(f.fileno())
        if total is not None and written < total:
            raise _Retryable(f"short read: got {written} of {total} bytes")
        if total is not None and written > total:
            self._discard()
            raise _Retryable(f"got {written} bytes, more than the announced {total}; restarting")

    def _check_limits(self, pace: _Pace, written: int, total: int | None) -> None:
        """Between chunks: past the deadline the download ends; below the minimum speed the attempt does."""
        of = f" of {total}" if total is not None else ""
        if self._left_s() <= 0:
            raise self._deadline_error(f"at byte {written}{of}")
        if self.limits.min_speed_bps > 0 and (reason := pace.too_slow(time.monotonic(), written)):
            raise _Retryable(f"{reason} at byte {written}{of}", limit=TOO_SLOW)

    def _finish(self, attempt: _Attempt) -> Path:
        check = scan_gzip(self.partial)
        if attempt.total is not None and check.size != attempt.total:
            raise TruncatedGzipError(f"size mismatch: {check.size} bytes on disk, server announced {attempt.total}")
        info = {
            "size": check.size,
            "sha256": check.sha256,
            "etag": attempt.etag,
            "gzip_members": check.members,
            "url": self.url,
            "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if check.cut_at is not None:
            self._on_cut(check, attempt)
            info["truncated_at_source"] = True
            info["cut_member_offset"] = check.cut_at
        _write_sidecar(self.final, info)
        os.replace(self.partial, self.final)
        logger.info("fetched %s (%d bytes, %d gzip members)", self.final, check.size, check.members)
        return self.final

    def _on_cut(self, check: GzipCheck, attempt: _Attempt) -> None:
        """A gzip stream that stops inside a member: retried, failed or salvaged (see the module docstring)."""
        where = f"ends at byte {check.size} inside gzip member {check.members + 1} (starts at byte {check.cut_at})"
        if attempt.total is None:  # no announced length: the cut may be ours, so fetch again
            raise TruncatedGzipError(f"truncated gzip: {self.partial} {where}")
        if not self.salvage:
            raise SourceTruncatedError(
                f"truncated gzip at the source: all {check.size} announced bytes arrived, but the file {where}"
            )
        logger.warning(
            "fetch %s: truncated at the source (all %d bytes arrived, file %s); salvaging the %d complete members",
            self.url,
            check.size,
            where,
            check.members,
        )


class _StoreFetch(_Fetch):
    """One file's download from an object store: ranged reads appended to the partial file.

    The run loop, retry budgets, limits and verification are ``_Fetch``'s; only an attempt differs. A missing
    object or bucket and a refused access fail at once, every other store error is retried like a reset.
    The object's ETag is checked before each attempt: a partial file of another version is started over.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str, *args: Any) -> None:
        super().__init__(None, url, *args)
        self.fs = fs
        self.path = path
        self.chunk = STORE_CHUNK_MIN

    def _attempt(self) -> _Attempt:
        offset = self._partial_size()
        self.attempt_started, self.attempt_offset = time.monotonic(), offset
        if self._left_s() <= 0:
            raise self._deadline_error("no time left for another attempt")
        info = self._call(self.fs.info, self.path)
        total = int(info["size"]) if info.get("size") is not None else None
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        if offset and self.etag and etag and etag != self.etag:
            logger.warning("fetch %s: the object changed during the download; restarting from byte 0", self.url)
            self._discard()
            offset = 0
        self.etag = etag or self.etag
        if total is None:
            raise DownloadError(f"{self.url}: the store does not say the object's size", url=self.url)
        if offset > total:
            self._discard()
            raise _Retryable(f"partial file has {offset} bytes but the object has {total}; restarting")
        self._copy(offset, total)
        return _Attempt(total=total, etag=self.etag)

    def _copy(self, offset: int, total: int) -> None:
        self.bar.reset(total=total)
        self.bar.update(offset)
        written = offset
        pace = _Pace(self.limits.min_speed_bps * self.limits.window_s, self.limits.window_s, time.monotonic(), offset)
        with open(self.partial, "ab" if offset else "wb") as f:
            while written < total:
                size = min(self.chunk, total - written)
                started = time.monotonic()
                data = self._read(written, written + size)
                if not data:
                    raise _Retryable(f"short read: got {written} of {total} bytes")
                f.write(data)
                written += len(data)
                self.bar.update(len(data))
                self._check_limits(pace, written, total)
                rate = len(data) / max(time.monotonic() - started, 1e-3)
                self.chunk = max(STORE_CHUNK_MIN, min(STORE_CHUNK_MAX, int(rate * STORE_CHUNK_TARGET_S)))
            f.flush()
            os.fsync(f.fileno())

    def _read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; a read that cannot finish at the minimum speed (or by the deadline) is cut."""
        size = end - start
        allowed = self._left_s()
        slow = self.limits.min_speed_bps > 0 and self.limits.window_s + size / self.limits.min_speed_bps < allowed
        if slow:
            allowed = self.limits.window_s + size / self.limits.min_speed_bps
        try:
            return self._call(_read_range, self.fs, self.path, start, end, allowed)
        except fsspec.exceptions.FSTimeoutError:
            reason = f"{size} bytes at byte {start} not received within {allowed:.3g} s"
            if not slow:
                raise self._deadline_error(reason) from None
            raise _Retryable(f"too slow: {reason}", limit=TOO_SLOW) from None

    def _call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` with the store's errors turned into a final ``DownloadError`` or a retryable failure."""
        try:
            return fn(*args)
        except fsspec.exceptions.FSTimeoutError:
            raise
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            if isinstance(e, FileNotFoundError):
                raise self._not_found(e) from None
            if isinstance(e, PermissionError):
                raise self._denied(e) from None
            if isinstance(e, _PERMANENT_STORE_ERRORS):
                raise DownloadError(describe_storage_error(e, self.url), url=self.url) from None
            raise _Retryable(self._reason(e)) from None
        except _PERMANENT_STORE_ERRORS:
            raise
        except Exception as e:  # botocore, aiohttp, google-auth...: each backend has its own transport errors
            if "credential" in type(e).__name__.lower():
                raise self._denied(e) from None
            raise _Retryable(self._reason(e)) from None

    def _reason(self, e: BaseException) -> str:
        """What went wrong, without the URL (the retry messages name it already)."""
        return describe_storage_error(e, self.url).removeprefix(f"{self.url}: ")

    def _not_found(self, e: FileNotFoundError) -> DownloadError:
        described = describe_storage_error(e, self.url)
        if "bucket does not exist" in described:
            return DownloadError(described, url=self.url)
        return DownloadError(f"{self.url}: not found", url=self.url, status=404)

    def _denied(self, e: BaseException) -> DownloadError:
        described = describe_storage_error(e, self.url)
        if is_anonymous(self.fs):
            described += " (read anonymously: no AWS credentials were found)"
        return DownloadError(described, url=self.url, status=403)


def _read_range(fs: fsspec.AbstractFileSystem, path: str, start: int, end: int, timeout_s: float) -> bytes:
    """One ranged read; an async filesystem's is cancelled after ``timeout_s`` (FSTimeoutError)."""
    if isinstance(fs, fsspec.asyn.AsyncFileSystem) and not fs.asynchronous and timeout_s != float("inf"):
        return fsspec.asyn.sync(fs.loop, fs._cat_file, path, start=start, end=end, timeout=max(timeout_s, 1e-3))
    return fs.cat_file(path, start=start, end=end)


def _body_chunks(resp: requests.Response) -> Iterator[bytes]:
    """The raw body as it arrives: read1 returns what the socket has, so a reset loses no received bytes."""
    raw = resp.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2.1
        yield from raw.stream(64 * 1024, decode_content=False)
        return
    while chunk := raw.read1(CHUNK_BYTES, decode_content=False):
        yield chunk


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``bytes a-b/N`` or ``bytes */N``; None where unknown."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = _int_or_none(span.partition("-")[0]) if span != "*" else None
    return start, _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)


def _describe(e: BaseException) -> str:
    if isinstance(e, _Retryable):
        return str(e)
    if _is_timeout(e):
        return f"timeout ({type(e).__name__})"
    return f"{type(e).__name__}: {e}"


def _status_of(reason: str) -> int | None:
    if reason.startswith("HTTP "):
        return _int_or_none(reason.split()[1])
    return None
