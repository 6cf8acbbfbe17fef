"""One run per output folder: a lock file that names its holder and is released when the holder dies.

Two runs writing the same parts would delete each other's temporary files and report nonsense. The
lock is a POSIX record lock (``fcntl.lockf``) on ``<output>/.refinery.lock``: the kernel releases it when
the holding process dies (even by ``kill -9``), and forked workers do not inherit it, so a lock left by a
dead run is simply taken over, with a warning naming the old holder. The file's content (host, pid, start
time, command) is what a refused run prints. POSIX locks do not exclude the holder itself, so this
process also keeps the set of folders it holds.
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
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".refinery.lock"
_HELD: dict[str, str] = {}
_HELD_GUARD = threading.Lock()
"""Lock files this process holds -> what holds them."""


class OutputLocked(RuntimeError):
    """Another live run holds the output folder."""


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


@contextlib.contextmanager
def output_lock(output_dir: Path, what: str = "run") -> Iterator[None]:
    """Hold ``output_dir``'s lock while the block runs; raise :class:`OutputLocked` at once if a live run has it."""
    output_dir = Path(output_dir)
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
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "what": what,
            "command": " ".join(sys.argv) or sys.executable,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
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
