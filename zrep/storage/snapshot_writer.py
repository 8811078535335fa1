"""Take store snapshots without stalling the node loop: in a forked child.

Packing a store of a million messages takes seconds of CPU, longer than an
election timeout; done in the loop it would cost the node its leadership. A
forked child sees the store exactly as it was at the fork (copy-on-write), packs
and writes it (zrep.storage.snapshot_files.write_snapshot), and exits; the loop goes on and
asks `poll()` once a turn whether the child is done.

The child closes every inherited descriptor first (the parent's listening
sockets and WAL lock must never outlive the parent), asks the kernel to kill it
if the parent dies, touches no zmq object, and leaves with os._exit (no atexit
hooks, no destructors of the parent's objects). Its error, if any, comes back
as one line through a pipe. The cost to the parent is the fork itself (page
tables: milliseconds for hundreds of MB) and, while the child runs, the pages
the loop writes being copied.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from zrep.storage.snapshot_files import TMP_PREFIX, write_snapshot
from zrep.store.store import Store

_PR_SET_PDEATHSIG = 1
_MAX_ERROR_BYTES = 500


@dataclass(frozen=True, slots=True)
class Written:
    """How a snapshot attempt ended."""

    index: int
    seconds: float
    error: str  # "" when the file was written and flushed


class SnapshotWriter:
    """At most one child at a time, writing into `directory`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._pid = 0
        self._pipe = -1
        self._index = 0
        self._started = 0.0

    @property
    def running(self) -> bool:
        return self._pid != 0

    def start(self, store: Store, epoch: int) -> None:
        """Fork a child that writes `store` (which applied up to its applied_index, of `epoch`)."""
        if self._pid:
            raise RuntimeError("a snapshot is already being written")
        read_end, write_end = os.pipe()
        parent = os.getpid()
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork in a process with threads: the child
            # here never touches what the other (zmq) threads hold.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            _child(store, epoch, self.directory, write_end, parent)
        os.close(write_end)
        self._pid, self._pipe = pid, read_end
        self._index, self._started = store.applied_index, time.monotonic()

    def poll(self) -> Written | None:
        """The outcome once the child has exited, else None (never blocks)."""
        if not self._pid:
            return None
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._finish(status)

    def stop(self) -> None:
        """Kill a running child and forget it (its temporary file is removed)."""
        if not self._pid:
            return
        pid = self._pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self._close_pipe()
        self._pid = 0
        (self.directory / f"{TMP_PREFIX}{pid}").unlink(missing_ok=True)

    def _finish(self, status: int) -> Written:
        error = ""
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            try:
                error = os.read(self._pipe, _MAX_ERROR_BYTES).decode(errors="replace").strip()
            except OSError:
                pass
            if not error:
                error = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                         else f"exit code {os.waitstatus_to_exitcode(status)}")
        self._close_pipe()
        self._pid = 0
        return Written(self._index, time.monotonic() - self._started, error)

    def _close_pipe(self) -> None:
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1


def _child(store: Store, epoch: int, directory: Path, error_fd: int, parent: int) -> None:
    code = 1
    try:
        gc.disable()  # a collection would touch (and so copy) every page of the parent's heap
        _die_with_parent(parent)
        # Listening sockets, zmq's descriptors and the WAL (with its lock) must not outlive the parent.
        os.closerange(3, error_fd)
        os.closerange(error_fd + 1, _max_fd())
        write_snapshot(directory, store.applied_index, epoch, store.to_bytes())
        code = 0
    except BaseException as e:  # noqa: BLE001 - whatever it was, the parent hears of it in one line
        with contextlib.suppress(OSError):
            os.write(error_fd, f"{type(e).__name__}: {e}".encode(errors="replace")[:_MAX_ERROR_BYTES])
    finally:
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 20)
    except (ValueError, OSError):
        return 4096
