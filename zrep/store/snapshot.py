"""The store snapshot format: bytes in, a `Snapshot` out. No file I/O here.

Layout (all integers unsigned big-endian):
  bytes 0..7    b"ZREPSNAP"
  bytes 8..11   length H of the header
  H bytes       msgpack [version, index, epoch, body_length, crc32(body)]
  body          Store.to_bytes() of the store that had applied `index`;
                `epoch` is the epoch of log entry `index` (0 for index 0)
Decoding is strict: a torn, flipped or inconsistent file raises DecodeError
naming what is wrong, never a store that silently differs.

Used by zrep.storage.snapshot_files (files), zrep.service.shipping (transfers) and the
simulator; must not import os, time or zmq.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from zrep.errors import DecodeError
from zrep.store.store import Store

MAGIC = b"ZREPSNAP"
VERSION = 1
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 256


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int  # the last log index the store applied
    epoch: int  # the epoch of that entry
    store: Store


def encode_snapshot(index: int, epoch: int, body: bytes) -> bytes:
    header = msgpack.packb([VERSION, index, epoch, len(body), zlib.crc32(body)])
    return MAGIC + _LENGTH.pack(len(header)) + header + body


def decode_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(index, epoch, body_length, crc32, body offset) from a file's first bytes
    (HEADER_READ_BYTES are always enough); DecodeError if they are not a header."""
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
    return index, epoch, body_len, crc, start + header_len


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in `data`; DecodeError naming what is wrong."""
    index, epoch, body_len, crc, body_at = decode_header(data)
    body = memoryview(data)[body_at:]  # not a copy: a body is the size of the store
    if len(body) != body_len:
        raise DecodeError(f"body is {len(body)} bytes, the header says {body_len} (torn write?)")
    if zlib.crc32(body) != crc:
        raise DecodeError("checksum mismatch (corrupt)")
    store = Store.from_bytes(data, body_at)
    if store.applied_index != index:
        raise DecodeError(f"the store applied {store.applied_index}, the header says {index}")
    return Snapshot(index, epoch, store)




def snapshot_fits(snap: Snapshot, first_index: int, prev_epoch: int, epochs: Sequence[int]) -> bool:
    """Does a log (starting at first_index after prev_epoch, with these entry epochs) hold
    the snapshot's last entry? If not, a start from the snapshot drops the log."""
    if not first_index - 1 <= snap.index <= first_index - 1 + len(epochs):
        return False
    if snap.index == first_index - 1:
        return snap.epoch == prev_epoch
    return epochs[snap.index - first_index] == snap.epoch


HEADER_READ_BYTES = len(MAGIC) + _LENGTH.size + _MAX_HEADER
