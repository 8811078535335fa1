"""Child processes on this machine, each in its own process group: start, signal, stop, reap.

Job: the one way zrep's tooling (LocalCluster, `zrep cluster up`, the
benchmark's workers and bare processes) starts children and gets rid of them.
Invariants
- Every child starts in a new session, so its process group id is its pid
  and a signal to the group reaches whatever it started too.
- `stop` and `kill_all` leave no child running: what ignores the polite
  signal past the grace period is SIGKILLed (and SIGCONTinued, since a
  stopped process cannot die of SIGTERM) and waited for.
- A child that is already gone is not an error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

Proc = subprocess.Popen  # type: ignore[type-arg]


def spawn(argv: Sequence[str], *, stdin: Any = None, stdout: Any = None, stderr: Any = None,
          env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None, bufsize: int = -1) -> Proc:
    """Start `argv` as the leader of a new process group."""
    return subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                            bufsize=bufsize, start_new_session=True)


def signal_group(proc: Proc, sig: int) -> bool:
    """Send `sig` to the child's whole process group; False if it was already gone."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid
    except ProcessLookupError:
        return False
    return True


def stop(procs: Iterable[Proc], sig: int = signal.SIGTERM, grace_s: float = 10.0,
         on_kill: Callable[[Proc], None] | None = None) -> dict[int, int]:
    """Send `sig` to every live child, SIGKILL those still alive after `grace_s`; exit codes by pid.

    `on_kill(proc)` is called for each child that had to be killed, before the kill.
    """
    live = [p for p in procs if p.poll() is None]
    for p in live:
        signal_group(p, sig)
        if sig in (signal.SIGTERM, signal.SIGINT):
            signal_group(p, signal.SIGCONT)  # a paused child must run to act on the signal
    deadline = time.monotonic() + grace_s
    codes: dict[int, int] = {}
    for p in live:
        try:
            codes[p.pid] = p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill(p)
            codes[p.pid] = _kill(p)
    return codes


def kill_all(procs: Iterable[Proc], wait_s: float = 10.0) -> None:
    """SIGKILL every child's group (paused ones too), wait for each, close the pipes we hold."""
    procs = list(procs)
    for p in procs:
        if signal_group(p, signal.SIGKILL):
            signal_group(p, signal.SIGCONT)
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        _close_pipes(p)


def _kill(p: Proc) -> int:
    signal_group(p, signal.SIGKILL)
    signal_group(p, signal.SIGCONT)
    return p.wait()


def _close_pipes(p: Proc) -> None:
    pipes: list[IO[Any] | None] = [p.stdin, p.stdout, p.stderr]
    for f in pipes:
        if f is not None:
            f.close()
