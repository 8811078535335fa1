"""The control socket of a power-cut file system: `cut`, `torn SEED`, `status`.

Job: one Unix stream socket (STATE/ctl.sock) served by a daemon thread of
the FUSE process; one command line in, one JSON line out:
  cut          lose power: drop everything not fsynced, then EIO on every call
  torn SEED    the same, but each file keeps a seeded random prefix of its
               unsynced appends (a write cut part-way through)
  reorder SEED the same, but each 4 KiB page of the unsynced appends is kept
               or zeroed at random (pages reaching the disk out of order: not
               ext4's ordered mode, which never shows it; XFS or data=writeback may)
  status       {"dead", "cuts", "pending": {files, directories, ghosts}, ...}
Replies are {"ok": true, ...} or {"ok": false, "error": "..."}; a bad
command is answered and the daemon goes on. `send` is the client side.

Invariant: the socket lives in the state directory, never in the mount.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

SOCKET_NAME = "ctl.sock"
MAX_LINE = 200


class Target(Protocol):
    def cut(self, seed: int | None = None, reorder: bool = False) -> Any: ...

    def status(self) -> dict[str, Any]: ...


def answer(target: Target, line: str) -> dict[str, Any]:
    words = line.split()
    try:
        if words == ["cut"]:
            return {"ok": True, **target.cut(None).to_dict()}
        if len(words) == 2 and words[0] in ("torn", "reorder"):
            seed = int(words[1])
            return {"ok": True, "seed": seed, **target.cut(seed, words[0] == "reorder").to_dict()}
        if words == ["status"]:
            return {"ok": True, **target.status()}
        return {"ok": False, "error": f"unknown command {line[:60]!r}; use cut, torn SEED, reorder SEED or status"}
    except (OSError, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


class ControlServer:
    """Serves `target` on `path` from a daemon thread (one connection at a time)."""

    def __init__(self, target: Target, path: Path) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(4)
        self._target = target
        threading.Thread(target=self._serve, name="powerfs-control", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5.0)
                    line = conn.makefile("r").readline(MAX_LINE).strip()
                    conn.sendall((json.dumps(answer(self._target, line)) + "\n").encode())
                except OSError:
                    pass  # the client went away: nothing to answer


def send(state_dir: Path, command: str, timeout: float = 10.0) -> dict[str, Any]:
    """One command to the daemon of `state_dir`; its reply. OSError if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(Path(state_dir) / SOCKET_NAME))
        s.sendall(command.encode() + b"\n")
        reply = s.makefile("r").readline()
    if not reply:
        raise ConnectionError(f"the power-cut daemon of {state_dir} closed the socket without an answer")
    return json.loads(reply)
