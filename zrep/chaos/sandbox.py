"""Run `zrep chaos` again inside a private network + PID namespace, for partitions.

Partitions need root and nft. Then, unless already in a private network
namespace (or --no-netns), the command runs itself again inside
`unshare --net --pid --fork` (netfaults.sandbox_command) as a child of this
process: the rules, nodes and clients live and die with that namespace.
`unshare` blocks SIGINT and SIGTERM, so this process forwards them to the
tool inside, which stops the run, cleans up and reports; its exit code is
ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from zrep.chaos import netfaults
from zrep.chaos.runner import Options, Say


def run_sandboxed(opts: Options, say: Say) -> int:
    """Run this same command inside a fresh network + PID namespace; its exit code."""
    argv = [sys.executable, "-m", "zrep", "chaos", *opts.argv()]
    env = dict(os.environ, **{netfaults.NETNS_ENV: "1"})
    proc = subprocess.Popen(netfaults.sandbox_command(argv), env=env)

    def forward(signum: int, _frame: Any) -> None:
        # unshare blocks SIGINT/SIGTERM; the tool inside must get them to clean up and report.
        for pid in _children(proc.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            proc.kill()  # --kill-child then sends SIGTERM to the tool inside
            proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def partition_blocker(opts: Options) -> str:
    """Why partitions cannot run with this run's cluster file ('' when they can)."""
    if opts.config is None:
        return ""
    from zrep.config import load_config

    return netfaults.partitions_unavailable({n.id: n.host for n in load_config(opts.config).nodes})
