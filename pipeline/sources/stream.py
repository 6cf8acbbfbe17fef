"""Read a remote WARC file by byte ranges while it is processed: no local copy, no wait for the whole file.

Common Crawl serves byte ranges (its HTTP server and its bucket alike), so a unit reads exactly its part of the
file: a whole file from the first byte, one of the ranges of a split file, or the rest of a file after its last
checkpoint. The reader sees an ordinary seekable file (:meth:`RemoteWarc.open`); behind it the file comes in
blocks, and the next block is fetched in a background thread while the reader parses the current one, so
memory stays at a few blocks whatever the file size. Each block request is retried like a download attempt
(5xx, 429 with Retry-After, resets, stalls, a trickle below the minimum speed), and a file that changes while
it is read (another ETag) is an error, never a mix of two versions. A server that does not serve ranges is
read through the download cache instead (:class:`RangesUnsupported`).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests

from pipeline.core.storage import StorageError, describe_storage_error
from pipeline.sources.download import (
    _BAD_REQUEST_ERRORS,
    _TRANSPORT_ERRORS,
    STALL,
    TOO_SLOW,
    DownloadError,
    Limits,
    NotGzipError,
    _body_chunks,
    _content_range,
    _describe,
    _is_timeout,
    _retry_after,
    _Retryable,
    _status_of,
    _StoreFetch,
    backoff_delay,
    join_url,
    new_session,
)
from pipeline.sources.store import is_store_url, source_filesystem

log = logging.getLogger(__name__)
T = TypeVar("T")

BLOCK_BYTES = 8 << 20
"""One range request: large enough that request overhead is small, small enough to retry cheaply."""
READ_BUFFER = 1 << 20
HEAD_BYTES = 16
KEPT_BLOCKS = 4


class RangesUnsupported(DownloadError):
    """The server answers a range request with the whole file: the file must be downloaded instead."""


class RemoteWarc:
    """A WARC file on an HTTP server or an object store, opened by the reader like a local file (see module doc)."""

    def __init__(
        self,
        base_url: str,
        rel_path: str,
        *,
        retries: int = 5,
        timeout_s: float = 60.0,
        limits: Limits | None = None,
        storage_options: Mapping[str, Any] | None = None,
        backoff_s: float = 1.0,
        block_bytes: int | None = None,
    ) -> None:
        self.url = join_url(base_url, rel_path)
        self.retries = retries
        self.timeout_s = timeout_s
        self.limits = Limits(
            min_speed_bps=(limits or Limits()).min_speed_bps, window_s=(limits or Limits()).window_s, deadline_s=None
        )  # a deadline is for a whole download; a stream's time is mostly processing
        self.backoff_s = backoff_s
        self.block_bytes = block_bytes or BLOCK_BYTES
        self._local = threading.local()  # a requests.Session is not safe across threads
        self._store: _StoreFetch | None = None
        self.head = b""
        self._blocks: OrderedDict[int, Future[bytes]] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        """The file's first bytes (up to ``HEAD_BYTES``): enough to tell a WARC file from an error page."""
        if is_store_url(base_url):
            try:
                fs, path = source_filesystem(self.url, storage_options, timeout_s=timeout_s)
            except StorageError as e:
                raise DownloadError(str(e), url=self.url) from None
            except Exception as e:  # bad options
                raise DownloadError(describe_storage_error(e, self.url), url=self.url) from None
            # the download's store access: its error mapping (missing, denied, transient) and timed reads
            name = Path(path.rsplit("/", 1)[-1])  # (never written: only its reads are used)
            self._store = _StoreFetch(fs, path, self.url, name, name, retries, timeout_s, backoff_s, False, self.limits)
        self.size, self.etag = self._retrying("size", self._stat)
        self.requests = 0

    def check_warc(self) -> None:
        """Raise :class:`NotGzipError` unless the file starts like a WARC file (gzip, or ``WARC/``): an HTML
        error page served with status 200 is not retried (it will not turn into a WARC file)."""
        if not (self.head.startswith(b"\x1f\x8b") or self.head.startswith(b"WARC/")):
            raise NotGzipError(f"{self.url} did not return a gzip file (starts with {self.head!r})", url=self.url)

    def open(self) -> io.BufferedReader:
        """A seekable binary file over the remote bytes."""
        return io.BufferedReader(_RangeReader(self), buffer_size=READ_BUFFER)

    def block(self, index: int) -> bytes:
        """Block ``index`` (``[index * B, (index + 1) * B)``); when reading goes on from the block before, the
        next one is fetched in the background. At most ``KEPT_BLOCKS`` are held, the least recently used go first."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warc-prefetch")
        last = (self.size - 1) // self.block_bytes
        sequential = index - 1 in self._blocks  # a lone read (the first member, a sync point) fetches one block
        for k in (index, index + 1) if sequential else (index,):
            if k <= last and k not in self._blocks:
                start = k * self.block_bytes
                self._blocks[k] = self._pool.submit(self.read_range, start, min(self.size, start + self.block_bytes))
        self._blocks.move_to_end(index)
        if index + 1 in self._blocks:
            self._blocks.move_to_end(index + 1)
        while len(self._blocks) > KEPT_BLOCKS:
            _, old = self._blocks.popitem(last=False)
            old.cancel()
        return self._blocks[index].result()

    def close(self) -> None:
        """Stop prefetching and drop the blocks held."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._blocks.clear()

    def __enter__(self) -> RemoteWarc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, retried until they all arrived."""
        return self._retrying(f"bytes {start}-{end - 1}", lambda: self._read(start, end))

    # ------------------------------------------------------------------------------------------------ requests

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
        return session

    def _stat(self) -> tuple[int, str | None]:
        if self._store is not None:
            info = self._store._call(self._store.fs.info, self._store.path)
            if info.get("size") is None:
                raise DownloadError(f"{self.url}: the store does not say the object's size", url=self.url)
            size = int(info["size"])
            self.head = self._store._read(0, min(HEAD_BYTES, size)) if size else b""
            return size, info.get("ETag") or info.get("etag") or info.get("md5Hash")
        with self._get(0, HEAD_BYTES) as resp:
            if resp.status_code == 200:
                raise RangesUnsupported(f"{self.url}: the server does not serve byte ranges", url=self.url)
            if resp.status_code == 416:  # an empty file
                return 0, resp.headers.get("ETag")
            _, total = _content_range(resp.headers.get("Content-Range"))
            if total is None:
                raise RangesUnsupported(f"{self.url}: the server does not say the file's size", url=self.url)
            self.head = self._body(resp, 0, min(HEAD_BYTES, total))
            return total, resp.headers.get("ETag")

    def _read(self, start: int, end: int) -> bytes:
        self.requests += 1
        if self._store is not None:
            data = self._store._read(start, end)
            if len(data) != end - start:
                raise _Retryable(f"short read: got {len(data)} of {end - start} bytes at byte {start}")
            return data
        with self._get(start, end) as resp:
            if resp.status_code != 206:
                raise DownloadError(
                    f"{self.url}: asked for bytes {start}-{end - 1}, got HTTP {resp.status_code}", url=self.url
                )
            etag = resp.headers.get("ETag")
            if self.etag and etag and etag != self.etag:
                raise DownloadError(f"{self.url} changed while it was read (ETag {self.etag} -> {etag})", url=self.url)
            got, _ = _content_range(resp.headers.get("Content-Range"))
            if got != start:
                raise _Retryable(f"server sent bytes from {got}, asked for {start}")
            return self._body(resp, start, end)

    def _get(self, start: int, end: int) -> requests.Response:
        """GET ``[start, end)``; errors that waiting may cure are retryable, the others final."""
        timeout = min(self.timeout_s, self.limits.window_s)
        try:
            resp = self._session().get(
                self.url, headers={"Range": f"bytes={start}-{end - 1}"}, stream=True, timeout=(timeout, timeout)
            )
        except requests.ReadTimeout:
            raise _Retryable(f"stalled: no response headers within {timeout:.3g} s", limit=STALL) from None
        status = resp.status_code
        if status == 429 or status == 408 or status >= 500:
            resp.close()
            raise _Retryable(f"HTTP {status} {resp.reason}", _retry_after(resp.headers.get("Retry-After")))
        if status not in (200, 206, 416):
            resp.close()
            raise DownloadError(f"HTTP {status} {resp.reason} for {self.url}", url=self.url, status=status)
        return resp

    def _body(self, resp: requests.Response, start: int, end: int) -> bytes:
        """The body, checked against the minimum speed like a download (a trickle is cut and retried)."""
        parts: list[bytes] = []
        got = 0
        began = time.monotonic()
        speed = self.limits.min_speed_bps
        allowed = self.limits.window_s + (end - start) / speed if speed else None
        try:
            for chunk in _body_chunks(resp):
                parts.append(chunk)
                got += len(chunk)
                if allowed is not None and time.monotonic() - began > allowed and got < end - start:
                    raise _Retryable(
                        f"too slow: {got} of {end - start} bytes at byte {start} in {allowed:.3g} s", limit=TOO_SLOW
                    )
        except _TRANSPORT_ERRORS as e:
            if not _is_timeout(e):
                raise
            reason = f"stalled: no data for {self.timeout_s:.3g} s at byte {start + got}"
            raise _Retryable(reason, limit=STALL) from None
        if got != end - start:
            raise _Retryable(f"short read: got {got} of {end - start} bytes at byte {start}")
        return b"".join(parts)

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return fn()
            except _BAD_REQUEST_ERRORS as e:
                raise DownloadError(f"cannot request {self.url}: {e}", url=self.url) from None
            except (_Retryable, *_TRANSPORT_ERRORS) as e:
                if isinstance(e, DownloadError):
                    raise
                failures += 1
                reason = _describe(e)
                if failures > self.retries:
                    raise DownloadError(
                        f"giving up on {self.url} ({what}) after {failures} failed attempts: {reason}",
                        url=self.url, status=_status_of(reason), limit=getattr(e, "limit", None),
                    ) from None  # fmt: skip
                delay = backoff_delay(self.backoff_s, failures, getattr(e, "retry_after_s", None))
                log.warning("read %s (%s): attempt %d of %d failed (%s); retrying in %.2fs",
                            self.url, what, failures, self.retries + 1, reason, delay)  # fmt: skip
                time.sleep(delay)


class _RangeReader(io.RawIOBase):
    """The raw file behind :meth:`RemoteWarc.open`: reads come out of the remote file's blocks."""

    def __init__(self, remote: RemoteWarc) -> None:
        super().__init__()
        self.remote = remote
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.remote.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.remote.size:
            return 0
        size = self.remote.block_bytes
        index = self.pos // size
        data = self.remote.block(index)
        offset = self.pos - index * size
        n = min(len(buffer), len(data) - offset)
        buffer[:n] = data[offset : offset + n]
        self.pos += n
        return n
