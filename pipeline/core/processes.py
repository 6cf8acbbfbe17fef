"""Worker processes that never outlive their parent, and exit codes that say what killed a worker.

A ``kill -9`` of a run's main process must not leave its worker pool, datatrove's queue manager or a
tokenize pool running forever: on Linux every process forked from a process that called
:func:`die_with_parent_on_fork` asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

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


@dataclass(frozen=True)
class ItemFailed:
    """The outcome of an item whose call raised (``error`` is the exception as a line) or whose process died."""

    error: str


def call_item(fn: Callable[[int], T], index: int) -> T | ItemFailed:
    """``fn(index)``, or the failure as a value: one bad item must not stop the others."""
    try:
        return fn(index)
    except Exception as e:
        log.error("item %d failed: %s: %s", index, type(e).__name__, e)
        log.info("item %d traceback:\n%s", index, traceback.format_exc())
        return ItemFailed(f"{type(e).__name__}: {e}")


def run_supervised(
    fn: Callable[[int], T],
    count: int,
    workers: int,
    *,
    on_result: Callable[[int, T | ItemFailed], None] | None = None,
) -> list[T | ItemFailed]:
    """``[fn(0), ..., fn(count - 1)]``, each call in its own forked process, at most ``workers`` at once.

    The parent waits on every child's result pipe and exit sentinel, never on a queue a dead child could
    hold: a child killed by the OS (SIGBUS, the OOM killer, SIGKILL) is seen at once and its item becomes
    ``ItemFailed("worker process killed by SIGKILL (...)")``; the other items go on. Children die with
    the parent. ``on_result(index, outcome)`` is called in the parent as items finish (progress bars).
    """
    die_with_parent_on_fork()
    context = multiprocessing.get_context("fork")
    results: list[T | ItemFailed] = [ItemFailed("not run")] * count
    pending = list(range(count))
    running: dict[int, tuple[multiprocessing.process.BaseProcess, Connection]] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                index = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                child = context.Process(target=_child, args=(fn, index, sender), name=f"item-{index}")
                child.start()
                sender.close()
                running[index] = (child, receiver)
            # a result may be larger than the pipe: wait on the pipes too, and read before joining
            waitables = {
                obj: index for index, (child, receiver) in running.items() for obj in (child.sentinel, receiver)
            }
            for ready in multiprocessing.connection.wait(list(waitables)):
                index = waitables[ready]
                if index not in running:
                    continue  # its pipe and its sentinel were both ready: handled once
                child, receiver = running.pop(index)
                results[index] = _receive(receiver, child)
                if on_result is not None:
                    on_result(index, results[index])
    finally:
        for child, receiver in running.values():  # interrupted: no child outlives the call
            child.kill()
            child.join()
            receiver.close()
    return results


def _child(fn: Callable[[int], Any], index: int, sender: Connection) -> None:
    outcome = call_item(fn, index)
    try:
        sender.send((index, outcome))
    except Exception as e:  # an unpicklable result: report it instead
        sender.send((index, ItemFailed(f"result of item {index} cannot be sent back: {type(e).__name__}: {e}")))
    sender.close()


def _receive(receiver: Connection, child: multiprocessing.process.BaseProcess) -> Any:
    """The child's outcome; its pipe is read before the child is joined (a large result fills the pipe)."""
    message = None
    try:
        message = receiver.recv()
    except (EOFError, OSError):  # the child died before it could answer
        pass
    finally:
        receiver.close()
    child.join()
    if message is None:
        return ItemFailed(f"worker process {describe_exit(child.exitcode)}")
    return message[1]
