"""Store snapshots on disk: the state machine at one applied index, in one file.

Job: write and read `store.snap` in a node's data directory, and decide
whether a snapshot read at start-up may stand in for applying the log up to
its index. (Taking one without stalling the node loop is zrep.snapshot_writer.)

A snapshot only shortens a restart: the WAL still holds every entry (no log
compaction yet), so a snapshot that is missing, torn, corrupt, made under other
store limits, or that does not match the log is ignored with a warning and the
store is rebuilt from the log as before. It never holds more than was
committed: a node snapshots its store, and a store applies committed entries
only.

File layout (all integers unsigned big-endian):
  bytes 0..7    b"ZREPSNAP"
  bytes 8..11   length H of the header
  H bytes       msgpack [version, index, epoch, body_length, crc32(body)]
  body          Store.to_bytes() of the store that had applied `index`;
                `epoch` is the epoch of log entry `index` (0 for index 0)
Written under a temporary name, fsynced, renamed over the old file, then the
directory is fsynced: a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack

from zrep.errors import DecodeError
from zrep.store import Store, StoreLimits
from zrep.wal import Replay, sync_data, sync_dir

SNAPSHOT_NAME = "store.snap"
TMP_PREFIX = SNAPSHOT_NAME + ".tmp-"  # + the writer's pid: two writers never share a file
MAGIC = b"ZREPSNAP"
VERSION = 1
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 256


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int  # the last log index the store applied
    epoch: int  # the epoch of that entry
    store: Store


def snapshot_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / SNAPSHOT_NAME


def encode_snapshot(index: int, epoch: int, body: bytes) -> bytes:
    header = msgpack.packb([VERSION, index, epoch, len(body), zlib.crc32(body)])
    return MAGIC + _LENGTH.pack(len(header)) + header + body


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in `data`; DecodeError naming what is wrong."""
    if data[: len(MAGIC)] != MAGIC:
        raise DecodeError("not a zrep snapshot (bad magic)")
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise DecodeError("truncated header")
    (header_len,) = _LENGTH.unpack_from(data, len(MAGIC))
    if header_len > _MAX_HEADER or len(data) < start + header_len:
        raise DecodeError("truncated or oversized header")
    try:
        header = msgpack.unpackb(data[start : start + header_len])
    except (ValueError, TypeError, msgpack.UnpackException):
        raise DecodeError("malformed header") from None
    if not (type(header) is list and len(header) == 5 and all(type(v) is int and v >= 0 for v in header)):
        raise DecodeError("malformed header")
    version, index, epoch, body_len, crc = header
    if version != VERSION:
        raise DecodeError(f"version {version}, this zrep reads version {VERSION}")
    body = data[start + header_len :]
    if len(body) != body_len:
        raise DecodeError(f"body is {len(body)} bytes, the header says {body_len} (torn write?)")
    if zlib.crc32(body) != crc:
        raise DecodeError("checksum mismatch (corrupt)")
    store = Store.from_bytes(body)
    if store.applied_index != index:
        raise DecodeError(f"the store applied {store.applied_index}, the header says {index}")
    return Snapshot(index, epoch, store)


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
    """
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
