"""Store snapshots on disk: the state machine at one applied index, in one file.

Job: write and read `store.snap` in a node's data directory, and decide
whether a snapshot read at start-up may stand in for applying the log up to
its index. (Taking one without stalling the node loop is zrep.storage.snapshot_writer.)

While the WAL still starts at index 1, a snapshot only shortens a restart: one
that is missing, torn, corrupt, made under other store limits, or that does
not match the log is ignored with a warning and the store is rebuilt from the
log. Once the WAL is compacted (it starts with a SNAPSHOT_MARK at first_index
> 1) the snapshot is REQUIRED: `load_snapshot` returns None with the reason
and the node refuses to start (it never starts with a store that silently
lacks entries). A compacted log may then also sit behind or beside the
snapshot (an install renamed the snapshot in, then the node died before it
rewrote its WAL): the snapshot wins and the log is dropped (Raft's rule; the
snapshot holds committed state only, and no entry that conflicts with it can
be committed). It never holds more than was committed: a node snapshots its
store, a store applies committed entries only, and a follower installs only
a snapshot a leader of its current epoch sent.

The file format is zrep.store.snapshot. Written under a temporary name,
fsynced, renamed over the old file, then the directory is fsynced: a crash
leaves the old file or the new one, never a mix. `SnapshotFile` reads one for
shipping (kept open: a newer snapshot renamed over it does not disturb a
transfer); `ReceivedFile` writes one arriving in chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

from zrep.errors import DecodeError
from zrep.storage import bugs
from zrep.storage.wal import Replay, sync_data, sync_dir
from zrep.store.snapshot import (  # noqa: F401  (MAGIC, VERSION, encode_snapshot: re-exported)
    HEADER_READ_BYTES,
    MAGIC,
    VERSION,
    Snapshot,
    decode_header,
    decode_snapshot,
    encode_snapshot,
    snapshot_fits,
)
from zrep.store.store import StoreLimits

SNAPSHOT_NAME = "store.snap"
TMP_PREFIX = SNAPSHOT_NAME + ".tmp-"  # + the writer's pid: two writers never share a file


def snapshot_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / SNAPSHOT_NAME


def write_snapshot(directory: str | os.PathLike[str], index: int, epoch: int, body: bytes) -> Path:
    """Write atomically and durably; OSError if the disk refuses (the old file stays)."""
    final = snapshot_path(directory)
    tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}")
    data = encode_snapshot(index, epoch, body)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        sync_data(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, final)
    if not bugs.planted(bugs.RENAME_WITHOUT_DIR_FSYNC):  # PLANTED BUG when it is
        sync_dir(str(final.parent))
    return final


def remove_stale_tmp(directory: str | os.PathLike[str]) -> None:
    """Delete temporary files a killed writer left behind."""
    for p in Path(directory).glob(TMP_PREFIX + "*"):
        p.unlink(missing_ok=True)


def load_snapshot(directory: str | os.PathLike[str], replay: Replay, limits: StoreLimits) -> tuple[Snapshot | None, str]:
    """The snapshot that may replace applying the log up to its index, else None and why not ("" if no file).

    It must decode, be made under the same store limits (they decide answers),
    and name an entry the log holds with the same epoch: a log cut shorter than
    the snapshot (a disk that lost synced bytes) or diverged from it is rebuilt
    from the log instead, which is what the node did before snapshots existed.
    A compacted log cannot be rebuilt from: see the module docstring.
    """
    if replay.first_index > 1:
        return _load_required(directory, replay, limits)
    path = snapshot_path(directory)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, ""
    except OSError as e:
        return None, f"{path}: cannot read the snapshot ({e}); rebuilding the store from the log"
    try:
        snap = decode_snapshot(data)
    except DecodeError as e:
        return None, f"{path}: snapshot ignored, {e}; rebuilding the store from the log"
    if snap.store.limits != limits:
        return None, (f"{path}: snapshot ignored, it was made under other store limits "
                      f"({snap.store.limits} vs {limits}); rebuilding the store from the log")
    last = replay.first_index - 1 + len(replay.entries)
    if not replay.first_index - 1 <= snap.index <= last:
        return None, (f"{path}: snapshot of index {snap.index} ignored, the log holds "
                      f"{replay.first_index}..{last}; rebuilding the store from the log")
    if snap.index == replay.first_index - 1:
        epoch = replay.prev_epoch
    else:
        epoch = replay.entries[snap.index - replay.first_index].epoch
    if epoch != snap.epoch:
        return None, (f"{path}: snapshot of index {snap.index} (epoch {snap.epoch}) ignored, the log has "
                      f"epoch {epoch} there; rebuilding the store from the log")
    return snap, ""


def fits_log(snap: Snapshot, replay: Replay) -> bool:
    """Does the log hold the snapshot's last entry (or end just before its own start there)?
    If not, a start from this snapshot drops the log (see the module docstring)."""
    return snapshot_fits(snap, replay.first_index, replay.prev_epoch, [e.epoch for e in replay.entries])


def _load_required(directory: str | os.PathLike[str], replay: Replay, limits: StoreLimits) -> tuple[Snapshot | None, str]:
    """A compacted log's snapshot: it must exist, decode, share our limits and cover first_index - 1."""
    path = snapshot_path(directory)
    try:
        snap = decode_snapshot(path.read_bytes())
    except FileNotFoundError:
        return None, f"its snapshot {path} is missing"
    except OSError as e:
        return None, f"its snapshot {path} cannot be read ({e})"
    except DecodeError as e:
        return None, f"its snapshot {path} is unusable: {e}"
    if snap.store.limits != limits:
        return None, f"its snapshot {path} was made under other store limits ({snap.store.limits} vs {limits})"
    if snap.index < replay.first_index - 1:
        return None, (f"its snapshot {path} holds entries up to {snap.index} only, "
                      f"the log starts at {replay.first_index}")
    return snap, ""


class SnapshotFile:
    """The snapshot file as it was when opened, for shipping (zrep.service.shipping.Source)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._fd = os.open(snapshot_path(directory), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = os.fstat(self._fd).st_size
            self.index, self.epoch, *_ = decode_header(os.pread(self._fd, HEADER_READ_BYTES, 0))
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> SnapshotFile | None:
        """None when there is no readable snapshot (the leader retries later)."""
        try:
            return cls(directory)
        except (OSError, DecodeError):
            return None

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ReceivedFile:
    """Where a snapshot arriving in chunks is written (zrep.service.shipping.Sink): a temporary
    file (removed by remove_stale_tmp at start, so a restart mid-transfer starts over)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / f"{TMP_PREFIX}recv"
        self._fd = -1

    def begin(self) -> None:
        self.discard()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def read_all(self) -> bytes:
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size, 0)

    def make_durable(self) -> None:
        sync_data(self._fd)

    def put_in_place(self) -> None:
        """Rename the (durable) file over store.snap and flush the directory."""
        final = snapshot_path(self.path.parent)
        os.replace(self.path, final)
        if not bugs.planted(bugs.RENAME_WITHOUT_DIR_FSYNC):  # PLANTED BUG when it is
            sync_dir(str(final.parent))
        self._close()

    def discard(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
