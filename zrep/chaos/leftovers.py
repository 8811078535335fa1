"""What a chaos run leaves behind if it dies, and `zrep chaos --cleanup`.

Job: every run keeps a state file (`STATE_DIR/run-*.json`: its directory,
its cluster file, whether it used rules, its power-cut mounts, whether to keep its directory),
locked with flock for as long as the run lives. `--cleanup` takes every
state file it can lock (its run is dead), kills the node process groups
started with that run's cluster file, deletes the rules' table, removes the
directory unless it was to be kept, and deletes the state file. The lock
works across namespaces (it is on the file), so a run inside its own PID
namespace is seen as alive too.

Invariants: only processes whose command line is `zrep.node` with that
run's own cluster file, and that lead their own process group, are killed;
only the run's own mount points are unmounted, before its directory goes;
nothing of a live run is touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zrep.chaos import netfaults
from zrep.chaos.powerfs.mount import mount_entry, unmount_leftover

STATE_DIR = Path(tempfile.gettempdir()) / "zrep-chaos"


class StateFile:
    """`STATE_DIR/<run>.json`, locked (flock) while the run lives: --cleanup skips locked ones."""

    def __init__(self, info: dict[str, Any]) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="run-", suffix=".json", dir=STATE_DIR)
        self.path = Path(path)
        self.fh = os.fdopen(fd, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fh.write(json.dumps(info))
        self.fh.flush()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.fh.close()


def cleanup_leftovers(say: Callable[[str], None]) -> int:
    """Remove what runs that died left behind: nodes, the rules' table, directories."""
    if netfaults.cleanup_table():
        say(f"removed the nftables table {netfaults.FAMILY} {netfaults.TABLE}")
    for state in sorted(STATE_DIR.glob("run-*.json")) if STATE_DIR.is_dir() else []:
        with open(state) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                say(f"{state}: its run is still going; left alone")
                continue
            try:
                info = json.load(fh)
            except ValueError:
                info = {}
        config = info.get("config")
        for pid in node_pids(config) if config else []:
            try:
                os.killpg(pid, signal.SIGKILL)  # each node leads its own process group
                say(f"killed leftover node process group {pid} ({config})")
            except ProcessLookupError:
                pass
        for mountpoint in info.get("mounts", []):
            if mount_entry(Path(mountpoint)) is not None:
                unmount_leftover(Path(mountpoint))
                say(f"unmounted the power-cut disk {mountpoint}")
        run_dir = info.get("dir")
        if run_dir and not info.get("keep") and Path(run_dir).is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
            say(f"removed {run_dir}")
        state.unlink(missing_ok=True)
    say("clean")
    return 0


def node_pids(config: str) -> list[int]:
    """Group leaders running `zrep.node --config CONFIG` (ours: the path is the run's own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            pid = int(entry.name)
            if b"zrep.node" in args and config.encode() in args and os.getpgid(pid) == pid:
                out.append(pid)
        except (OSError, ValueError):
            continue
    return out
