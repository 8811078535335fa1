"""Tests for zrep.wire.codec: every message round-trips; every bad frame raises
DecodeError and nothing else; the docstring's kinds table matches the code."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zrep.core.messages import (
    PEER_MESSAGE_TYPES,
    Answer,
    AnswerReason,
    Append,
    Election,
    Entry,
    Forward,
    Heartbeat,
    InstallSnapshot,
    Promise,
    ReadIndexReply,
    Role,
)
from zrep.errors import DecodeError
from zrep.wire import client_messages, codec
from zrep.wire.client_messages import (
    ACK_LEVELS,
    MAX_BATCH_REPLIES,
    MAX_BATCH_REQUESTS,
    MAX_DELETE_OFFSETS,
    MAX_READ_LIMIT,
    OP_ARGS,
    BadRequest,
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    Code,
    Op,
    error_reply,
    not_leader_reply,
    ok_reply,
)
from zrep.wire.codec import (
    FrameTooLarge,
    decode,
    encode,
    pack_reply,
    replies_frames,
    request_id_of,
)

MAX = 2**63 - 1


def raw(kind: int, body: Any, version: int = 1) -> bytes:
    """A frame with any body at all, for feeding the decoder what encode refuses."""
    return bytes((version, kind)) + msgpack.packb(body, use_bin_type=True)


def fields_of(msg: Any) -> list[Any]:
    return [getattr(msg, f.name) for f in dataclasses.fields(msg)]


# ------------------------------------------------------------------ strategies

uints = st.integers(0, MAX)
small = st.integers(0, 1000)
names = st.text(min_size=1, max_size=20)
client_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=32)

_SCALAR = {"int": uints, "bool": st.booleans(), "bytes": st.binary(max_size=50), "tuple[bytes, ...]": st.lists(st.binary(max_size=50), max_size=5).map(tuple)}
_FIELD = {(Heartbeat, "role"): st.sampled_from(Role), (Answer, "reason"): st.sampled_from(AnswerReason)}


@st.composite
def appends(draw: st.DrawFn) -> Append:
    epoch = draw(uints)
    prev_epoch = draw(st.integers(0, epoch))
    n = draw(st.integers(0, 20))
    prev_index = draw(st.integers(0, MAX - n))
    # Sorted epochs between prev_epoch and epoch: a leader's log never goes back in epoch.
    epochs = sorted(draw(st.lists(st.integers(prev_epoch, epoch), min_size=n, max_size=n)))
    entries = tuple(Entry(e, prev_index + 1 + k, draw(st.binary(max_size=30))) for k, e in enumerate(epochs))
    rest = draw(st.tuples(uints, uints, uints, uints))
    return Append(rest[0], rest[1], epoch, prev_index, prev_epoch, entries, rest[2], rest[3])


@st.composite
def install_snapshots(draw: st.DrawFn) -> InstallSnapshot:
    epoch = draw(uints)
    data = draw(st.binary(max_size=50))
    return InstallSnapshot(draw(uints), draw(uints), epoch, draw(uints), draw(st.integers(0, epoch)),
                           draw(st.integers(0, MAX - len(data))), data, draw(st.booleans()))


def peer_messages(cls: type) -> st.SearchStrategy[Any]:
    if cls is Append:
        return appends()
    if cls is InstallSnapshot:
        return install_snapshots()
    return st.builds(cls, **{f.name: _FIELD.get((cls, f.name), _SCALAR.get(f.type)) for f in dataclasses.fields(cls)})


def write_args(**extra: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    seqs = st.integers(1, MAX)
    base = st.fixed_dictionaries({"client": client_ids, "seq": seqs, "ack": st.sampled_from(sorted(ACK_LEVELS)), **extra})
    return st.tuples(base, st.integers(1, MAX)).map(lambda t: {**t[0], "low": min(t[1], t[0]["seq"])})


_READ = st.fixed_dictionaries({"mailbox": names, "after": st.integers(-1, MAX), "limit": st.integers(1, MAX_READ_LIMIT)})
OP_ARG_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    Op.SEND: write_args(sender=st.text(max_size=20), to=names, body=st.binary(max_size=100)),
    # Arrays decode as tuples, so offsets are generated as tuples to compare equal.
    Op.DELETE: write_args(mailbox=names, offsets=st.lists(uints, min_size=1, max_size=10, unique=True).map(tuple)),
    Op.READ: _READ,
    Op.STALE_READ: _READ,
    Op.MAILBOXES: st.fixed_dictionaries({"pattern": names}),
    Op.STATUS: st.just({}),
    Op.ADMIN: st.one_of(
        st.just({"op": "members", "id": 0, "rpc": "", "pub": "", "keys": (), "force": False}),
        st.fixed_dictionaries({"op": st.sampled_from(["promote", "demote", "remove"]), "id": st.integers(1, 2**31 - 1),
                               "rpc": st.just(""), "pub": st.just(""), "keys": st.just(()), "force": st.booleans()}),
        st.fixed_dictionaries({"op": st.just("add"), "id": st.integers(1, 2**31 - 1), "rpc": client_ids, "pub": client_ids,
                               "keys": st.lists(names, max_size=3).map(tuple), "force": st.just(False)}),
    ),
}

requests = st.sampled_from(sorted(OP_ARG_STRATEGIES)).flatmap(
    lambda op: st.builds(ClientRequest, st.integers(1, MAX), st.just(str(op)), OP_ARG_STRATEGIES[op])
)

# Arrays decode as tuples, so results are generated with tuples to compare equal.
result_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), MAX) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
results = st.dictionaries(st.text(max_size=10), result_values, max_size=5)
replies = st.one_of(
    st.builds(ok_reply, uints, results),
    st.builds(error_reply, uints, st.sampled_from([c for c in Code if c not in (Code.OK, Code.NOT_LEADER)]), st.text(max_size=50), results),
    st.builds(not_leader_reply, uints, st.integers(1, MAX), st.text(max_size=40)),
)

batches = st.lists(requests, min_size=1, max_size=5).map(lambda rs: ClientBatch(tuple(rs)))
reply_batches = st.lists(replies, min_size=1, max_size=5).map(lambda rs: ClientReplies(tuple(rs)))
any_message = st.one_of(*[peer_messages(c) for c in PEER_MESSAGE_TYPES], requests, replies, batches, reply_batches)


# ------------------------------------------------------------------ the kinds table


def test_every_peer_message_has_a_kind() -> None:
    assert set(PEER_MESSAGE_TYPES) <= set(codec.KIND_OF)
    assert len(set(codec.KIND_OF.values())) == len(codec.KIND_OF)
    assert all(0 < k < 256 for k in codec.KIND_OF.values())


def test_docstring_table_matches_the_code() -> None:
    doc = codec.__doc__ or ""
    rows = re.findall(r"^\| (\d+)\s+\| (\w+)\s+\| \[([^\]]*)\]", doc, re.M)
    table = {name: (int(k), [f.strip() for f in body.split(",")]) for k, name, body in rows}
    expected = {
        cls.__name__: (kind, [f.name for f in dataclasses.fields(cls)]) for cls, kind in codec.KIND_OF.items()
    }
    assert table == expected


def test_frame_layout_is_version_kind_msgpack() -> None:
    msg = Promise(src=1, dst=2, epoch=7, granted=True)
    payload = encode(msg)
    assert payload[0] == codec.VERSION == 1
    assert payload[1] == codec.KIND_OF[Promise] == 5
    assert msgpack.unpackb(payload[2:]) == [1, 2, 7, True, 0]


def test_entries_are_nested_arrays() -> None:
    msg = Append(1, 2, 3, 0, 0, (Entry(3, 1, b"a"), Entry(3, 2, b"")), 0, 9)
    body = msgpack.unpackb(encode(msg)[2:])
    assert body == [1, 2, 3, 0, 0, [[3, 1, b"a"], [3, 2, b""]], 0, 9]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("cls", PEER_MESSAGE_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_peer_messages_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(peer_messages(cls))
    out = decode(encode(msg))
    assert type(out) is cls and out == msg
    assert [type(v) for v in fields_of(out)] == [type(v) for v in fields_of(msg)]


def test_enum_fields_decode_as_enums() -> None:
    hb = decode(encode(Heartbeat(1, 0, 2, 3, 1, 2, 5, 4)))
    assert hb.role is Role.LEADER
    ans = decode(encode(Answer(1, 2, 3, int(AnswerReason.BETTER), 0)))
    assert ans.reason is AnswerReason.BETTER


def test_bool_fields_stay_bool() -> None:
    out = decode(encode(Election(1, 2, 3, 4, 5, insist=False)))
    assert out.insist is False


@settings(max_examples=200, deadline=None)
@given(requests)
def test_client_requests_round_trip(req: ClientRequest) -> None:
    assert decode(encode(req)) == req


@settings(max_examples=200, deadline=None)
@given(replies)
def test_client_replies_round_trip(rep: ClientReply) -> None:
    assert decode(encode(rep)) == rep


# ------------------------------------------------------------------ header and size


@pytest.mark.parametrize(
    "payload,pattern",
    [
        (b"", "shorter than the 2-byte header"),
        (b"\x01", "shorter than the 2-byte header"),
        (b"\x02\x05\x94\x01\x02\x03\xc3", "unknown wire version 2"),
        (b"\x00\x05\x94\x01\x02\x03\xc3", "unknown wire version 0"),
        (b"\x01\x00\x90", "unknown message kind 0"),
        (b"\x01\x0e\x90", "unknown message kind 14"),
        (b"\x01\xff\x90", "unknown message kind 255"),
        (b"\x01\x05", "malformed msgpack"),  # header only, empty body
    ],
)
def test_header_rejections(payload: bytes, pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        decode(payload)


def test_size_limit_is_checked_before_unpacking() -> None:
    # Garbage body: if the decoder unpacked it first, the error would say "malformed".
    payload = b"\x01\x05" + b"\xc1" * 101
    with pytest.raises(FrameTooLarge, match="101 bytes is over the limit of 100"):
        decode(payload, max_bytes=100)
    with pytest.raises(DecodeError, match="malformed"):
        decode(payload, max_bytes=101)


def test_size_limit_boundary() -> None:
    payload = encode(Forward(1, 2, 3, (b"x" * 1000,)))
    body = len(payload) - 2
    assert decode(payload, max_bytes=body) == Forward(1, 2, 3, (b"x" * 1000,))
    with pytest.raises(FrameTooLarge):
        decode(payload, max_bytes=body - 1)
    assert issubclass(FrameTooLarge, DecodeError)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    msg = Promise(1, 2, 3, False)
    assert decode(bytearray(encode(msg))) == msg
    assert decode(memoryview(encode(msg))) == msg


# ------------------------------------------------------------------ body rejections

PROMISE = 5
APPEND = 6
FORWARD = 8
HEARTBEAT = 1
ANSWER = 3
REQUEST = 64
REPLY = 65

DELETE = {"client": "c", "seq": 2, "low": 1, "ack": "all", "mailbox": "m", "offsets": [0]}

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("trailing bytes", encode(Promise(1, 2, 3, True)) + b"\x00", "malformed msgpack.*ExtraData"),
    ("truncated", encode(Promise(1, 2, 3, True))[:-1], "malformed msgpack"),
    ("reserved byte 0xc1", b"\x01\x05\xc1", "malformed msgpack"),
    ("ext type", b"\x01\x05" + msgpack.packb(msgpack.ExtType(1, b"abcd")), "malformed msgpack"),
    ("empty ext type", b"\x01\x05\xc7\x00\x05", "Promise: expected an array"),
    ("timestamp ext", b"\x01\x05" + msgpack.packb(msgpack.Timestamp(1, 0), datetime=False), "malformed msgpack"),
    ("map body", raw(PROMISE, {"src": 1}), "Promise: expected an array of 5 fields"),
    ("nil body", raw(PROMISE, None), "Promise: expected an array of 5 fields"),
    ("short array", raw(PROMISE, [1, 2, 3]), "Promise: expected an array of 5 fields"),
    ("long array", raw(PROMISE, [1, 2, 3, True, 5, 6]), "Promise: expected an array of 5 fields"),
    ("bool for int", raw(PROMISE, [True, 2, 3, True, 0]), r"Promise\.src: expected an integer"),
    ("int for bool", raw(PROMISE, [1, 2, 3, 1, 0]), r"Promise\.granted: expected a boolean"),
    ("negative int", raw(PROMISE, [1, 2, -3, True, 0]), r"Promise\.epoch: expected an integer in 0"),
    ("int above int64", raw(PROMISE, [1, 2**63, 3, True, 0]), r"Promise\.dst: expected an integer"),
    ("uint64 max", raw(PROMISE, [1, 2**64 - 1, 3, True, 0]), r"Promise\.dst"),
    ("float for int", raw(PROMISE, [1.0, 2, 3, True, 0]), r"Promise\.src"),
    ("str for int", raw(PROMISE, ["1", 2, 3, True, 0]), r"Promise\.src"),
    ("nil for int", raw(PROMISE, [None, 2, 3, True, 0]), r"Promise\.src"),
    ("role out of range", raw(HEARTBEAT, [1, 0, 1, 4, 1, 1, 1, 1, 0]), r"Heartbeat\.role: expected a Role value"),
    ("role as bool", raw(HEARTBEAT, [1, 0, 1, True, 1, 1, 1, 1, 0]), r"Heartbeat\.role"),
    ("reason out of range", raw(ANSWER, [1, 2, 3, 9, 0, 0]), r"Answer\.reason: expected a AnswerReason value"),
    ("commands not array", raw(FORWARD, [1, 2, 3, b"x"]), r"Forward\.commands: expected an array of bytes"),
    ("str command", raw(FORWARD, [1, 2, 3, ["x"]]), r"Forward\.commands: expected bytes"),
    ("entries not array", raw(APPEND, [1, 2, 3, 0, 0, {}, 0, 0]), r"Append\.entries: expected an array"),
    ("entry not array", raw(APPEND, [1, 2, 3, 0, 0, [b"x"], 0, 0]), r"Append\.entries\[0\]: expected \[epoch, index, data\]"),
    ("entry short", raw(APPEND, [1, 2, 3, 0, 0, [[3, 1]], 0, 0]), r"Append\.entries\[0\]: expected \[epoch"),
    ("entry long", raw(APPEND, [1, 2, 3, 0, 0, [[3, 1, b"", 0]], 0, 0]), r"Append\.entries\[0\]: expected \[epoch"),
    ("entry str data", raw(APPEND, [1, 2, 3, 0, 0, [[3, 1, "x"]], 0, 0]), r"Append\.entries\[0\]: expected \[int, int, bytes\]"),
    ("entry bool epoch", raw(APPEND, [1, 2, 3, 0, 0, [[True, 1, b""]], 0, 0]), r"Append\.entries\[0\]: expected \[int"),
    ("entry index gap", raw(APPEND, [1, 2, 3, 5, 1, [[3, 6, b""], [3, 8, b""]], 0, 0]), r"Append\.entries\[1\]\.index: expected 7, got 8"),
    ("entry not after prev", raw(APPEND, [1, 2, 3, 5, 1, [[3, 5, b""]], 0, 0]), r"Append\.entries\[0\]\.index: expected 6"),
    ("entry epoch above", raw(APPEND, [1, 2, 3, 0, 0, [[4, 1, b""]], 0, 0]), r"Append\.entries\[0\]\.epoch: expected 0\.\.3, got 4"),
    ("entry epoch below prev", raw(APPEND, [1, 2, 3, 5, 2, [[1, 6, b""]], 0, 0]), r"Append\.entries\[0\]\.epoch: expected 2\.\.3"),
    ("entry epochs decrease", raw(APPEND, [1, 2, 3, 0, 0, [[3, 1, b""], [2, 2, b""]], 0, 0]), r"Append\.entries\[1\]\.epoch: expected 3\.\.3"),
    ("entry negative epoch", raw(APPEND, [1, 2, 3, 0, 0, [[-1, 1, b""]], 0, 0]), r"Append\.entries\[0\]\.epoch"),
    ("prev_epoch above epoch", raw(APPEND, [1, 2, 3, 0, 4, [], 0, 0]), r"Append\.prev_epoch: 4 is above"),
    ("index past int64", raw(APPEND, [1, 2, 3, MAX, 3, [[3, MAX + 1, b""]], 0, 0]), r"Append\.entries: last index"),
    ("invalid utf-8", b"\x01\x40\x93\x01\xa2\xff\xfe\x80", "malformed msgpack.*UnicodeDecodeError"),
    ("int map key", raw(REQUEST, [1, "status", {1: 2}]), "malformed msgpack"),
    ("bytes map key", raw(REQUEST, [1, "status", {b"k": 2}]), r"ClientRequest: status args: missing \[\], unexpected"),
    ("unknown op", raw(REQUEST, [1, "drop", {}]), r"ClientRequest: op: expected one of"),
    ("bytes op", raw(REQUEST, [1, b"status", {}]), r"ClientRequest: op"),
    ("req_id 0", raw(REQUEST, [0, "status", {}]), r"ClientRequest: req_id"),
    ("args not map", raw(REQUEST, [1, "status", []]), r"ClientRequest: args: expected a map"),
    ("missing arg", raw(REQUEST, [1, "read", {"mailbox": "m", "after": 0}]), r"read args: missing \['limit'\]"),
    ("extra arg", raw(REQUEST, [1, "status", {"verbose": True}]), r"status args: missing \[\], unexpected \['verbose'\]"),
    ("limit 0", raw(REQUEST, [1, "read", {"mailbox": "m", "after": 0, "limit": 0}]), r"read args\.limit"),
    ("limit too big", raw(REQUEST, [1, "read", {"mailbox": "m", "after": 0, "limit": MAX_READ_LIMIT + 1}]), r"read args\.limit"),
    ("empty mailbox", raw(REQUEST, [1, "read", {"mailbox": "", "after": 0, "limit": 1}]), r"read args\.mailbox"),
    ("str body", raw(REQUEST, [1, "send", {"client": "c", "seq": 1, "low": 1, "ack": "all", "sender": "a", "to": "b", "body": "x"}]), r"send args\.body: expected bytes"),
    ("bad ack", raw(REQUEST, [1, "send", {"client": "c", "seq": 1, "low": 1, "ack": "one", "sender": "a", "to": "b", "body": b""}]), r"send args\.ack"),
    ("low above seq", raw(REQUEST, [1, "delete", dict(DELETE, seq=2, low=3)]), r"low \(3\) is above seq \(2\)"),
    ("bool seq", raw(REQUEST, [1, "delete", dict(DELETE, seq=True)]), r"delete args\.seq"),
    ("seq 0", raw(REQUEST, [1, "delete", dict(DELETE, seq=0)]), r"delete args\.seq"),
    ("no offsets", raw(REQUEST, [1, "delete", dict(DELETE, offsets=[])]), r"delete args\.offsets: expected an array of 1\.\."),
    ("negative offset", raw(REQUEST, [1, "delete", dict(DELETE, offsets=[-1])]), r"delete args\.offsets"),
    ("repeated offset", raw(REQUEST, [1, "delete", dict(DELETE, offsets=[3, 3])]), r"delete args\.offsets: offsets must be distinct"),
    ("too many offsets", raw(REQUEST, [1, "delete", dict(DELETE, offsets=list(range(MAX_DELETE_OFFSETS + 1)))]), r"delete args\.offsets"),
    ("offsets as map", raw(REQUEST, [1, "delete", dict(DELETE, offsets={"0": 0})]), r"delete args\.offsets"),
    ("empty client", raw(REQUEST, [1, "delete", dict(DELETE, client="")]), r"delete args\.client"),
    ("long client", raw(REQUEST, [1, "delete", dict(DELETE, client="é" * 65)]), r"delete args\.client: expected 1\.\.128 UTF-8 bytes"),
    ("control in client", raw(REQUEST, [1, "delete", dict(DELETE, client="a\x85b")]), r"delete args\.client"),
    ("after -2", raw(REQUEST, [1, "stale_read", {"mailbox": "m", "after": -2, "limit": 1}]), r"stale_read args\.after"),
    ("mailboxes without pattern", raw(REQUEST, [1, "mailboxes", {}]), r"mailboxes args: missing \['pattern'\]"),
    ("ok contradicts code", raw(REPLY, [1, True, "TIMEOUT", "", {}]), r"ClientReply: ok=True contradicts code TIMEOUT"),
    ("unknown code", raw(REPLY, [1, False, "OOPS", "", {}]), r"ClientReply: expected one of"),
    ("not_leader without leader", raw(REPLY, [1, False, "NOT_LEADER", "", {"rpc": ""}]), r"NOT_LEADER result must have"),
    ("not_leader leader 0", raw(REPLY, [1, False, "NOT_LEADER", "", {"leader": 0, "rpc": ""}]), r"ClientReply: expected an integer in 1"),
    ("float in result", raw(REPLY, [1, True, "OK", "", {"x": 1.5}]), r"ClientReply: float is not allowed"),
    ("result too deep", raw(REPLY, [1, True, "OK", "", {"x": [[[[[[[[[1]]]]]]]]]}]), r"ClientReply: nested deeper than 8"),
    ("huge map", raw(REPLY, [1, True, "OK", "", {str(i): i for i in range(1025)}]), "malformed msgpack"),
    ("huge nested map", raw(REPLY, [1, True, "OK", "", {"m": {str(i): i for i in range(1025)}}]), "malformed msgpack"),
    ("very deep nesting", b"\x01\x41" + b"\x91" * 100_000 + b"\x01", "malformed msgpack"),
]


@pytest.mark.parametrize("payload,pattern", [(p, m) for _, p, m in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES])
def test_body_rejections(payload: bytes, pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern) as e:
        decode(payload)
    assert "\n" not in str(e.value)


def test_bad_bodies_table_mutates_valid_messages() -> None:
    # Guards the table: these near-misses of bad rows are accepted, so each row fails for its stated reason.
    assert decode(raw(APPEND, [1, 2, 3, 5, 2, [[2, 6, b""], [3, 7, b""]], 0, 0])).entries[1].index == 7
    assert decode(raw(APPEND, [1, 2, 3, MAX - 1, 3, [[3, MAX, b""]], 0, 0])).entries[0].index == MAX
    assert decode(raw(HEARTBEAT, [1, 0, 1, 3, 1, 1, 1, 1, 0])).role is Role.LEADER
    assert decode(raw(REPLY, [1, False, "NOT_LEADER", "", {"leader": 2, "rpc": ""}])).result["leader"] == 2
    assert decode(raw(REPLY, [1, True, "OK", "", {"x": [[[[[[[1]]]]]]]}])).ok
    assert decode(raw(REPLY, [1, True, "OK", "", {str(i): i for i in range(1024)}])).ok
    assert decode(raw(REQUEST, [1, "read", {"mailbox": "m", "after": -1, "limit": MAX_READ_LIMIT}])).args["limit"] == MAX_READ_LIMIT
    assert decode(raw(REQUEST, [1, "delete", DELETE])).args["offsets"] == (0,)
    assert decode(raw(REQUEST, [1, "delete", dict(DELETE, client="é" * 64, offsets=list(range(MAX_DELETE_OFFSETS)))])).args["client"] == "é" * 64


# ------------------------------------------------------------------ fuzzing


def _decode_or_error(payload: bytes) -> None:
    try:
        out = decode(payload)
    except DecodeError:
        return
    # Whatever decodes is a real message that encodes back to the same bytes' meaning.
    assert type(out) in codec.KIND_OF
    if type(out) is ClientBatch and any(type(r) is BadRequest for r in out.requests):
        with pytest.raises(ValueError):  # a refused item is answered, never sent on
            encode(out)
        return
    assert decode(encode(out)) == out


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(payload: bytes) -> None:
    _decode_or_error(payload)


@FUZZ
@given(st.sampled_from(sorted(codec.KIND_OF.values())), st.binary(max_size=200))
def test_fuzz_valid_header_random_body(kind: int, body: bytes) -> None:
    _decode_or_error(bytes((1, kind)) + body)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), inner, max_size=4),
    max_leaves=30,
)


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(sorted(codec.KIND_OF.values())), msgpack_values)
def test_fuzz_valid_header_random_msgpack(kind: int, body: Any) -> None:
    try:
        packed = msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError):
        return  # ints beyond 64 bits cannot be packed at all
    _decode_or_error(bytes((1, kind)) + packed)


@FUZZ
@given(any_message, st.data())
def test_fuzz_mutated_valid_frames(msg: Any, data: st.DataObject) -> None:
    payload = bytearray(encode(msg))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    at = data.draw(st.integers(0, len(payload) - 1))
    if action == "flip":
        payload[at] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del payload[at:]
    elif action == "insert":
        payload.insert(at, data.draw(st.integers(0, 255)))
    else:
        del payload[at]
    _decode_or_error(bytes(payload))


# ------------------------------------------------------------------ encode refuses what decode would refuse


@pytest.mark.parametrize(
    "msg,pattern",
    [
        (Promise(-1, 2, 3, True), r"Promise\.src"),
        (Promise(1, 2, 3, 1), r"Promise\.granted: expected a boolean"),  # type: ignore[arg-type]
        (Promise(True, 2, 3, True), r"Promise\.src"),  # type: ignore[arg-type]
        (Promise(1, 2, 2**63, True), r"Promise\.epoch"),
        (Heartbeat(1, 0, 1, 7, 1, 1, 1, 1), r"Heartbeat\.role"),
        (Forward(1, 2, 3, [b"x"]), r"Forward\.commands"),  # type: ignore[arg-type]
        (Forward(1, 2, 3, ("x",)), r"Forward\.commands"),  # type: ignore[arg-type]
        (Append(1, 2, 3, 0, 0, (Entry(3, 2, b""),), 0, 0), r"Append\.entries\[0\]\.index: expected 1"),
        (Append(1, 2, 3, 0, 0, (Entry(4, 1, b""),), 0, 0), r"Append\.entries\[0\]\.epoch"),
        (Append(1, 2, 3, 0, 0, (Entry(3, 1, "text"),), 0, 0), r"expected \[int, int, bytes\]"),  # type: ignore[arg-type]
        (ReadIndexReply(1, 2, 3, 4, True, -1), r"ReadIndexReply\.index"),
    ],
)
def test_encode_refuses_invalid_messages(msg: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        encode(msg)


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError, match="Entry is not a wire message"):
        encode(Entry(1, 1, b""))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode({"src": 1})  # type: ignore[arg-type]


def test_encode_enforces_the_size_limit() -> None:
    msg = Forward(1, 2, 3, (b"x" * 200,))
    encode(msg, max_bytes=300)
    with pytest.raises(ValueError, match="over the limit of 100"):
        encode(msg, max_bytes=100)


def test_encode_catches_a_request_mutated_after_construction() -> None:
    req = ClientRequest(1, "status", {})
    req.args["sneaky"] = 1
    with pytest.raises(ValueError, match="unexpected"):
        encode(req)


def test_replies_refuse_maps_the_decoder_would_refuse() -> None:
    with pytest.raises(ValueError, match="use an array"):
        ok_reply(1, {"boxes": {str(i): i for i in range(1025)}})


def test_encode_refuses_unencodable_strings() -> None:
    rep = error_reply(1, Code.TIMEOUT, "\ud800")
    with pytest.raises(ValueError, match="cannot encode ClientReply"):
        encode(rep)


# ------------------------------------------------------------------ client message construction


def test_every_op_has_a_schema_and_a_documented_row() -> None:
    assert set(OP_ARGS) == set(Op)
    doc = client_messages.__doc__ or ""
    for op, schema in OP_ARGS.items():
        row = re.search(rf"^\| {op}\s+\|(.*)$", doc, re.M)
        assert row, f"op {op} missing from the docstring table"
        assert all(key in doc for key in schema), f"an arg of {op} is not documented"


def test_client_messages_validate_on_construction() -> None:
    with pytest.raises(ValueError, match="op"):
        ClientRequest(1, "nope", {})
    with pytest.raises(ValueError, match="req_id"):
        ClientRequest(0, "status", {})
    with pytest.raises(ValueError, match="contradicts"):
        ClientReply(1, False, "OK", "", {})
    assert not_leader_reply(5, 2, "tcp://127.0.0.1:7102").result == {"leader": 2, "rpc": "tcp://127.0.0.1:7102"}
    assert ClientRequest(1, Op.STATUS, {}).op == "status"


# ------------------------------------------------------------------ request_id_of


def test_request_id_of_salvages_the_id_of_a_bad_request() -> None:
    assert request_id_of(raw(REQUEST, [42, "drop", {}])) == 42
    assert request_id_of(encode(ClientRequest(7, "status", {}))) == 7
    assert request_id_of(raw(REQUEST, [True, "status", {}])) == 0
    assert request_id_of(raw(REQUEST, [])) == 0
    assert request_id_of(raw(REPLY, [42, True, "OK", "", {}])) == 0
    assert request_id_of(b"\x01\x40\xc1") == 0
    assert request_id_of(b"") == 0
    assert request_id_of(raw(REQUEST, [42, "x", {}]), max_bytes=3) == 0


# ------------------------------------------------------------------ speed (printed, never asserted)


def test_append_decode_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    entries = tuple(Entry(5, 1001 + i, b"m" * 100) for i in range(1000))
    msg = Append(1, 2, 5, 1000, 4, entries, 900, 3)
    payload = encode(msg)
    rounds = 20
    t0 = time.perf_counter()
    for _ in range(rounds):
        out = decode(payload)
    t1 = time.perf_counter()
    for _ in range(rounds):
        encode(msg)
    t2 = time.perf_counter()
    assert out == msg
    with capsys.disabled():
        print(
            f"\n[codec] Append of 1000 x 100 B entries ({len(payload)} B): "
            f"decode {(t1 - t0) / rounds * 1e3:.2f} ms, encode {(t2 - t1) / rounds * 1e3:.2f} ms"
        )


# ------------------------------------------------------------------ batches

BATCH = 66
REPLIES = 67
STATUS = [1, "status", {}]


@settings(max_examples=100, deadline=None)
@given(batches)
def test_client_batches_round_trip(batch: ClientBatch) -> None:
    assert decode(encode(batch)) == batch


@settings(max_examples=100, deadline=None)
@given(reply_batches)
def test_client_replies_round_trip_and_piecewise_frames_are_the_same_bytes(rs: ClientReplies) -> None:
    frame = encode(rs)
    assert decode(frame) == rs
    assert replies_frames([pack_reply(r) for r in rs.replies]) == [(frame, len(rs.replies))]


def test_one_bad_request_in_a_batch_is_refused_alone_with_its_id() -> None:
    out = decode(raw(BATCH, [[STATUS, [2, "drop", {}], "junk", [0, "status", {}], [3, "read", {"mailbox": "m"}],
                              [4, "read", {"mailbox": "m", "after": -1, "limit": 1}]]]))
    assert isinstance(out, ClientBatch)
    kinds = [(type(r).__name__, r.req_id) for r in out.requests]
    assert kinds == [("ClientRequest", 1), ("BadRequest", 2), ("BadRequest", 0), ("BadRequest", 0),
                     ("BadRequest", 3), ("ClientRequest", 4)]
    assert "ClientBatch.requests[1]: op: expected one of" in out.requests[1].message
    assert "ClientBatch.requests[2]: expected [req_id, op, args]" in out.requests[2].message
    assert "read args: missing ['after', 'limit']" in out.requests[4].message


@pytest.mark.parametrize(
    "payload,pattern",
    [
        (raw(BATCH, [[]]), r"ClientBatch\.requests: expected an array of 1\.\.1024 items"),
        (raw(BATCH, [[STATUS] * (MAX_BATCH_REQUESTS + 1)]), r"expected an array of 1\.\.1024 items"),
        (raw(BATCH, ["status"]), r"ClientBatch\.requests: expected an array"),
        (raw(BATCH, [[STATUS], 1]), r"ClientBatch: expected an array of 1 fields"),
        (raw(BATCH, {"requests": [STATUS]}), r"ClientBatch: expected an array of 1 fields"),
        (raw(REPLIES, [[]]), r"ClientReplies\.replies: expected an array of 1\.\.1024"),
        (raw(REPLIES, [[[1, True, "OK", "", {}], [2, True, "TIMEOUT", "", {}]]]), r"replies\[1\]: ok=True contradicts"),
        (raw(REPLIES, [[[1, True, "OK", ""]]]), r"replies\[0\]: expected \[req_id, ok, code, message, result\]"),
    ],
)
def test_malformed_batches_fail_as_a_whole(payload: bytes, pattern: str) -> None:
    with pytest.raises(DecodeError, match=pattern):
        decode(payload)


def test_a_full_batch_decodes_and_an_oversized_one_is_too_large() -> None:
    full = ClientBatch(tuple(ClientRequest(i, "status", {}) for i in range(1, MAX_BATCH_REQUESTS + 1)))
    payload = encode(full)
    assert decode(payload) == full
    with pytest.raises(FrameTooLarge):
        decode(payload, max_bytes=len(payload) - 3)
    with pytest.raises(ValueError, match="over the limit"):
        encode(full, max_bytes=100)


def test_batches_validate_on_construction_and_encode() -> None:
    with pytest.raises(ValueError, match="1..1024"):
        ClientBatch(())
    with pytest.raises(ValueError, match="1..1024"):
        ClientBatch(tuple(ClientRequest(1, "status", {}) for _ in range(MAX_BATCH_REQUESTS + 1)))
    with pytest.raises(ValueError, match="ClientRequest items"):
        ClientBatch((ok_reply(1),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ClientReply items"):
        ClientReplies((ClientRequest(1, "status", {}),))  # type: ignore[arg-type]
    req = ClientRequest(1, "status", {})
    batch = ClientBatch((req,))
    req.args["sneaky"] = 1
    with pytest.raises(ValueError, match="cannot encode ClientBatch.*unexpected"):
        encode(batch)


def test_replies_frames_split_by_count_and_size_in_order() -> None:
    packed = [pack_reply(ok_reply(i, {"b": b"x" * 100})) for i in range(1, 2501)]
    by_count = replies_frames(packed)
    assert [n for _, n in by_count] == [MAX_BATCH_REPLIES, MAX_BATCH_REPLIES, 2500 - 2 * MAX_BATCH_REPLIES]
    limit = 10_000
    by_size = replies_frames(packed, limit)
    assert all(len(frame) - 2 <= limit for frame, _ in by_size)
    ids = [r.req_id for frame, _ in by_size for r in decode(frame, limit).replies]
    assert ids == list(range(1, 2501))
    assert replies_frames([]) == []
    with pytest.raises(ValueError, match="over the limit"):
        pack_reply(ok_reply(1, {"b": b"x" * 200}), max_bytes=100)
    with pytest.raises(ValueError, match="cannot encode ClientReply"):
        pack_reply(error_reply(1, Code.TIMEOUT, "\ud800"))


def test_pack_same_requests_is_the_frame_encode_makes_of_the_batch() -> None:
    args = {"mailbox": "bench", "after": -1, "limit": 1}
    for first, n in ((1, 1), (5, 15), (7, 16), (100_000, MAX_BATCH_REQUESTS), (2**40, 300)):
        batch = ClientBatch(tuple(ClientRequest(i, "stale_read", args) for i in range(first, first + n)))
        assert codec.pack_same_requests(first, n, "stale_read", args) == encode(batch)
    with pytest.raises(ValueError, match="limit is 1..1024"):
        codec.pack_same_requests(1, MAX_BATCH_REQUESTS + 1, "read", args)
    with pytest.raises(ValueError, match="req_id"):
        codec.pack_same_requests(2**63 - 2, 5, "read", args)  # the last id is out of range
    with pytest.raises(ValueError):
        codec.pack_same_requests(1, 2, "read", {"mailbox": "bench"})  # the args are checked
    with pytest.raises(ValueError, match="over the limit"):
        codec.pack_same_requests(1, 100, "read", args, max_bytes=1000)


def test_reply_outcomes_reads_ids_and_codes_and_refuses_what_is_not_a_reply() -> None:
    replies = [ok_reply(3, {"messages": []}), error_reply(4, Code.TIMEOUT, "late"),
               error_reply(5, Code.BAD_REQUEST, "no", {"reason": "BAD_MAILBOX"})]
    frame, _ = replies_frames([pack_reply(r) for r in replies])[0]
    assert codec.reply_outcomes(frame) == [(3, True, "OK"), (4, False, "TIMEOUT"), (5, False, "BAD_MAILBOX")]
    assert codec.reply_outcomes(encode(replies[1])) == [(4, False, "TIMEOUT")]
    bad = [b"", b"\x02\x41\x90", encode(ClientRequest(1, "status", {})),
           bytes((codec.VERSION, codec.KIND_OF[ClientReplies])) + msgpack.packb([[[1, "yes", "OK", "", {}]]]),
           bytes((codec.VERSION, codec.KIND_OF[ClientReplies])) + msgpack.packb([[[1, True]]]),
           bytes((codec.VERSION, codec.KIND_OF[ClientReply])) + b"\xc1"]
    for payload in bad:
        with pytest.raises(DecodeError):
            codec.reply_outcomes(payload)


# ---------------------------------------------------------------- expansion bombs


def _bomb(kind_code: int, items: int, nested: bool = False) -> bytes:
    """msgpack written by hand (packing a 16-million-item list would itself cost the test 128 MiB)."""
    if nested:  # many arrays of 255 nils: each under any per-array cap, all together huge
        inner = b"\xdc\x00\xff" + b"\xc0" * 255
        body = b"\xdd" + (items // 255).to_bytes(4, "big") + inner * (items // 255)
    else:
        body = b"\xdd" + items.to_bytes(4, "big") + b"\xc0" * items
    return bytes((codec.VERSION, kind_code)) + body


@pytest.mark.parametrize("kind", [ClientBatch, ClientRequest, Append, Forward])
@pytest.mark.parametrize("nested", [False, True])
def test_a_frame_of_nils_is_refused_before_it_is_expanded(kind, nested):
    import time
    import tracemalloc

    frame = _bomb(codec.KIND_OF[kind], 16_000_000, nested)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="items|malformed"):
        codec.decode(frame)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Unbounded, this is a 16-million-item tuple: +259 MiB and about 265 ms measured here.
    assert peak < 24 << 20, f"peak {peak >> 20} MiB"
    assert elapsed < 5.0  # generous: a bare decode of the refused prefix takes milliseconds


def test_legitimate_large_frames_still_decode():
    big_batch = ClientBatch(tuple(
        ClientRequest(i + 1, Op.DELETE, {"mailbox": "box", "client": "c", "seq": i + 1, "low": 1, "ack": "majority",
                                         "offsets": tuple(range(10_000)) if i < 3 else (i,)})
        for i in range(1024)))
    assert codec.decode(codec.encode(big_batch)) == big_batch
    entries = tuple(Entry(1, i, b"x" * 200) for i in range(1, 513))
    append = Append(1, 2, 1, 0, 0, entries, 0, 1)
    assert codec.decode(codec.encode(append)) == append


# ------------------------------------------------------------------ admin args


def _admin(**kw: Any) -> dict[str, Any]:
    return {"op": "members", "id": 0, "rpc": "", "pub": "", "keys": [], "force": False, **kw}


@pytest.mark.parametrize("args, pattern", [
    (_admin(id=3), "members: id must be 0"),
    (_admin(op="remove"), "remove: id must be a node id"),
    (_admin(op="add", id=4, rpc="tcp://127.0.0.1:1"), "add: rpc and pub addresses are required"),
    (_admin(op="update", id=4, pub="tcp://127.0.0.1:1"), "update: rpc and pub addresses are required"),
    (_admin(op="remove", id=4, rpc="tcp://127.0.0.1:1"), "remove: takes no rpc"),
    (_admin(op="promote", id=4, keys=["k"]), "promote: takes no keys"),
    (_admin(op="add", id=4, rpc="a", pub="b", force=True), "add: takes no force"),
    (_admin(op="members", force=True), "members: takes no force"),
    (_admin(op="drop", id=4), "args.op: expected one of"),
    (_admin(op="remove", id=True), "args.id: expected an integer"),
    (_admin(op="remove", id=2**31), "args.id: expected an integer"),
    (_admin(op="remove", id=2, force=1), "args.force: expected a boolean"),
    (_admin(op="add", id=2, rpc="a", pub="b", keys=["k"] * 9), "args.keys: expected an array of at most 8"),
    (_admin(op="add", id=2, rpc="a", pub="b", keys=[""]), "args.keys: expected a key"),
    (_admin(op="add", id=2, rpc="a\n", pub="b"), "args.rpc: expected an address"),
    ({k: v for k, v in _admin().items() if k != "force"}, "missing \\['force'\\]"),
])
def test_admin_args_are_checked_op_by_op(args: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ClientRequest(1, Op.ADMIN, args)


def test_admin_requests_from_the_wire_are_checked_as_on_construction() -> None:
    good = ClientRequest(7, Op.ADMIN, _admin(op="add", id=4, rpc="tcp://127.0.0.1:7104", pub="tcp://127.0.0.1:7204",
                                             keys=["k" * 40]))
    decoded = codec.decode(codec.encode(good, 1 << 20), 1 << 20)
    assert decoded == ClientRequest(7, Op.ADMIN, {**good.args, "keys": ("k" * 40,)})
    body = [7, "admin", _admin(op="remove", id=4, rpc="tcp://x")]
    frame = codec.encode(good, 1 << 20)
    forged = frame[:2] + msgpack.packb(body)  # same version and kind, a body the schema refuses
    with pytest.raises(DecodeError, match="remove: takes no rpc"):
        codec.decode(forged, 1 << 20)
