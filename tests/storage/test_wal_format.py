"""Record framing: round trips, strict decoding, and the torn/corrupt rule of Scan."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrep.core.messages import Entry, HardState
from zrep.errors import DecodeError, InvariantError
from zrep.storage.wal_format import (
    HEADER_SIZE,
    MAX_BODY,
    MAX_INT,
    Commit,
    Scan,
    ScanStop,
    SnapshotMark,
    StopKind,
    Truncate,
    _classify,
    decode_body,
    encode_entry,
    encode_record,
    find_valid_record,
    read_record,
)

u64 = st.integers(0, MAX_INT)
pos = st.integers(1, MAX_INT)
records = st.one_of(
    st.builds(Entry, u64, pos, st.binary(max_size=300)),
    st.builds(Truncate, pos),
    st.builds(HardState, u64, u64),
    st.builds(Commit, u64),
    st.builds(SnapshotMark, pos, u64),
)


def frame(body: bytes) -> bytes:
    return struct.pack(">II", len(body), zlib.crc32(body)) + body


@given(records)
def test_round_trip(record) -> None:
    framed = encode_record(record)
    assert read_record(framed, 0) == (record, len(framed))


@given(st.builds(Entry, u64, pos, st.binary(max_size=300)))
def test_entry_fast_path_writes_the_same_bytes(entry: Entry) -> None:
    assert encode_entry(entry) == encode_record(entry)


def test_layout_is_length_crc_then_msgpack_array() -> None:
    framed = encode_record(Entry(7, 3, b"hi"))
    body = msgpack.packb([1, 7, 3, b"hi"], use_bin_type=True)
    assert framed == struct.pack(">II", len(body), zlib.crc32(body)) + body


GARBAGE_BODIES = {
    "empty": b"",
    "one byte": b"\x92",
    "unknown type": msgpack.packb([9, 1]),
    "type zero": msgpack.packb([0, 1]),
    "bool for int": msgpack.packb([2, True]),
    "bool epoch": msgpack.packb([1, False, 1, b"x"]),
    "negative": msgpack.packb([4, -1]),
    "zero index": msgpack.packb([1, 1, 0, b"x"]),
    "zero truncate": msgpack.packb([2, 0]),
    "too big": msgpack.packb([4, 2**63]),
    "float": msgpack.packb([4, 1.0]),
    "str data": msgpack.packb([1, 1, 1, "x"], use_bin_type=True),
    "nil data": msgpack.packb([1, 1, 1, None]),
    "map field": msgpack.packb([3, {}, 0]),
    "list field": msgpack.packb([3, [1], 0]),
    "ext field": msgpack.packb([4, msgpack.ExtType(1, b"x")]),
    "arity short": msgpack.packb([1, 1, 1]),
    "arity long": msgpack.packb([4, 1, 2]),
    "trailing bytes": msgpack.packb([4, 1]) + b"\x00",
    "not an array": msgpack.packb({"a": 1}),
    "array16 header": b"\xdc\x00\x02\x04\x01",
    "truncated bin": msgpack.packb([1, 1, 1, b"abcdef"], use_bin_type=True)[:-2],
    "bad utf8 str": b"\x93\x03\xa1\xff\x00",
}


@pytest.mark.parametrize("body", GARBAGE_BODIES.values(), ids=GARBAGE_BODIES.keys())
def test_strict_decoding_rejects(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_body(body)
    # Framed with a correct CRC it is still bad: a torn tail when alone.
    scan = Scan(frame(body))
    assert list(scan) == []
    assert scan.stop.kind is StopKind.TORN


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_decode_error(body: bytes) -> None:
    try:
        record = decode_body(body)
    except DecodeError:
        return
    # Accepted bodies need not be canonical msgpack, but must mean one record.
    assert decode_body(encode_record(record)[HEADER_SIZE:]) == record


@given(st.binary(max_size=200))
def test_scan_of_garbage_stops_cleanly(buf: bytes) -> None:
    scan = Scan(buf)
    for offset, record in scan:
        assert 0 <= offset < len(buf)
    assert scan.stop is not None and scan.stop.offset <= len(buf)


@pytest.mark.parametrize(
    "record",
    [
        Entry(True, 1, b""),
        Entry(1, 0, b""),
        Entry(-1, 1, b""),
        Entry(1, 1, "text"),
        Entry(1, 1, bytearray(b"x")),
        Entry(1, MAX_INT + 1, b""),
        Truncate(0),
        HardState(1, -1),
        Commit(1.0),
        SnapshotMark(0, 0),
    ],
)
def test_encoder_refuses_what_the_decoder_would_reject(record) -> None:
    with pytest.raises(InvariantError):
        encode_record(record)
    if isinstance(record, Entry):
        with pytest.raises(InvariantError):
            encode_entry(record)


def test_encoder_refuses_oversized_body() -> None:
    with pytest.raises(InvariantError):
        encode_entry(Entry(1, 1, bytes(MAX_BODY)))


def test_read_record_reasons() -> None:
    good = encode_record(Commit(5))
    cases = {
        "short header": good[:5],
        "over the": struct.pack(">II", MAX_BODY + 1, 0) + b"x" * 10,
        "short body": good[:-1],
        "CRC mismatch": good[:4] + bytes([good[4] ^ 1]) + good[5:],
    }
    for reason, buf in cases.items():
        with pytest.raises(DecodeError, match=reason):
            read_record(buf, 0)


LOG = [HardState(1, 1), Entry(1, 1, b"a" * 20), Entry(1, 2, b"b" * 20), Commit(2), Entry(1, 3, b"c")]


def log_bytes() -> tuple[bytes, list[int]]:
    frames = [encode_record(r) for r in LOG]
    offsets = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    return b"".join(frames), offsets


def test_scan_clean() -> None:
    buf, offsets = log_bytes()
    scan = Scan(buf)
    assert list(scan) == list(zip(offsets, LOG))
    assert scan.stop.kind is StopKind.CLEAN and scan.stop.offset == len(buf)


@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 7, b"\x00" * 8, b"\x00" * 100_000, b"\xff" * 30])
def test_scan_zeros_or_junk_after_the_end_is_torn(tail: bytes) -> None:
    buf, offsets = log_bytes()
    scan = Scan(buf + tail)
    assert [o for o, _ in scan] == offsets
    assert scan.stop.kind is StopKind.TORN and scan.stop.offset == len(buf)


def test_scan_zero_hole_before_a_valid_record_is_corrupt() -> None:
    buf, offsets = log_bytes()
    holed = buf[: offsets[2]] + bytes(offsets[3] - offsets[2]) + buf[offsets[3] :]
    scan = Scan(holed)
    assert len(list(scan)) == 2
    assert scan.stop.kind is StopKind.CORRUPT
    assert (scan.stop.offset, scan.stop.next_valid) == (offsets[2], offsets[3])


def test_scan_damaged_length_field_in_the_middle_is_corrupt() -> None:
    # A length that points past the end looks like a torn write; the records
    # after it prove otherwise.
    buf, offsets = log_bytes()
    damaged = bytearray(buf)
    damaged[offsets[1]] ^= 0x40
    scan = Scan(bytes(damaged))
    list(scan)
    assert scan.stop.kind is StopKind.CORRUPT and scan.stop.offset == offsets[1]
    assert scan.stop.next_valid == offsets[2]


def test_scan_from_an_offset() -> None:
    buf, offsets = log_bytes()
    assert [o for o, _ in Scan(buf, offsets[3])] == offsets[3:]


def test_find_valid_record_skips_embedded_noise() -> None:
    buf, offsets = log_bytes()
    assert find_valid_record(buf, 1) == offsets[1]
    assert find_valid_record(buf, offsets[1]) == offsets[1]
    assert find_valid_record(buf, offsets[4] + 1) is None
    assert find_valid_record(bytes(1_000_000) + buf, 0) == 1_000_000


def test_one_junk_byte_before_valid_records_is_corrupt() -> None:
    buf, offsets = log_bytes()
    scan = Scan(b"\x00" + buf)
    assert list(scan) == []
    assert (scan.stop.kind, scan.stop.offset, scan.stop.next_valid) == (StopKind.CORRUPT, 0, 1)


def slow_scan(buf: bytes) -> tuple[list[tuple[int, object]], ScanStop]:
    """Scan's rule one record at a time through read_record, without its inline ENTRY path."""
    out, offset = [], 0
    while offset < len(buf):
        try:
            record, after = read_record(buf, offset)
        except DecodeError as exc:
            return out, _classify(buf, offset, str(exc))
        out.append((offset, record))
        offset = after
    return out, ScanStop(StopKind.CLEAN, offset)


