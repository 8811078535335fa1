"""Mount, cut and unmount a power-cut file system, its daemon in a child process.

Job: `PowerMount(root, mountpoint)` keeps the backing directory in
ROOT/backing and the journal's ghosts, limbo, control socket and daemon log
in ROOT/state (one file system: ghosts are hard links). `mount()` starts
`python -m zrep.chaos.powerfs` in its own session and returns once the
kernel lists the mount and the daemon answers `status`; `cut()`/`torn()` ask
it to lose power; `unmount()` takes the mount down with POWERCUT.md's
fallbacks: `fusermount -u`, then lazy `-uz` (a descriptor or cwd still
inside), then the fusectl `abort` of the connection (a hung daemon), and
finally kills the daemon. `reboot()` is cut + unmount + mount: a fresh
daemon with an empty journal and empty kernel caches.

Invariants:
  * What was mounted is unmounted: `unmount()` is idempotent, runs on any
    failure of `mount()`, and a PowerMount is a context manager.
  * Users first: a process with a descriptor or cwd inside gets EIO after a
    cut and makes `fusermount -u` fail; the caller kills them, `holders()`
    lists them.
  * Never imports fusepy (only the daemon does): this module works, and
    `unavailable()` says why, on machines without FUSE.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zrep.chaos.powerfs import control

READY_S = 15.0
UNMOUNT_S = 2.0  # per unmount attempt and for the daemon to exit after it: a healthy one takes ~10 ms
FUSECTL = Path("/sys/fs/fuse/connections")
PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the zrep package


class PowerFSError(RuntimeError):
    """The power-cut file system could not be mounted, cut or unmounted."""


def unavailable() -> str:
    """Why power cuts cannot run here ("" when they can)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine (FUSE is needed to simulate power cuts)"
    if os.geteuid() != 0:
        return "power cuts need root (FUSE mounts with allow_other)"
    if _fusermount() is None:
        return "fusermount is missing (apt-get install fuse3)"
    if importlib.util.find_spec("fuse") is None:
        return "fusepy is missing (pip install -e '.[test]')"
    probe = subprocess.run([sys.executable, "-c", "import fuse"], capture_output=True, text=True,
                           cwd=PACKAGE_ROOT)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"fusepy cannot load libfuse ({last}; apt-get install libfuse2)"
    return ""


def _fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_entry(mountpoint: Path) -> tuple[str, str] | None:
    """(device major:minor, fs type) of the mount at `mountpoint`, from /proc/self/mountinfo."""
    target = os.path.abspath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == target:
                rest = fields[fields.index("-") + 1:]
                found = (fields[2], rest[0])  # the last one listed is the one on top
    return found


def holders(mountpoint: Path) -> list[int]:
    """Pids with a descriptor, cwd or root inside `mountpoint` (they keep it busy)."""
    inside = os.path.abspath(mountpoint)
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        links = [f"/proc/{pid}/cwd", f"/proc/{pid}/root"]
        with contextlib.suppress(OSError):
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        for link in links:
            try:
                where = os.readlink(link)
            except OSError:
                continue
            if where == inside or where.startswith(inside + "/"):
                out.append(int(pid))
                break
    return out


