"""Framing of write-ahead-log records: bytes in, records out. No file I/O here.

Layout of a WAL file: records back to back, nothing else (no file header), then
zeros: the writer preallocates the file ahead of its writes (zrep.storage.wal), so
its records end where the first all-zero stretch up to the end of the file begins.
Each record is::

    offset 0   4 bytes   body length L, unsigned big-endian, 2 <= L <= MAX_BODY
    offset 4   4 bytes   CRC32 (zlib.crc32) of the body, unsigned big-endian
    offset 8   L bytes   body: a msgpack array [type, field, ...]

Record types and bodies (every integer is an int in [0, 2**63), never a bool):

    1 ENTRY          [1, epoch, index, data]    index >= 1, data is msgpack bin
    2 TRUNCATE       [2, from_index]            drop entries >= from_index (>= 1)
    3 HARD_STATE     [3, epoch, vote]
    4 COMMIT         [4, index]                 a hint; written without its own fsync
    5 SNAPSHOT_MARK  [5, first_index, epoch_of_prev]   the log now starts at
                                                first_index (>= 1); entry
                                                first_index - 1 had epoch_of_prev

Decoding is strict: exact arity, exact Python types after msgpack decoding
(bytes for data, int for integers, bool rejected), the array header must be
the one-byte fixarray msgpack itself writes for that arity, and no trailing
bytes. Anything else raises DecodeError. Because every valid body starts with
one of five two-byte prefixes (fixarray of the arity, then the type), a search
for "is there any valid record after byte N" only has to try the offsets where
such a prefix sits 8 bytes later, which a C-level regex finds quickly even in
megabytes of zeros or garbage.

`Scan` walks a buffer and yields (offset, record); when it stops it tells why:
CLEAN (the buffer ends exactly after a record), TORN (the first bad record is
followed by no valid record anywhere: nothing valid could follow it, so it is
an interrupted write) or CORRUPT (some valid record starts after the bad one:
the bad bytes sit in the middle of the log). See `Scan` for the exact rule.

Must not import anything that does I/O (used by wal.py, log inspect, tests).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Callable

import msgpack

from zrep.core.messages import Entry, HardState, entry_of
from zrep.errors import DecodeError, InvariantError

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
MAX_BODY = 64 * 1024 * 1024  # one record's body; bounds memory on a garbled length
MAX_INT = 2**63 - 1  # fits a signed 64-bit integer everywhere


class RecordType(IntEnum):
    ENTRY = 1
    TRUNCATE = 2
    HARD_STATE = 3
    COMMIT = 4
    SNAPSHOT_MARK = 5


@dataclass(frozen=True, slots=True)
class Truncate:
    """Drop every entry with index >= from_index (a conflict never rewrites the file)."""

    from_index: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The commit index known when written: a hint, never required for safety."""

    index: int


@dataclass(frozen=True, slots=True)
class SnapshotMark:
    """Entries before first_index live in a snapshot; entry first_index - 1 had epoch_of_prev."""

    first_index: int
    epoch_of_prev: int


Record = Entry | Truncate | HardState | Commit | SnapshotMark

# Field kinds: "u" int >= 0, "p" int >= 1, "b" bytes.
_U, _P, _B = "u", "p", "b"


@dataclass(frozen=True, slots=True)
class _Spec:
    code: RecordType
    cls: type
    fields: tuple[tuple[str, str], ...]

    @property
    def prefix(self) -> bytes:
        """The first two body bytes: fixarray(1 + fields) and the positive fixint type."""
        return bytes((0x90 | (1 + len(self.fields)), self.code))


_SPECS: tuple[_Spec, ...] = (
    _Spec(RecordType.ENTRY, Entry, (("epoch", _U), ("index", _P), ("data", _B))),
    _Spec(RecordType.TRUNCATE, Truncate, (("from_index", _P),)),
    _Spec(RecordType.HARD_STATE, HardState, (("epoch", _U), ("vote", _U))),
    _Spec(RecordType.COMMIT, Commit, (("index", _U),)),
    _Spec(RecordType.SNAPSHOT_MARK, SnapshotMark, (("first_index", _P), ("epoch_of_prev", _U))),
)
_BY_CODE: dict[int, _Spec] = {s.code: s for s in _SPECS}
_PREFIX: dict[int, bytes] = {s.code: s.prefix for s in _SPECS}
_BY_CLASS: dict[type, _Spec] = {s.cls: s for s in _SPECS}