def mangle(buf: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(buf)
    for at, byte in edits:
        if b:
            b[at % len(b)] = byte
    return bytes(b[: len(b) - cut % (len(b) + 1)]) if cut else bytes(b)


ENTRY_BODIES = st.sampled_from(list(GARBAGE_BODIES.values()) + [
    msgpack.packb([1, 2**63, 1, b"x"], use_bin_type=True),  # epoch over MAX_INT
    msgpack.packb([1, 1, -1, b"x"], use_bin_type=True),
    msgpack.packb([1, 1, 1, b"x", 1], use_bin_type=True)[:1] + b"\x01\x01\x01\xc4\x01x",  # fixarray(5) header
    b"\x94\x01\x01\x01\xc4\x01x\x00",  # an entry with a trailing byte
    b"\x94\x01\x01\x01\xa1x",  # str data
])


@settings(max_examples=300)
@given(st.lists(st.one_of(records.map(encode_record), ENTRY_BODIES.map(frame)), max_size=8),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3), st.integers(0, 40))
def test_scan_inline_entry_path_matches_read_record(framed: list[bytes], edits, cut: int) -> None:
    """Scan reads whole valid ENTRY records inline (the replay's hot path): records,
    offsets and the stop (kind, offset, reason, next valid) are the same as reading
    every record with read_record, whatever the damage."""
    buf = mangle(b"".join(framed), edits, cut)
    scan = Scan(buf)
    assert (list(scan), scan.stop) == slow_scan(buf)
