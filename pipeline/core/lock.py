"""One run per output folder: a lock file that names its holder and is released when the holder dies.

Two runs writing the same parts would delete each other's temporary files and report nonsense. The
lock is a POSIX record lock (``fcntl.lockf``) on ``<output>/.refinery.lock``: the kernel releases it when
the holding process dies (even by ``kill -9``), and forked workers do not inherit it, so a lock left by a
dead run is simply taken over, with a warning naming the old holder. The file's content (host, pid, start
time, command) is what a refused run prints. POSIX locks do not exclude the holder itself, so this
process also keeps the set of folders it holds.

An object store has no locks: there the lock is a lease, the same JSON object renewed every
``LEASE_RENEW_S`` by a thread of the holder. A run finding a lease renewed less than ``LEASE_S`` ago by a
live holder is refused; a lease whose holder is dead (same host, pid gone) or that was not renewed in time
is taken over with a warning. Two runs starting at the same moment may both read "free": on S3 a new lease is
created with a conditional PUT (``If-None-Match: *``), which only one of them wins; elsewhere (or taking over an old
lease) each writes its lease, waits ``LEASE_SETTLE_S`` and reads it back, and only the one whose lease is there
goes on. A holder whose lease was taken over (it stalled past ``LEASE_S``) stops renewing it and logs an error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.storage import Location, is_remote, location, read_bytes, remove, write_bytes_atomic

log = logging.getLogger(__name__)

LOCK_FILE = ".refinery.lock"
LEASE_S = 60.0
"""A store lease not renewed for this long is free (its holder is gone)."""
LEASE_RENEW_S = 15.0
LEASE_SETTLE_S = 0.2
"""How long a new lease waits before checking that no other run wrote its own at the same moment."""
_HELD: dict[str, str] = {}
_HELD_GUARD = threading.Lock()
"""Lock files this process holds -> what holds them."""


class OutputLocked(RuntimeError):
    """Another live run holds the output folder."""


def settle(seconds: float) -> None:
    """Wait for a written lease to become what every reader sees (a store without conditional creates)."""
    time.sleep(seconds)


def _holder(path: Path) -> dict:
    """What the lock file says of its holder; never call it while holding the lock: closing any descriptor of
    a file drops this process's POSIX locks on it (read through the locked descriptor instead)."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return {}


def _parse(data: bytes) -> dict:
    try:
        holder = json.loads(data or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "an unknown process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}: {holder.get('command', '?')}"


def _me(what: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "what": what,
        "command": " ".join(sys.argv) or sys.executable,
    }


@contextlib.contextmanager
def output_lock(output_dir: Location | str, what: str = "run") -> Iterator[None]:
    """Hold ``output_dir``'s lock while the block runs; raise :class:`OutputLocked` at once if a live run has it."""
    output_dir = location(output_dir)
    if is_remote(output_dir):
        with _store_lease(output_dir, what):
            yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    key = str(path.resolve())
    with _HELD_GUARD:  # POSIX locks do not exclude threads of one process: this does
        if key in _HELD:
            raise OutputLocked(f"{output_dir} is already in use by this process ({_HELD[key]})")
        _HELD[key] = what
    try:
        fd = _acquire(path, output_dir, what)
    except BaseException:
        with _HELD_GUARD:
            del _HELD[key]
        raise
    try:
        if old := _parse(os.pread(fd, 1 << 16, 0)):
            log.warning("taking over the lock of %s left by a run that is no longer alive (%s)",
                        output_dir, describe_holder(old))  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me(what)).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # released by a live process: the next run takes it without a warning
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)
        with _HELD_GUARD:
            del _HELD[key]


def _acquire(path: Path, output_dir: Path, what: str) -> int:
    """An open, locked descriptor of ``path``; the file may be removed by a holder releasing it meanwhile, so
    the lock counts only when taken on the file the path still names."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise OutputLocked(
                f"{output_dir} is in use by another {what}: {describe_holder(_holder(path))}. "
                "Wait for it to finish, or stop it, then rerun (a rerun resumes where it stopped)."
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder removed on release: take the new one


def _holder_alive(holder: dict) -> bool:
    """Whether a lease's holder may still run: on another host we cannot tell, so only its renewals count."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lease(path: Location) -> dict:
    try:
        return _parse(read_bytes(path))  # one GET (a missing lease too)
    except FileNotFoundError:
        return {}


