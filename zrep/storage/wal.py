"""The durable write-ahead log: the only module that opens data files.

One append-only file of records (layout in zrep.storage.wal_format). `Wal.open` creates
the file if missing, replays it, repairs a torn tail and returns the log as it
stands. Writes are buffered; `sync()` turns everything buffered into one
`write` and one fdatasync (group commit), so a batch of entries costs one disk
flush.

Invariants:
- Nothing is acknowledged before `sync()` returns: `synced_offset` is the
  number of bytes known durable, and only grows.
- Records are only appended: conflicts append TRUNCATE, repairs only cut a
  torn tail (bytes after which nothing valid follows, see wal_format.Scan).
  Corruption anywhere else raises CorruptLogError and the file is left as is.
- The one exception is `rewrite` (log compaction, snapshot install): a new
  file holding a SNAPSHOT_MARK, the kept entries, the hard state and the
  commit hint is written under REWRITE_SUFFIX, fsynced, locked, renamed over
  the WAL, and the directory fsynced. The kept entries are copied as the
  file's own bytes from the last write of the first kept entry to the end
  (the Wal knows each entry's offset): no record is encoded again, and the
  records after that point replay the same after the mark. A crash leaves the old file or the new one,
  each valid on its own (a leftover REWRITE_TMP is deleted on open). The
  entries before the mark must be in a durable snapshot first: the caller's
  duty, since the WAL knows nothing of snapshots.
- A failed write or flush is never retried (after a failed fsync the page
  cache may already have dropped the dirty pages): the Wal raises StorageError
  and then refuses every call except close().
- The file is preallocated ahead of the writes (PREALLOC_BYTES at a time, zeros):
  a record is written into space the file already has, so its fdatasync flushes
  the data without a change of the file's size (about a third less per flush on
  ext4, measured by `zrep bench wal`). The records end where the zeros up to the
  end of the file begin; replay treats that stretch as free space, never as a
  torn tail (wal_format.zeros_from). A crash that cuts a write leaves its first
  bytes and then zeros: a torn tail, cut as before.
- Replayed bytes are flushed once on open, because they may have come from the
  page cache of a process that died before its fsync; the directory is flushed
  too, so a file created by a crashed run cannot vanish later.
- The writer enforces the same rules replay checks (contiguous indexes,
  truncation only above the commit index, epoch and vote never go back), so a
  file we wrote always replays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import msgpack

from zrep.core.messages import Entry, HardState
from zrep.errors import CorruptLogError, InvariantError, StorageError
from zrep.storage import bugs
from zrep.storage.wal_format import (
    Commit,
    Record,
    Scan,
    SnapshotMark,
    StopKind,
    Truncate,
    encode_entry,
    encode_record,
    written_tail,
)

PREALLOC_BYTES = 4 * 1024 * 1024  # the file grows by this much ahead of its writes
REWRITE_SUFFIX = ".rewrite-tmp"  # a rewrite's new file, before its rename over the WAL


@dataclass(frozen=True, slots=True)
class Replay:
    """The log as it stands after replay (truncations applied).

    `entries` are contiguous from `first_index`; `prev_epoch` is the epoch of
    entry first_index - 1 (0 when the log starts at 1), known from a snapshot
    mark. `commit` is the last commit hint found. `torn_bytes` were cut off the
    tail; `warnings` are lines for the node's log.
    """

    hard_state: HardState
    entries: list[Entry]
    first_index: int
    commit: int
    torn_bytes: int
    warnings: list[str]
    prev_epoch: int = 0
    offsets: array = field(default_factory=lambda: array("q"))  # file offset of each entry's record


class _Invalid(Exception):
    """A record that decodes but breaks the log's rules (replay turns it into CorruptLogError)."""


