"""Worker processes that never outlive their parent, and exit codes that say what killed a worker.

A ``kill -9`` of a run's main process must not leave its workers (or the shard-validation job) running:
on Linux each child this project starts asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``, :func:`die_with_parent`). Only our own children do: a process-wide fork hook would
also reach children third-party code starts (pyspark's JVM), tying their life to a thread.
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
JOIN_AFTER_RESULT_S = 30.0
"""A child that sent its result but does not exit (a stray non-daemon thread) is killed after this."""

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


def die_with_parent(parent_pid: int) -> None:
    """Called first thing in a child: SIGKILL when ``parent_pid`` dies (Linux; elsewhere nothing).

    The kernel ties the signal to the thread that started the child: callers must outlive their children,
    which every caller here does (it waits for them before returning).
    """
    if not sys.platform.startswith("linux"):
        return
    if _prctl_pdeathsig() and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect: nobody waits for this child


def die_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess``: the child dies with this process (Linux)."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)


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
    context = multiprocessing.get_context("fork")
    parent = os.getpid()
    results: list[T | ItemFailed] = [ItemFailed("not run")] * count
    pending = list(range(count))
    running: dict[int, tuple[multiprocessing.process.BaseProcess, Connection]] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                index = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                child = context.Process(target=_child, args=(fn, index, sender, parent), name=f"item-{index}")
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


def _child(fn: Callable[[int], Any], index: int, sender: Connection, parent: int) -> None:
    die_with_parent(parent)
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
    child.join(JOIN_AFTER_RESULT_S if message is not None else None)
    if child.exitcode is None:  # answered but cannot exit: its result stands, the process goes
        log.warning("worker %s did not exit after its result; killing it", child.name)
        child.kill()
        child.join()
    if message is None:
        return ItemFailed(f"worker process {describe_exit(child.exitcode)}")
    return message[1]
