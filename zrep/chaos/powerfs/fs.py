"""The FUSE operations of the power-cut file system (fusepy, path API).

Job: pass every call through to the backing directory at once (so the
backing directory is what the page cache holds: reads are plain, SIGKILL of
a user loses nothing), tell the undo journal (zrep.chaos.powerfs.journal)
before each change, and clear it on fsync/fdatasync/fsyncdir. After `cut`
every call fails with EIO, as on a machine without power, until the mount
is replaced by a fresh one.

fsync is NOT passed on to the backing file unless `real_fsync` is set: the
host never loses power, so its own durability does not matter here, and
skipping it brings an fsync through this file system to disk speed
(POWERCUT.md measured 2.5x slower with it).

Invariants:
  * Every path is the backing directory joined with the path FUSE gives
    (always absolute inside the mount); nothing else is touched.
  * One mutex around every operation and every control command: the
    journal sees changes in the order the backing directory does.
    (fusepy registers any attribute named like a FUSE operation, so every
    attribute of ours starts with an underscore.)
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

from fuse import FuseOSError, Operations

from zrep.chaos.powerfs.journal import CutReport, Journal

_STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns",
              "st_ctime_ns", "st_blocks", "st_blksize")
_STRIP = os.O_APPEND | os.O_TRUNC | os.O_CREAT | os.O_EXCL | os.O_ACCMODE | getattr(os, "O_DIRECT", 0) \
    | os.O_SYNC | os.O_DSYNC  # O_SYNC/O_DSYNC: the kernel sends us an fsync after each write


class PowerFS(Operations):
    use_ns = True  # utimens gets nanoseconds (fusepy)

    def __init__(self, backing: Path, state: Path, *, real_fsync: bool = False) -> None:
        self._backing = Path(backing).resolve()
        self._journal = Journal(self._backing, Path(state).resolve())
        self._real_fsync = real_fsync
        self._mutex = threading.Lock()
        self._dead = False
        self._cuts = 0

    # ------------------------------------------------------------ plumbing

    def __call__(self, op: str, path: str, *args: Any) -> Any:
        with self._mutex:
            if self._dead and op not in ("release", "releasedir", "destroy"):
                raise FuseOSError(errno.EIO)
            method = getattr(self, op, None)
            if method is None:
                raise FuseOSError(errno.ENOSYS)
            try:
                return method(path, *args)
            except FuseOSError:
                raise
            except OSError as e:
                raise FuseOSError(e.errno or errno.EIO) from None

    def _full(self, path: str) -> Path:
        return self._backing / path.lstrip("/")

    # ------------------------------------------------------------ control (from the control socket)

    def cut(self, seed: int | None = None, reorder: bool = False) -> CutReport:
        """Lose power now: roll back to the durable state, then fail every call."""
        with self._mutex:
            self._dead = True
            self._cuts += 1
            return self._journal.cut(seed, reorder)

    def status(self) -> dict[str, Any]:
        with self._mutex:
            return {"dead": self._dead, "cuts": self._cuts, "real_fsync": self._real_fsync,
                    "backing": str(self._backing), "pending": self._journal.pending()}

    # ------------------------------------------------------------ reads

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        out = {k: getattr(st, k) for k in _STAT_KEYS}
        for t in ("atime", "mtime", "ctime"):
            out[f"st_{t}"] = out.pop(f"st_{t}_ns") / 1e9
        return out

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode, follow_symlinks=False):
            raise FuseOSError(errno.EACCES)
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._backing)
        return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                                            "f_files", "f_flag", "f_frsize", "f_namemax")}

    # ------------------------------------------------------------ files

    def open(self, path: str, flags: int) -> int:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        fd = os.open(self._full(path), (os.O_RDWR if writable else os.O_RDONLY) | (flags & ~_STRIP) | os.O_CLOEXEC
                     | os.O_NOFOLLOW)
        if writable and flags & os.O_TRUNC:
            self._journal.before_truncate(fd, 0)
            os.ftruncate(fd, 0)
        return fd

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        full = self._full(path)
        self._journal.before_change(full.parent)
        fd = os.open(full, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        self._journal.created(os.fstat(fd).st_ino)
        return fd

    def mknod(self, path: str, mode: int, dev: int) -> int:
        full = self._full(path)
        self._journal.before_change(full.parent)
        os.mknod(full, mode, dev)
        self._journal.created(os.lstat(full).st_ino)
        return 0

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._journal.before_write(fh, offset, len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        fd = fh if fh is not None else os.open(self._full(path), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            self._journal.before_truncate(fd, length)
            os.ftruncate(fd, length)
        finally:
            if fh is None:
                os.close(fd)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if self._real_fsync:
            (os.fdatasync if datasync else os.fsync)(fh)
        self._journal.synced(os.fstat(fh).st_ino)
        return 0

    # ------------------------------------------------------------ names

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        full = self._full(path)
        if self._real_fsync:
            fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._journal.dir_synced(full)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        full = self._full(path)
        self._journal.before_change(full.parent)
        os.mkdir(full, mode)
        self._journal.made_dir(full)
        return 0

    def rmdir(self, path: str) -> int:
        full = self._full(path)
        self._journal.before_remove(full)
        os.rmdir(full)
        return 0

    def unlink(self, path: str) -> int:
        full = self._full(path)
        self._journal.before_remove(full)
        os.unlink(full)
        return 0

    def rename(self, old: str, new: str) -> int:
        src, dst = self._full(old), self._full(new)
        self._journal.before_change(src.parent)
        self._journal.before_change(dst.parent)
        self._journal.before_remove(dst)
        os.rename(src, dst)
        if src.parent != dst.parent:
            self._journal.tie(src.parent, dst.parent)
        return 0

    def link(self, target: str, source: str) -> int:
        """A hard link `target` (new) to `source` (existing), fusepy's order."""
        new = self._full(target)
        self._journal.before_change(new.parent)
        os.link(self._full(source), new, follow_symlinks=False)
        return 0

    def symlink(self, target: str, source: str) -> int:
        """A symlink at `target` (new) holding `source`, fusepy's order."""
        new = self._full(target)
        self._journal.before_change(new.parent)
        os.symlink(source, new)
        return 0

    # ------------------------------------------------------------ metadata (never undone)

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._full(path), follow_symlinks=False)
        else:
            os.utime(self._full(path), ns=times, follow_symlinks=False)
        return 0
