"""Worker processes that never outlive their parent, and exit codes that say what killed a worker.

A ``kill -9`` of a run's main process must not leave its worker pool, datatrove's queue manager or a
tokenize pool running forever: on Linux every process forked from a process that called
:func:`die_with_parent_on_fork` asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_installed = False
_parent_pid: int | None = None

SIGNAL_HINTS = {
    signal.SIGBUS: "bus error: often a full disk under a memory-mapped file",
    signal.SIGKILL: "killed: the out-of-memory killer, a scheduler or a user",
    signal.SIGSEGV: "segmentation fault in native code",
    signal.SIGTERM: "terminated",
    signal.SIGABRT: "aborted by native code",
}


def _prctl_pdeathsig() -> bool:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def _before_fork() -> None:
    global _parent_pid
    _parent_pid = os.getpid()


def _after_fork_in_child() -> None:
    if _prctl_pdeathsig() and _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)  # the parent died between fork and prctl: nobody waits for this child


def die_with_parent_on_fork() -> None:
    """From now on, children forked by this process (and theirs) get SIGKILL when their parent dies (Linux).

    The kernel ties the signal to the thread that forked: forking threads must outlive their children,
    which every pool here does (it joins its workers before returning).
    """
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    _installed = True


def describe_exit(exitcode: int | None) -> str:
    """A worker's exit as words: ``killed by SIGBUS (bus error: ...)`` or ``exited with code 3``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
        except ValueError:
            return f"killed by signal {-exitcode}"
        hint = SIGNAL_HINTS.get(sig)
        return f"killed by {sig.name}" + (f" ({hint})" if hint else "")
    return f"exited with code {exitcode}"
