"""Serve a local Common Crawl mirror folder over HTTP, so the real listing and download code runs offline.

It speaks the part of HTTP that downloaders of Common Crawl rely on: GET and HEAD, Content-Length, and single
byte ranges (206 with Content-Range, 416 when unsatisfiable) for resumed downloads. Files are sent as stored
(``.gz`` stays compressed; no Content-Encoding), directories are not listed, paths outside the root are refused.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Resolve a Range header against a file size.

    Returns ``(first, last)`` inclusive for one satisfiable range, ``None`` to serve the whole file (no header,
    or one this server ignores: malformed or several ranges, which RFC 9110 allows), or ``"unsatisfiable"``.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.groups()
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= size:
        return "unsatisfiable"
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)


class MirrorHandler(BaseHTTPRequestHandler):
    """Static files from ``self.server.root`` with byte ranges; nothing else."""

    protocol_version = "HTTP/1.1"
    server_version = "cc-refinery-mirror/1"
    server: _MirrorServer

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _resolve(self) -> Path | HTTPStatus:
        raw_path = unquote(urlsplit(self.path).path)
        if "\x00" in raw_path or "\\" in raw_path:
            return HTTPStatus.BAD_REQUEST
        parts = [p for p in raw_path.split("/") if p not in ("", ".")]
        if ".." in parts:
            return HTTPStatus.FORBIDDEN
        root = self.server.root
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root):  # e.g. a symlink pointing outside the mirror
            return HTTPStatus.FORBIDDEN
        if not target.is_file():
            return HTTPStatus.NOT_FOUND
        return target

    def _serve(self, send_body: bool) -> None:
        target = self._resolve()
        if isinstance(target, HTTPStatus):
            self.send_error(target)
            return
        try:
            fh = open(target, "rb")  # noqa: SIM115 - closed below, after the headers are chosen
        except OSError as e:
            log.warning("cannot open %s: %s", target, e)
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with fh:
            stat = target.stat()
            size = stat.st_size
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if wanted is None:
                first, last = 0, size - 1
                self.send_response(HTTPStatus.OK)
            else:
                first, last = wanted
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            ctype = mimetypes.guess_type(target.name)[0] if not target.name.endswith(".gz") else None
            self.send_header("Content-Type", ctype or "application/octet-stream")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
            self.end_headers()
            if send_body and last >= first:
                fh.seek(first)
                self._copy(fh, last - first + 1)

    def _copy(self, fh: BinaryIO, remaining: int) -> None:
        try:
            while remaining > 0:
                buf = fh.read(min(_CHUNK, remaining))
                if not buf:
                    break
                self.wfile.write(buf)
                remaining -= len(buf)
        except (BrokenPipeError, ConnectionResetError) as e:
            log.debug("client went away during %s: %s", self.path, e)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class _MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"mirror root is not a directory: {root}")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), MirrorHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        log.warning("error while serving %s", client_address, exc_info=True)


def _base_url(server: _MirrorServer) -> str:
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}:{port}/"


@contextmanager
def serve_directory(root: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``root`` in a background thread; yield its base URL (``http://127.0.0.1:PORT/``); stop on exit."""
    server = _MirrorServer(root, host, port)
    thread = threading.Thread(target=server.serve_forever, name="mirror-server", daemon=True)
    thread.start()
    url = _base_url(server)
    log.info("serving %s at %s", server.root, url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        log.info("stopped serving %s", server.root)


def serve_forever(root: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``root`` in the foreground until Ctrl-C (for the CLI)."""
    server = _MirrorServer(root, host, port)
    log.info("serving %s at %s (Ctrl-C stops)", server.root, _base_url(server))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