# Offsets where a valid body could begin (see the module docstring).
_BODY_PREFIX = re.compile(b"(?=" + b"|".join(re.escape(s.prefix) for s in _SPECS) + b")")


def record_type(record: Record) -> RecordType:
    return _BY_CLASS[type(record)].code


def _field_ok(kind: str, value: object) -> bool:
    if kind == _B:
        return type(value) is bytes
    # `type(...) is int` rejects bool, which is an int subclass.
    return type(value) is int and (1 if kind == _P else 0) <= value <= MAX_INT  # type: ignore[operator]


def _frame(body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise InvariantError(f"WAL record body of {len(body)} bytes exceeds {MAX_BODY}")
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_record(record: Record) -> bytes:
    """Frame one record. Raises InvariantError for a record we could not read back."""
    spec = _BY_CLASS.get(type(record))
    if spec is None:
        raise InvariantError(f"not a WAL record: {record!r}")
    values = [getattr(record, name) for name, _ in spec.fields]
    for (name, kind), value in zip(spec.fields, values):
        if not _field_ok(kind, value):
            raise InvariantError(f"WAL {spec.code.name} field {name}={value!r} is out of range")
    return _frame(msgpack.packb([int(spec.code), *values], use_bin_type=True))


def encode_entry(entry: Entry, pack: Callable[[Any], bytes] | None = None) -> bytes:
    """The hot path of encode_record for ENTRY: same checks, same bytes, less dispatch.
    `pack` may be a reused msgpack Packer's pack (one per thread: Packers are not
    thread-safe), several times cheaper than packb."""
    epoch, index, data = entry.epoch, entry.index, entry.data
    if not (
        type(epoch) is int
        and type(index) is int
        and type(data) is bytes
        and 0 <= epoch <= MAX_INT
        and 1 <= index <= MAX_INT
    ):
        raise InvariantError(f"WAL entry out of range: epoch={epoch!r} index={index!r} data type {type(data).__name__}")
    body = (1, epoch, index, data)
    return _frame(pack(body) if pack is not None else msgpack.packb(body, use_bin_type=True))


def decode_body(body: bytes) -> Record:
    """Strictly decode one record body (see the module docstring) or raise DecodeError."""
    if len(body) < 2:
        raise DecodeError(f"record body of {len(body)} bytes is too short")
    spec = _BY_CODE.get(body[1])
    if spec is None or body[:2] != _PREFIX[spec.code]:
        raise DecodeError(f"record body starts with {body[:2].hex()}, not a known record header")
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack raises a family of ValueError subclasses (ExtraData, FormatError,
        # StackError, UnicodeDecodeError) and OutOfData; all mean "undecodable".
        raise DecodeError(f"undecodable {spec.code.name} body: {type(exc).__name__}") from None
    if spec.cls is Entry:
        entry = _entry(items)
        if entry is not None:
            return entry
    values = items[1:]
    for (name, kind), value in zip(spec.fields, values):
        if not _field_ok(kind, value):
            raise DecodeError(f"{spec.code.name} field {name} is invalid: {type(value).__name__} {value!r:.40}")
    return spec.cls(*values)


def _entry(items: list[Any]) -> Entry | None:
    """The Entry of a decoded ENTRY body (prefix checked) whose fields pass encode_entry's
    checks, else None: the hot path of a replay, inline."""
    _, epoch, index, data = items  # the prefix fixed the arity
    if (type(epoch) is int and type(index) is int and type(data) is bytes
            and 0 <= epoch <= MAX_INT and 1 <= index <= MAX_INT):
        return entry_of((epoch, index, data))
    return None


def read_record(buf: bytes, offset: int) -> tuple[Record, int]:
    """Decode the record at `offset`; return it and the offset just after it.

    Raises DecodeError naming what is wrong (short header, length over the limit,
    short body, CRC mismatch, undecodable body).
    """
    have = len(buf) - offset
    if have < HEADER_SIZE:
        raise DecodeError(f"short header ({have} of {HEADER_SIZE} bytes)")
    length, crc = HEADER.unpack_from(buf, offset)
    if length > MAX_BODY:
        raise DecodeError(f"body length {length} over the {MAX_BODY}-byte limit")
    start = offset + HEADER_SIZE
    end = start + length
    if end > len(buf):
        raise DecodeError(f"short body ({len(buf) - start} of {length} bytes)")
    body = buf[start:end]
    if zlib.crc32(body) != crc:
        raise DecodeError("CRC mismatch")
    return decode_body(body), end


def zeros_from(buf: bytes, offset: int) -> bool:
    """Every byte from `offset` on is zero: the space a WAL preallocates past its last record
    (zrep.storage.wal), or a write a crash cut before any of its bytes landed."""
    return buf.count(0, offset) == len(buf) - offset


def written_tail(buf: bytes, offset: int) -> int:
    """Bytes from `offset` up to the last non-zero byte: what a torn write left before the
    preallocated zeros."""
    if zeros_from(buf, offset):
        return 0
    return len(bytes(buf[offset:]).rstrip(b"\0"))


def find_valid_record(buf: bytes, start: int) -> int | None:
    """The first offset >= start where a whole valid record sits, or None."""
    for match in _BODY_PREFIX.finditer(buf, start + HEADER_SIZE):
        offset = match.start() - HEADER_SIZE
        try:
            read_record(buf, offset)
        except DecodeError:
            continue
        return offset
    return None


class StopKind(Enum):
    CLEAN = "clean"
    TORN = "torn"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class ScanStop:
    """Why a scan stopped.

    `offset`: CLEAN, the end of the buffer; TORN or CORRUPT, the offset of the
    first bad record (everything before it decoded). `reason`: what is wrong
    with that record. `next_valid`: CORRUPT only, where the first valid record
    after the bad one starts.
    """

    kind: StopKind
    offset: int
    reason: str = ""
    next_valid: int | None = None


class Scan:
    """Iterate `for offset, record in Scan(buf)`; afterwards `.stop` says why it ended.

    The rule: the scan stops at the first bad record, at offset B. The bytes
    from B to the end are a torn tail iff no valid record starts at any byte
    offset after B. Every offset is tried, not only where the bad header points,
    because the damaged bytes may be that length field itself. Otherwise
    (something valid follows) it is corruption.

    Why: a crash only damages bytes written after the last fsync, and nothing
    we wrote follows those. Zeros never form a valid record (an empty body does
    not decode), so a zero-filled tail is torn: the space a WAL preallocates
    ahead of its writes ends every scan this way (`zeros_from` tells it apart). Two cases cannot be told apart
    by the bytes alone, and we resolve both towards safety: bit rot in the very
    last record looks torn (it is cut, as an interrupted write would be); a file
    system that persisted a later unsynced page but not an earlier one looks
    corrupt (the node refuses to start rather than guess). Cutting a valid,
    possibly acknowledged, record is never an option.
    """

    def __init__(self, buf: bytes, start: int = 0) -> None:
        self._buf = buf
        self._start = start
        self.stop: ScanStop | None = None

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        buf, offset, size = self._buf, self._start, len(self._buf)
        self.stop = None
        # A whole, valid ENTRY record (nearly every record of a WAL) is read inline,
        # with read_record's and decode_body's checks in the same order; anything
        # else, and every failure, goes through read_record, which names the fault.
        unpack_header, crc32, unpackb = HEADER.unpack_from, zlib.crc32, msgpack.unpackb
        entry_prefix = _PREFIX[RecordType.ENTRY]
        while offset < size:
            if size - offset >= HEADER_SIZE:
                length, crc = unpack_header(buf, offset)
                after = offset + HEADER_SIZE + length
                if length <= MAX_BODY and after <= size:
                    body = buf[offset + HEADER_SIZE : after]
                    if body[:2] == entry_prefix and crc32(body) == crc:
                        try:
                            entry = _entry(unpackb(body, raw=False, use_list=True, strict_map_key=True))
                        except (ValueError, TypeError, msgpack.UnpackException):
                            entry = None
                        if entry is not None:
                            yield offset, entry
                            offset = after
                            continue
            try:
                record, after = read_record(buf, offset)
            except DecodeError as exc:
                self.stop = _classify(buf, offset, str(exc))
                return
            yield offset, record
            offset = after
        self.stop = ScanStop(StopKind.CLEAN, offset)


def _classify(buf: bytes, bad: int, reason: str) -> ScanStop:
    if zeros_from(buf, bad):
        return ScanStop(StopKind.TORN, bad, reason)  # (zeros hold no record: no need to search them)
    following = find_valid_record(buf, bad + 1)
    if following is None:
        return ScanStop(StopKind.TORN, bad, reason)
    return ScanStop(StopKind.CORRUPT, bad, reason, following)
