"""An HTTP server on 127.0.0.1 that serves a directory and misbehaves on request, like a real CDN on a bad day.

Each path can be given a script: a list of faults used one per request (``Fail``, ``Cut``,
``Truncate``, ``Stall``, ``Hang``, ``Trickle``), then a default behaviour for every later request
(``Serve`` with or without Range support, or a ``Fail`` such as an endless 404). ``clip`` serves only the first
bytes of the file, consistently, as if that were the whole file. Every request is recorded
(method, path, Range header, User-Agent) so tests can check what the client really asked for.
``stop()`` wakes every waiting handler (``Stall``, ``Hang``, ``Trickle``), closes every open connection
and joins every handler thread, so no server thread outlives the ``with`` block.

    with FaultServer(root) as server:
        server.script("/a.warc.gz", Fail(503), Cut(after=1000))
        fetch(server.url + "a.warc.gz")
        assert server.requests_for("/a.warc.gz")[-1].range == "bytes=1000-"
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fail:
    """Answer with ``status`` and a short body; ``retry_after`` becomes a Retry-After header."""

    status: int = 500
    retry_after: str | None = None


@dataclass(frozen=True)
class Cut:
    """Send the headers and ``after`` body bytes, then reset the connection (TCP RST)."""

    after: int


@dataclass(frozen=True)
class Truncate:
    """Declare the full Content-Length, send only ``after`` body bytes, then close cleanly."""

    after: int


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before answering (to trip the client's timeout), then serve normally."""

    seconds: float


@dataclass(frozen=True)
class Hang:
    """Send the headers and ``after`` body bytes, then nothing more, keeping the connection open until stop."""

    after: int = 0


@dataclass(frozen=True)
class Trickle:
    """Send ``after`` body bytes at once, then ``rate`` bytes/s in small steps until done or the client leaves."""

    rate: int
    after: int = 0


@dataclass(frozen=True)
class Serve:
    """Serve the file; with ``ignore_range`` answer 200 with the whole body even when asked for a range."""

    ignore_range: bool = False


Fault = Fail | Cut | Truncate | Stall | Hang | Trickle | Serve
_TRICKLE_STEP_S = 0.02


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None
    user_agent: str | None
    if_range: str | None = None


@dataclass
class _Script:
    steps: list[Fault]
    then: Fault
    clip: int | None


@dataclass
class _State:
    root: Path
    scripts: dict[str, _Script] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    connections: set[socket.socket] = field(default_factory=set)

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def next_fault(self, path: str) -> tuple[Fault, int | None]:
        with self.lock:
            script = self.scripts.get(path)
            if script is None:
                return Serve(), None
            fault = script.steps.pop(0) if script.steps else script.then
            return fault, script.clip


class FaultServer:
    """A ThreadingHTTPServer on an OS-chosen port serving ``root``, with per-path fault scripts."""

    def __init__(self, root: Path) -> None:
        self.state = _State(root=Path(root).resolve())
        handler = type("_BoundHandler", (_Handler,), {"state": self.state})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fault-server", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL with a trailing slash, e.g. ``http://127.0.0.1:40123/``."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()  # wakes every Stall / Hang / Trickle handler
        self.httpd.shutdown()
        self._thread.join(timeout=5)
        with self.state.lock:
            connections = list(self.state.connections)
        for conn in connections:  # an idle keep-alive handler blocks reading the next request until this
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.httpd.server_close()  # joins every handler thread (block_on_close)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def script(self, path: str, *steps: Fault, then: Fault | None = None, clip: int | None = None) -> None:
        """Use ``steps`` for the next requests to ``path`` (one each), then ``then`` (default: serve)."""
        key = "/" + path.lstrip("/")
        with self.state.lock:
            self.state.scripts[key] = _Script(steps=list(steps), then=then or Serve(), clip=clip)

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def requests_for(self, path: str) -> list[Request]:
        key = "/" + path.lstrip("/")
        return [r for r in self.requests if r.path == key]


class _QuietServer(ThreadingHTTPServer):
    """Clients that drop a connection (after an error answer, a timeout) are normal here, not tracebacks."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: object, client_address: tuple) -> None:
        logger.debug("fault server: connection from %s ended abruptly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.state.lock:
            self.state.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(send_body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("fault server: " + format, *args)

    def _handle(self, send_body: bool) -> None:
        try:
            self._respond(send_body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout); nothing to answer
            self.close_connection = True

    def _respond(self, send_body: bool) -> None:
        path = unquote(urlparse(self.path).path)
        self.state.record(
            Request(
                method=self.command,
                path=path,
                range=self.headers.get("Range"),
                user_agent=self.headers.get("User-Agent"),
                if_range=self.headers.get("If-Range"),
            )
        )
        fault, clip = self.state.next_fault(path)
        if isinstance(fault, Fail):
            self._fail(fault)
            return
        if isinstance(fault, Stall):
            self.state.stopping.wait(fault.seconds)
        data = self._load(path, clip)
        if data is None:
            self._fail(Fail(404))
            return
        start, end, status = 0, len(data), 200
        byte_range = self.headers.get("Range")
        if byte_range and not (isinstance(fault, Serve) and fault.ignore_range):
            parsed = _parse_range(byte_range, len(data))
            if parsed == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parsed is not None:
                start, end = parsed
                status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{len(data)}-{hash(data) & 0xFFFFFFFF:x}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not send_body:
            return
        body = memoryview(data)[start:end]
        if isinstance(fault, Cut):
            self._send(body[: fault.after])
            self._reset()
        elif isinstance(fault, Truncate):
            self._send(body[: fault.after])
            self.close_connection = True
        elif isinstance(fault, Hang):
            self._send(body[: fault.after])
            self.state.stopping.wait()
            self.close_connection = True
        elif isinstance(fault, Trickle):
            self._send(body[: fault.after])
            self._trickle(body[fault.after :], fault.rate)
            self.close_connection = True
        else:
            self._send(body)

    def _trickle(self, body: memoryview, rate: int) -> None:
        """Send ``body`` at about ``rate`` bytes/s until it is sent, the client leaves or the server stops."""
        step = max(1, int(rate * _TRICKLE_STEP_S))
        for i in range(0, len(body), step):
            if self.state.stopping.wait(_TRICKLE_STEP_S):
                return
            try:
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
            except OSError:  # the client gave up on us
                return

    def _send(self, body: memoryview) -> None:
        try:
            for i in range(0, len(body), 64 * 1024):
                self.wfile.write(body[i : i + 64 * 1024])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _reset(self) -> None:
        """Abort with a TCP RST (not a clean FIN) once the client had time to read what was sent."""
        time.sleep(0.1)
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # close the descriptor now: socket.close() would wait for rfile/wfile, and the server's
            # shutdown(SHUT_WR) would send a FIN first
            _socket.socket.close(self.connection)
        except OSError:
            pass

    def _fail(self, fault: Fail) -> None:
        body = f"error {fault.status}\n".encode()
        self.send_response(fault.status)
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._send(memoryview(body))

    def _load(self, path: str, clip: int | None) -> bytes | None:
        target = (self.state.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.state.root) or not target.is_file():
            return None
        data = target.read_bytes()
        return data if clip is None else data[:clip]


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """(start, end-exclusive) for one ``bytes=`` range; "unsatisfiable"; None to ignore (multi-range, junk)."""
    if not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 else "unsatisfiable"
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)