@dataclass
class _ReplayState:
    """Applies records in file order and checks the rules the writer keeps."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    first_index: int = 1
    prev_epoch: int = 0
    commit: int = 0
    offsets: array = field(default_factory=lambda: array("q"))
    offset: int = 0  # of the record being applied

    @property
    def last_index(self) -> int:
        return self.first_index - 1 + len(self.entries)

    def apply(self, record: Record) -> None:
        _APPLY[type(record)](self, record)

    def _entry(self, e: Entry) -> None:
        if e.index != self.first_index + len(self.entries):  # last_index + 1, inline: once per record
            raise _Invalid(f"entry index {e.index} does not follow {self.last_index}")
        self.entries.append(e)
        self.offsets.append(self.offset)

    def _truncate(self, t: Truncate) -> None:
        _check_truncate(t.from_index, self.first_index, self.last_index, self.commit)
        del self.entries[t.from_index - self.first_index :], self.offsets[t.from_index - self.first_index :]

    def _hard_state(self, hs: HardState) -> None:
        _check_hard_state(self.hard_state, hs)
        self.hard_state = hs

    def _commit(self, c: Commit) -> None:
        if c.index > self.last_index:
            raise _Invalid(f"commit {c.index} beyond the last entry {self.last_index}")
        self.commit = max(self.commit, c.index)

    def _snapshot(self, m: SnapshotMark) -> None:
        # Raft's rule: keep the suffix after the snapshot point if the log holds
        # the snapshot's last entry (same index and epoch); else drop it all.
        prev = m.first_index - 1
        if m.first_index < self.first_index:
            raise _Invalid(f"snapshot mark at {m.first_index} goes behind the log start {self.first_index}")
        if prev <= self.last_index and self._epoch_at(prev) == m.epoch_of_prev:
            del self.entries[: m.first_index - self.first_index], self.offsets[: m.first_index - self.first_index]
        else:
            if self.commit > prev:
                raise _Invalid(f"snapshot mark at {m.first_index} would drop committed entries up to {self.commit}")
            self.entries.clear()
            del self.offsets[:]
        self.first_index, self.prev_epoch = m.first_index, m.epoch_of_prev
        self.commit = max(self.commit, prev)

    def _epoch_at(self, index: int) -> int:
        if index == self.first_index - 1:
            return self.prev_epoch
        return self.entries[index - self.first_index].epoch


_APPLY: dict[type, Callable[[_ReplayState, Record], None]] = {
    Entry: _ReplayState._entry,  # type: ignore[dict-item]
    Truncate: _ReplayState._truncate,  # type: ignore[dict-item]
    HardState: _ReplayState._hard_state,  # type: ignore[dict-item]
    Commit: _ReplayState._commit,  # type: ignore[dict-item]
    SnapshotMark: _ReplayState._snapshot,  # type: ignore[dict-item]
}


def _check_truncate(from_index: int, first_index: int, last_index: int, commit: int) -> None:
    """Truncation stays inside the log and above the commit index (committed entries are forever)."""
    if not first_index <= from_index <= last_index + 1:
        raise _Invalid(f"truncate from {from_index} outside the log [{first_index}, {last_index + 1}]")
    if from_index <= commit:
        raise _Invalid(f"truncate from {from_index} would drop committed entries up to {commit}")


def _check_hard_state(old: HardState, new: HardState) -> None:
    """The epoch never goes back, and within one epoch the vote, once given, never changes."""
    if new.epoch < old.epoch:
        raise _Invalid(f"hard state epoch goes back from {old.epoch} to {new.epoch}")
    if new.epoch == old.epoch and old.vote not in (0, new.vote):
        raise _Invalid(f"vote changes from {old.vote} to {new.vote} within epoch {new.epoch}")


def replay_buffer(buf: bytes, path: str) -> tuple[Replay, int]:
    """Replay a whole file's bytes (pure). Returns the replay and the length to keep.

    Raises CorruptLogError for a bad record that valid records follow, and for
    records that break the log's rules.
    """
    state = _ReplayState()
    scan = Scan(buf)
    entries, offsets = state.entries, state.offsets  # changed in place only, never replaced
    for offset, record in scan:
        if type(record) is Entry and record.index == state.first_index + len(entries):
            entries.append(record)  # _ReplayState._entry, inline: nearly every record of a WAL
            offsets.append(offset)
            continue
        state.offset = offset
        try:
            state.apply(record)
        except _Invalid as exc:
            raise CorruptLogError(path, offset, str(exc)) from None
    stop = scan.stop
    if stop is None:  # the loop above always exhausts the scan
        raise InvariantError("WAL scan ended without a stop reason")
    if stop.kind is StopKind.CORRUPT:
        raise CorruptLogError(path, stop.offset, f"{stop.reason}; valid record follows at byte {stop.next_valid}")
    warnings = []
    torn = 0
    if stop.kind is StopKind.TORN:
        # Zeros after the last record are the preallocated space (or a cut write that
        # left nothing): the log just ends. Anything else a crash left is a torn tail.
        torn = written_tail(buf, stop.offset)
    if torn:
        warnings.append(
            f"{path}: torn tail of {torn} bytes at byte {stop.offset} ({stop.reason}); "
            f"cut off (an interrupted, never acknowledged write)"
        )
    replay = Replay(
        hard_state=state.hard_state,
        entries=state.entries,
        first_index=state.first_index,
        commit=state.commit,
        torn_bytes=torn,
        warnings=warnings,
        prev_epoch=state.prev_epoch,
        offsets=state.offsets,
    )
    return replay, stop.offset


def read_log(path: str | os.PathLike[str]) -> bytes:
    """Read a WAL file without locking or repairing it (for `zrep log inspect`)."""
    with open(path, "rb") as f:
        return f.read()


def sync_data(fd: int) -> None:
    """The flush the WAL uses (public so the benchmark measures the same call)."""
    # fdatasync skips the mtime update but still flushes the file size after an
    # append, which is all replay needs. macOS' fsync does not reach the platter.
    if sys.platform == "darwin":
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    elif hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def sync_dir(path: str) -> None:
    """Flush a directory, so a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: str) -> None:
    """Create missing directories, each flushed into its parent."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        sync_dir(os.path.dirname(d))


def _read_all(fd: int) -> tuple[bytes, int]:
    """(the file's bytes, its size): the bytes stop early where only holes follow, which
    read as zeros by definition (the preallocated space, not read for nothing)."""
    size = os.fstat(fd).st_size
    end = _data_end(fd, size)
    chunks, offset = [], 0
    while offset < end:
        chunk = os.pread(fd, end - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks), size


def _data_end(fd: int, size: int) -> int:
    """Where the file's last stretch of holes begins (`size` if none, or if the file system
    cannot tell): SEEK_HOLE may call a hole data, never data a hole."""
    seek_hole, seek_data = getattr(os, "SEEK_HOLE", None), getattr(os, "SEEK_DATA", None)
    if size == 0 or seek_hole is None or seek_data is None:
        return size
    try:
        hole = os.lseek(fd, 0, seek_hole)
    except OSError:
        return size
    if hole >= size:
        return size
    try:
        os.lseek(fd, hole, seek_data)
    except OSError as exc:
        return hole if exc.errno == errno.ENXIO else size  # ENXIO: no data after the hole
    return size  # data after the first hole: read it all, replay judges it


class Wal:
    """An open WAL file. Build with `Wal.open(path)`; single-threaded use."""

    def __init__(self, path: str, fd: int, replay: Replay, size: int, allocated: int | None = None) -> None:
        self.path = path
        self._fd: int | None = fd
        self._failed: str | None = None
        self._pending: list[bytes] = []
        self._pending_durable = False  # a buffered record needs a flush (not only hints)
        self._written = size  # bytes handed to the OS
        self._synced = size  # bytes known durable
        self._first_index = replay.first_index
        self._last_index = replay.first_index - 1 + len(replay.entries)
        self._commit = replay.commit
        self._hard_state = replay.hard_state
        self._pack = msgpack.Packer(use_bin_type=True).pack  # reused: a Wal belongs to one thread
        self._offsets = replay.offsets  # where each entry's record starts (for `rewrite`)
        self._end = size  # where the next buffered record will start
        self._allocated = size if allocated is None else allocated  # the file's size: zeros after _written
        self._prealloc = True  # until the file system refuses it
        self._late_flushed = time.monotonic()  # for the planted bug WAL_ACK_BEFORE_FSYNC only

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> tuple[Wal, Replay]:
        """Open (creating if missing), replay, repair a torn tail, flush, lock."""
        path = os.path.abspath(os.fspath(path))
        try:
            _ensure_dir(os.path.dirname(path))
            if os.path.exists(path + REWRITE_SUFFIX):  # a rewrite that died before its rename
                os.unlink(path + REWRITE_SUFFIX)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # records go at _written (pwrite)
        except OSError as exc:
            raise StorageError(f"{path}: cannot open the WAL: {exc}") from exc
        try:
            return cls._open_fd(path, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _open_fd(cls, path: str, fd: int) -> tuple[Wal, Replay]:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"{path}: the WAL is in use by another process or Wal") from None
        try:
            buf, size = _read_all(fd)
        except OSError as exc:
            raise StorageError(f"{path}: cannot read the WAL: {exc}") from exc
        replay, keep = replay_buffer(buf, path)
        try:
            if replay.torn_bytes:
                os.ftruncate(fd, keep)  # our next write must not land before leftover bytes
            wal = cls(path, fd, replay, keep, allocated=keep if replay.torn_bytes else size)
            wal._reserve(keep + 1)
            # Flush what we replayed (and the cut) before anyone acts on it; a
            # new file is flushed together with its directory entry.
            sync_data(fd)
            sync_dir(os.path.dirname(path))
        except OSError as exc:
            raise StorageError(f"{path}: cannot repair or flush the WAL on open: {exc}") from exc
        return wal, replay

    # -- buffered writes ---------------------------------------------------------

    def append_entries(self, entries: Sequence[Entry]) -> None:
        """Buffer entries; each must follow the last one (index == last + 1)."""
        self._usable()
        last = self._last_index
        frames = []
        pack = self._pack
        offsets, end = self._offsets, self._end
        for e in entries:
            if e.index != last + 1:
                raise InvariantError(f"{self.path}: append of index {e.index} after {last}")
            frame = encode_entry(e, pack)
            frames.append(frame)
            offsets.append(end)
            end += len(frame)
            last += 1
        self._end = end
        self._pending.extend(frames)
        self._pending_durable = self._pending_durable or bool(frames)
        self._last_index = last

    def truncate(self, from_index: int) -> None:
        """Buffer a TRUNCATE: entries >= from_index are dropped (never committed ones)."""
        self._usable()
        try:
            _check_truncate(from_index, self._first_index, self._last_index, self._commit)
        except _Invalid as exc:
            raise InvariantError(f"{self.path}: {exc}") from None
        self._buffer(encode_record(Truncate(from_index)))
        del self._offsets[from_index - self._first_index :]
        self._last_index = from_index - 1

    def set_hard_state(self, hs: HardState) -> None:
        """Buffer a HARD_STATE if it changed. Epoch and vote never go back."""
        self._usable()
        if hs == self._hard_state:
            return
        try:
            _check_hard_state(self._hard_state, hs)
        except _Invalid as exc:
            raise InvariantError(f"{self.path}: {exc}") from None
        if bugs.planted(bugs.HARD_STATE_NO_FSYNC):  # PLANTED BUG: no flush for it
            frame = encode_record(hs)
            self._pending.append(frame)
            self._end += len(frame)
        else:
            self._buffer(encode_record(hs))
        self._hard_state = hs

    def set_commit(self, index: int) -> None:
        """Buffer a COMMIT hint if it advances. It never forces a flush of its own."""
        self._usable()
        if index <= self._commit:
            return
        if index > self._last_index:
            raise InvariantError(f"{self.path}: commit {index} beyond the last entry {self._last_index}")
        frame = encode_record(Commit(index))
        self._pending.append(frame)
        self._end += len(frame)
        self._commit = index

    def _buffer(self, frame: bytes) -> None:
        self._pending.append(frame)
        self._end += len(frame)
        self._pending_durable = True

    def rewrite(self, first_index: int, prev_epoch: int, keep: bool = True) -> int:
        """Replace the file by: SNAPSHOT_MARK(first_index, prev_epoch), this log's entries from
        first_index on (none if not `keep`), hard state, commit hint. Durable and atomic (module
        docstring); the caller guarantees a durable snapshot holds the entries before first_index.
        Returns the new file's size."""
        self._usable()
        self.sync()  # nothing buffered may be lost with the old file; every offset is now in the file
        if first_index < self._first_index or (keep and first_index > self._last_index + 1):
            raise InvariantError(f"{self.path}: rewrite from {first_index} outside the log "
                                 f"{self._first_index}..{self._last_index}")
        mark = encode_record(SnapshotMark(first_index, prev_epoch))
        tail, kept = b"", array("q")
        if keep and first_index <= self._last_index:
            start = self._offsets[first_index - self._first_index]
            try:
                tail = os.pread(self._fd, self._written - start, start)  # type: ignore[arg-type]
            except OSError as exc:
                raise self._fail(f"cannot read the WAL to rewrite it: {exc}") from exc
            if len(tail) != self._written - start:
                raise self._fail(f"short read of the WAL tail ({len(tail)} of {self._written - start} bytes)")
            shift = len(mark) - start
            kept = array("q", (o + shift for o in self._offsets[first_index - self._first_index :]))
        last = self._last_index if keep else first_index - 1
        commit = min(max(self._commit, first_index - 1), last)
        data = mark + tail + encode_record(self._hard_state)
        if commit > first_index - 1:
            data += encode_record(Commit(commit))
        self._replace_file(data)
        self._offsets, self._end = kept, len(data)
        self._first_index, self._last_index, self._commit = first_index, last, commit
        return len(data)

    def _replace_file(self, data: bytes) -> None:
        tmp = self.path + REWRITE_SUFFIX
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._fail(f"cannot create {tmp} to rewrite the WAL: {exc}") from exc
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            sync_data(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked before it becomes the WAL
            os.replace(tmp, self.path)
        except OSError as exc:  # the old file is intact, but a failed fsync is never retried: stop
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._fail(f"rewrite failed before its rename: {exc}") from exc
        old, self._fd = self._fd, fd
        os.close(old)  # type: ignore[arg-type]
        try:
            if not bugs.planted(bugs.RENAME_WITHOUT_DIR_FSYNC):  # PLANTED BUG when it is
                sync_dir(os.path.dirname(self.path))
        except OSError as exc:
            raise self._fail(f"fsync of the directory after a rewrite failed: {exc}") from exc
        self._written = self._synced = self._allocated = len(data)

    # -- durability ----------------------------------------------------------------

    def sync(self) -> None:
        """Write everything buffered in one write, then flush it in one fdatasync.

        A buffer holding only commit hints is written without a flush. On return
        every non-hint record buffered so far is durable (`synced_offset`).
        """
        self._usable()
        if bugs.PLANTED and bugs.planted(bugs.WAL_ACK_BEFORE_FSYNC):
            return self._sync_late()
        if self._pending:
            pending = self._pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._write_all(data)
        if self._pending_durable:
            self._pending_durable = False
            try:
                sync_data(self._fd)  # type: ignore[arg-type]
            except OSError as exc:
                raise self._fail(f"fsync failed: {exc}") from exc
            self._synced = self._written

    def _sync_late(self) -> None:
        """PLANTED BUG (bugs.WAL_ACK_BEFORE_FSYNC): write the batch and return before flushing it,
        flushing what was written only once LATE_FLUSH_S passed since the last flush ("fsync every
        so often", as some stores offer): what the caller acknowledges now is not durable yet."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._write_all(data)
        self._pending_durable = False
        now = time.monotonic()
        if self._written > self._synced and now - self._late_flushed >= bugs.LATE_FLUSH_S:
            try:
                sync_data(self._fd)  # type: ignore[arg-type]
            except OSError as exc:
                raise self._fail(f"fsync failed: {exc}") from exc
            self._synced, self._late_flushed = self._written, now

    def _reserve(self, end: int) -> None:
        """Grow the file with zeros to hold `end` bytes, a whole PREALLOC_BYTES at a time.
        Best effort: where the file system cannot (or the disk is full), writes simply
        extend the file, and a full disk fails the write itself."""
        if end <= self._allocated or not self._prealloc:
            return
        size = (end // PREALLOC_BYTES + 1) * PREALLOC_BYTES
        try:
            os.posix_fallocate(self._fd, self._allocated, size - self._allocated)  # type: ignore[arg-type]
        except OSError:
            self._prealloc = False
            return
        self._allocated = size

    def _write_all(self, data: bytes) -> None:
        self._reserve(self._written + len(data))
        view = memoryview(data)
        while view:  # a write may be short (signal, quota, disk filling up): loop
            try:
                n = os.pwrite(self._fd, view, self._written)  # type: ignore[arg-type]
            except OSError as exc:
                raise self._fail(f"write failed after {len(data) - len(view)} of {len(data)} bytes: {exc}") from exc
            if n <= 0:  # no progress and no error: treat as a full disk rather than spin
                raise self._fail(f"write made no progress: {os.strerror(errno.ENOSPC)}")
            self._written += n
            view = view[n:]

    def _fail(self, reason: str) -> StorageError:
        self._failed = reason
        self._pending.clear()
        return StorageError(f"{self.path}: {reason}; the WAL is unusable, stop the node (never retried)")

    def _usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"{self.path}: unusable after an earlier failure ({self._failed}); stop the node")
        if self._fd is None:
            raise InvariantError(f"{self.path}: the WAL is closed")

    @property
    def synced_offset(self) -> int:
        """Bytes of the file known durable."""
        return self._synced

    @property
    def last_index(self) -> int:
        return self._last_index

    @property
    def first_index(self) -> int:
        return self._first_index

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Sync what is buffered (unless the Wal failed), then release the file. Idempotent."""
        if self._fd is None:
            return
        try:
            if self._failed is None and (self._pending or self._written > self._synced):
                self._pending_durable = True  # a clean shutdown keeps the hints too
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Wal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