class PowerMount:
    def __init__(self, root: Path, mountpoint: Path, *, real_fsync: bool = False) -> None:
        self.root = Path(root).resolve()
        self.backing = self.root / "backing"
        self.state = self.root / "state"
        self.mountpoint = Path(mountpoint).resolve()
        self.real_fsync = real_fsync
        self.daemon: subprocess.Popen[bytes] | None = None
        self.mounts = 0
        self.fallbacks: list[str] = []  # unmounts that needed more than `fusermount -u`

    # ------------------------------------------------------------ mount

    @property
    def mounted(self) -> bool:
        entry = mount_entry(self.mountpoint)
        return entry is not None and entry[1].startswith("fuse")

    def mount(self) -> None:
        if self.mounted:
            raise PowerFSError(f"{self.mountpoint} is already a mount point")
        for d in (self.backing, self.state, self.mountpoint):
            d.mkdir(parents=True, exist_ok=True)
        if any(self.mountpoint.iterdir()):
            raise PowerFSError(f"{self.mountpoint} is not empty: files there would hide under the mount")
        cmd = [sys.executable, "-m", "zrep.chaos.powerfs", "--backing", str(self.backing), "--state",
               str(self.state), str(self.mountpoint)] + (["--real-fsync"] if self.real_fsync else [])
        with open(self.state / "daemon.log", "ab") as log:
            self.daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PACKAGE_ROOT,
                                           start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.unmount()
            raise
        self.mounts += 1

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        while True:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise PowerFSError(f"the power-cut daemon for {self.mountpoint} exited with code "
                                   f"{self.daemon.returncode}: {self.log_tail()}")
            if self.mounted:
                with contextlib.suppress(OSError, ValueError):
                    if control.send(self.state, "status", timeout=2.0).get("ok"):
                        os.stat(self.mountpoint)
                        return
            if time.monotonic() > deadline:
                raise PowerFSError(f"{self.mountpoint} not mounted within {READY_S:.0f}s: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.state / "daemon.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no daemon log)"
        return " | ".join(text[-lines:]) or "(empty daemon log)"

    # ------------------------------------------------------------ power

    def command(self, line: str) -> dict[str, Any]:
        try:
            reply = control.send(self.state, line)
        except (OSError, ValueError) as e:
            raise PowerFSError(f"the power-cut daemon of {self.mountpoint} did not answer {line!r}: {e}") from e
        if not reply.get("ok"):
            raise PowerFSError(f"{self.mountpoint}: {line!r} failed: {reply.get('error')}")
        return reply

    def cut(self, seed: int | None = None, reorder: bool = False) -> dict[str, Any]:
        """Lose power (a seed: `torn`, keeping a random prefix of each file's unsynced appends;
        with `reorder`, random pages of them, the others zeroed)."""
        if seed is None:
            return self.command("cut")
        return self.command(f"{'reorder' if reorder else 'torn'} {seed}")

    def status(self) -> dict[str, Any]:
        return self.command("status")

    def reboot(self, seed: int | None = None, reorder: bool = False) -> dict[str, Any]:
        """Cut, unmount and mount again; what the cut did. Kill the users first."""
        report = self.cut(seed, reorder)
        self.unmount()
        self.mount()
        return report

    # ------------------------------------------------------------ unmount

    def unmount(self) -> None:
        """Take the mount down, whatever state the daemon is in; then make sure the daemon is gone."""
        try:
            if mount_entry(self.mountpoint) is not None:
                self._unmount_with_fallbacks()
        finally:
            self._stop_daemon()

    def _unmount_with_fallbacks(self) -> None:
        tool = _fusermount() or "fusermount"
        if self._run([tool, "-u", str(self.mountpoint)]):
            return
        busy = holders(self.mountpoint)
        self.fallbacks.append(f"lazy unmount (busy: pids {busy})")
        if self._run([tool, "-uz", str(self.mountpoint)]):
            return
        self.fallbacks.append("fusectl abort")
        self._abort()
        if not self._run([tool, "-uz", str(self.mountpoint)]):
            self._run(["umount", "-l", str(self.mountpoint)])
        if mount_entry(self.mountpoint) is not None:
            raise PowerFSError(f"{self.mountpoint} is still mounted after fusermount -u, -uz and a fusectl "
                               f"abort; unmount it by hand (umount -l {self.mountpoint})")

    def _run(self, cmd: list[str]) -> bool:
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=UNMOUNT_S)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0 and mount_entry(self.mountpoint) is None

    def _abort(self) -> None:
        entry = mount_entry(self.mountpoint)
        if entry is None:
            return
        if not FUSECTL.joinpath("abort").exists() and not any(FUSECTL.glob("*")):
            subprocess.run(["mount", "-t", "fusectl", "none", str(FUSECTL)], capture_output=True)
        minor = entry[0].split(":")[1]
        with contextlib.suppress(OSError):
            (FUSECTL / minor / "abort").write_text("1")

    def _stop_daemon(self) -> None:
        d = self.daemon
        if d is None:
            return
        try:
            d.wait(UNMOUNT_S)
        except subprocess.TimeoutExpired:  # a lazy unmount with holders left, or a hung daemon
            with contextlib.suppress(ProcessLookupError):
                os.killpg(d.pid, signal.SIGKILL)
                os.killpg(d.pid, signal.SIGCONT)
            d.wait(10.0)
        self.daemon = None

    def __enter__(self) -> PowerMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def unmount_leftover(mountpoint: Path) -> None:
    """Take down a mount whose PowerMount is gone (a killed run): lazily, its daemon is gone or dies with it."""
    tool = _fusermount() or "fusermount"
    if subprocess.run([tool, "-uz", str(mountpoint)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