def _refused(e: OSError) -> bool:
    """Whether the store refused a conditional write because its condition did not hold (HTTP 412)."""
    text = str(e).lower()
    return "pre-condition" in text or "precondition" in text or "412" in text


def _create_exclusive(path: Location, data: bytes, what: str) -> bool:
    """Create the lease only if no lease exists (S3's conditional PUT, ``If-None-Match: *``): True if it is ours
    for sure, so no settle is needed. False where the store has no such writes (another filesystem, or an S3 store
    that ignores the condition: the second, probing PUT went through): the caller settles and reads back.
    Raises :class:`OutputLocked` if another run created its lease first."""
    if "s3" not in path.fs.protocol:
        return False
    try:
        path.fs.pipe_file(path.path, data, IfNoneMatch="*")
    except OSError as e:
        if not _refused(e):
            raise
        if not (holder := _read_lease(path)):  # an unreadable leftover, not a lease: written over as before
            return False
        raise OutputLocked(f"{path.parent} is in use by another {what}: {describe_holder(holder)}") from None
    try:  # the same create again must be refused, else the store ignores the condition
        path.fs.pipe_file(path.path, data, IfNoneMatch="*")
    except OSError as e:
        if _refused(e):
            return True
        raise
    return False


@contextlib.contextmanager
def _store_lease(output_dir: Location, what: str) -> Iterator[None]:
    """The lock of a folder on an object store: a lease object renewed by a thread while the block runs."""
    path = output_dir / LOCK_FILE
    key = str(path)
    with _HELD_GUARD:
        if key in _HELD:
            raise OutputLocked(f"{output_dir} is already in use by this process ({_HELD[key]})")
        _HELD[key] = what
    stop = threading.Event()
    renewer: threading.Thread | None = None
    token = uuid.uuid4().hex
    try:
        old = _read_lease(path)
        if old and old.get("token") != token:
            age = time.time() - float(old.get("renewed", 0) or 0)
            if age < LEASE_S and _holder_alive(old):
                raise OutputLocked(
                    f"{output_dir} is in use by another {what}: {describe_holder(old)} (lease renewed {age:.0f} s "
                    f"ago; a holder that died frees it after {LEASE_S:.0f} s). Wait for it to finish, or stop it, "
                    "then rerun (a rerun resumes where it stopped)."
                )
            log.warning("taking over the lock of %s left by a run that is no longer alive (%s)",
                        output_dir, describe_holder(old))  # fmt: skip
        lease = {**_me(what), "token": token, "renewed": time.time()}
        data = json.dumps(lease).encode()
        if old or not _create_exclusive(path, data, what):
            write_bytes_atomic(path, data)
            settle(LEASE_SETTLE_S)
            now = _read_lease(path)
            if now.get("token") != token:  # another run wrote its lease at the same moment, after us
                raise OutputLocked(f"{output_dir} is in use by another {what}: {describe_holder(now)}")

        def renew() -> None:
            while not stop.wait(LEASE_RENEW_S):
                try:
                    current = _read_lease(path)
                    if current.get("token") not in (token, None):
                        log.error("the lock of %s was taken over by %s after this run stalled for over %.0f s; "
                                  "stop one of them", output_dir, describe_holder(current), LEASE_S)  # fmt: skip
                        return
                    write_bytes_atomic(path, json.dumps({**lease, "renewed": time.time()}).encode())
                except Exception as e:  # a store hiccup: the next renewal retries well within the lease
                    log.warning("could not renew the lock of %s: %s", output_dir, e)

        renewer = threading.Thread(target=renew, name="refinery-lease", daemon=True)
        renewer.start()
        yield
    finally:
        stop.set()
        if renewer is not None:
            renewer.join()
            with contextlib.suppress(Exception):  # released: the next run takes it without a warning
                if _read_lease(path).get("token") == token:
                    remove(path)
        with _HELD_GUARD:
            del _HELD[key]
