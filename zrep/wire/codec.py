"""The wire codec: every message is ONE ZeroMQ frame, decoded strictly.

Frame layout (the payload of one zmq frame; ROUTER routing ids are the
transport's business, not part of the payload):

    byte 0     VERSION (1)
    byte 1     KIND (table below)
    bytes 2..  msgpack body: an array of the message's fields in dataclass order

Why one frame and a fixed 2-byte header: a ROUTER socket sees exactly
[routing id, payload], and the version, kind and size are judged before
msgpack reads a single byte of the body.

| kind | message          | body                                                                      |
|------|------------------|---------------------------------------------------------------------------|
| 1    | Heartbeat        | [src, dst, epoch, role, leader, last_epoch, last_index, commit, inc]      |
| 2    | Election         | [src, dst, epoch, last_epoch, last_index, insist, inc, handover]          |
| 3    | Answer           | [src, dst, epoch, reason, leader, inc]                                    |
| 4    | Coordinator      | [src, dst, epoch, last_epoch, last_index, inc, handover]                  |
| 5    | Promise          | [src, dst, epoch, granted, inc]                                           |
| 6    | Append           | [src, dst, epoch, prev_index, prev_epoch, entries, commit, round]         |
| 7    | AppendAck        | [src, dst, epoch, success, match, round, rejected, inc]                   |
| 8    | Forward          | [src, dst, epoch, commands]                                               |
| 9    | ReadIndexRequest | [src, dst, epoch, ctx]                                                    |
| 10   | ReadIndexReply   | [src, dst, epoch, ctx, ok, index]                                         |
| 11   | InstallSnapshot  | [src, dst, epoch, index, index_epoch, offset, data, done]                 |
| 12   | InstallSnapshotAck | [src, dst, epoch, index, offset, done, inc]                             |
| 13   | TimeoutNow       | [src, dst, epoch]                                                         |
| 64   | ClientRequest    | [req_id, op, args]                                                        |
| 65   | ClientReply      | [req_id, ok, code, message, result]                                       |
| 66   | ClientBatch      | [requests]: 1..1024 arrays [req_id, op, args], each as a ClientRequest    |
| 67   | ClientReplies    | [replies]: 1..1024 arrays [req_id, ok, code, message, result]             |

Kinds 14-63 are free for new peer messages, 68-127 for client messages.
A test checks this table against the dataclasses, so it cannot drift.

Field types. Peer ints (ids, epochs, indexes, ctx, round) are msgpack ints in
0..2**63-1; `insist`, `granted`, `success`, `ok` are msgpack booleans (never
0/1); `commands` is an array of bin; InstallSnapshot's `data` is bin,
and its `index_epoch` may not exceed its `epoch`, nor `offset + len(data)`
2**63-1 (a chunk's size is bounded by the frame limit like any body). The
snapshot's own checksum is judged by the follower once the last chunk is in. `Heartbeat.role` must be a `Role` value
and `Answer.reason` an `AnswerReason` value; they decode as those enums.
`entries` is an array of [epoch, index, data] (data: bin) that must be a
contiguous run: entry k has index prev_index + 1 + k, and epochs never
decrease from prev_epoch and never exceed the Append's epoch (a leader's log
is sorted by epoch and holds nothing from a later epoch). Client frames are
checked by zrep.wire.client_messages (see its table of op args). A ClientBatch
item that fails its checks decodes as a `BadRequest` (its req_id when
readable, else 0) and the others as ClientRequests: one bad request does not
cost its neighbours; a batch that is not an array of 1..1024 items fails as a
whole. A ClientReplies frame fails as a whole on any bad reply (only nodes
send them). `pack_reply` and `replies_frames` build ClientReplies frames from
replies packed one by one, so a node can split them under the frame limit. Arrays decode as
tuples, maps as dicts with str keys; strings are UTF-8 (msgpack str), byte
strings msgpack bin: the two are never confused.

Errors. `decode` raises `DecodeError` (its subclass `FrameTooLarge` for the
size limit) and nothing else, for: a payload shorter than the header, an
unknown version or kind, a body over `max_bytes` (checked before unpacking),
malformed msgpack, trailing bytes, ext types, a wrong arity or field type, a
broken entry run, or a frame that expands into more items than its kind may
(MAX_REQUEST_ITEMS for a client's request frames, a sixteenth of the byte
limit for peer frames: counted while unpacking, so a hostile frame is stopped
before it is expanded). The node drops such a peer frame and counts it; a client
gets BAD_REQUEST or TOO_LARGE. `encode` raises TypeError for an object that is
not a wire message and ValueError for a message that would not decode (a bug
in the caller: we never send what a peer must refuse).

Must not import zmq, os or time: bytes in, messages out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Callable

import msgpack

from zrep.core.messages import (
    Answer,
    Append,
    AppendAck,
    Coordinator,
    Election,
    Forward,
    Heartbeat,
    InstallSnapshot,
    InstallSnapshotAck,
    TimeoutNow,
    Message,
    Promise,
    ReadIndexReply,
    ReadIndexRequest,
    entry_of,
)
from zrep.errors import DecodeError
from zrep.wire.client_messages import (
    MAX_BATCH_REPLIES,
    MAX_BATCH_REQUESTS,
    MAX_MAP_KEYS,
    MAX_TEXT_CHARS,
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    check_reply,
    check_request,
)
from zrep.wire.fields import (
    CHECK_BY_FIELD,
    CHECK_BY_TYPE,
    ENTRIES,
    Check,
    batch_fields,
    batch_rule,
    check_chunk,
    check_run,
    client_rule,
    no_rule,
    replies_fields,
    replies_rule,
    show,
    trusted,
)

VERSION = 1
HEADER_BYTES = 2
MAX_FRAME_BYTES = 16 << 20  # default body limit; a node passes its config's max_frame_bytes
MAX_UINT = 2**63 - 1
MAX_STR_BYTES = 4 * MAX_TEXT_CHARS  # UTF-8 needs at most 4 bytes per character
# Item budgets (arrays' items and maps' entries, counted over the whole frame as it is unpacked):
# a client's request frame never needs more than MAX_REQUEST_ITEMS (a full batch of 1,024
# requests and a few deletes of 10,000 offsets); a peer frame's items each take several bytes
# (an entry is [epoch, index, data], a forwarded command a whole encoded command).
MAX_REQUEST_ITEMS = 65_536
PEER_BYTES_PER_ITEM = 16
# Frames up to this body size are not counted: every frame of normal traffic is under it (an
# Append batch is at most 1 MiB, a full ClientBatch ~170 KB), and one expands into at most about a
# million items (~8 MiB), decoded and dropped one at a time. The count costs ~20% of a big decode.
FREE_EXPANSION_BYTES = 1 << 20

Frame = Message | ClientRequest | ClientReply | ClientBatch | ClientReplies


class FrameTooLarge(DecodeError):
    """The body is over the size limit: answer TOO_LARGE rather than BAD_REQUEST."""


# ---------------------------------------------------------------- the kinds table


@dataclass(frozen=True, slots=True)
class _Kind:
    code: int
    cls: type
    header: bytes
    names: tuple[str, ...]
    checks: tuple[Check, ...]
    fields_of: Callable[[Any], tuple[Any, ...]]  # message -> body values
    rule: Callable[[list[Any]], None]  # checks across fields; raises DecodeError
    build: Callable[[list[Any]], Any]  # checked values -> message
    checked_at_construction: bool = False  # its __post_init__ validates: encode need not check again


_append_fields_of = attrgetter(*(f.name for f in fields(Append)))


def append_fields(m: Append) -> tuple[Any, ...]:
    return _append_fields_of(m)  # an Entry is a NamedTuple (epoch, index, data): packed as is


def build_append(values: list[Any]) -> Append:
    values[ENTRIES] = tuple(map(entry_of, values[ENTRIES]))  # check_run: tuples of three
    return Append(*values)


def _kind(code: int, cls: type, checks: tuple[Check, ...] | None = None, **custom: Any) -> _Kind:
    names = tuple(f.name for f in fields(cls))
    if checks is None:
        try:
            checks = tuple(CHECK_BY_FIELD.get((cls, f.name)) or CHECK_BY_TYPE[f.type] for f in fields(cls))
        except KeyError as e:  # a new field type in messages.py needs a check here first
            raise TypeError(f"codec: no wire check for {cls.__name__} field type {e}") from None
    return _Kind(
        code=code,
        cls=cls,
        header=bytes((VERSION, code)),
        names=names,
        checks=checks,
        fields_of=custom.get("fields_of", attrgetter(*names)),
        rule=custom.get("rule", no_rule),
        build=custom.get("build", lambda values: cls(*values)),
        checked_at_construction=custom.get("checked_at_construction", False),
    )


KINDS: tuple[_Kind, ...] = (
    _kind(1, Heartbeat),
    _kind(2, Election),
    _kind(3, Answer),
    _kind(4, Coordinator),
    _kind(5, Promise),
    _kind(6, Append, fields_of=append_fields, rule=check_run, build=build_append),
    _kind(7, AppendAck),
    _kind(8, Forward),
    _kind(9, ReadIndexRequest),
    _kind(10, ReadIndexReply),
    _kind(11, InstallSnapshot, rule=check_chunk),
    _kind(12, InstallSnapshotAck),
    _kind(13, TimeoutNow),
    # A request is checked again on encode: a client's args dict mutated after
    # construction is caught at home. A reply is made and encoded at once by the
    # node (the hot path), so its construction check is enough.
    _kind(64, ClientRequest, (), rule=client_rule("ClientRequest", check_request),
          build=trusted(ClientRequest)),
    _kind(65, ClientReply, (), rule=client_rule("ClientReply", check_reply),
          build=trusted(ClientReply), checked_at_construction=True),
    # Batches: their rules check (and build) every item; encode checks through fields_of.
    _kind(66, ClientBatch, (), rule=batch_rule, fields_of=batch_fields, build=trusted(ClientBatch),
          checked_at_construction=True),
    _kind(67, ClientReplies, (), rule=replies_rule, fields_of=replies_fields, build=trusted(ClientReplies),
          checked_at_construction=True),
)
_BY_CODE: dict[int, _Kind] = {k.code: k for k in KINDS}
_BY_TYPE: dict[type, _Kind] = {k.cls: k for k in KINDS}
KIND_OF: dict[type, int] = {k.cls: k.code for k in KINDS}
CLIENT_REQUEST_KIND = KIND_OF[ClientRequest]
_REQUEST_KINDS = frozenset({KIND_OF[ClientRequest], KIND_OF[ClientBatch]})
_REPLY_KINDS = frozenset({KIND_OF[ClientReply], KIND_OF[ClientReplies]})
_REPLIES_HEADER = bytes((VERSION, KIND_OF[ClientReplies])) + b"\x91"  # the body: an array of one field
REPLIES_OVERHEAD = 1 + 3  # body bytes of a ClientReplies frame besides its packed replies


def _check_body(kind: _Kind, body: Any) -> list[Any]:
    """Check every field, then the rules across fields; return the (converted) values."""
    if type(body) is not tuple or len(body) != len(kind.names):
        raise DecodeError(f"{kind.cls.__name__}: expected an array of {len(kind.names)} fields, got {show(body)}")
    if not kind.checks:  # checked as a whole by its rule (client frames)
        values = list(body)
        kind.rule(values)
        return values
    values = []
    try:
        for check, v in zip(kind.checks, body):
            values.append(check(v))
    except DecodeError as e:  # len(values) is the index of the field that failed
        raise DecodeError(f"{kind.cls.__name__}.{kind.names[len(values)]}: {e}") from None
    kind.rule(values)
    return values


# ---------------------------------------------------------------- bytes


class _Budget:
    """Counts the items of every array and map as msgpack builds them; past the budget the
    unpacking stops, so a hostile frame costs at most about one budget of memory, not 16 times
    its size (a 16 MiB frame of nils would otherwise become a 16-million-item tuple)."""

    __slots__ = ("left",)

    def __init__(self, items: int) -> None:
        self.left = items

    def take(self, container: Any) -> Any:
        self.left -= len(container)
        if self.left < 0:
            raise _OverBudget
        return container


class _OverBudget(Exception):
    pass


def _unpack(body: memoryview, max_bytes: int, budget: int | None = None) -> Any:
    items = max_bytes if budget is None else budget
    try:
        if len(body) <= FREE_EXPANSION_BYTES:
            # A small frame cannot expand into much: no hooks. Two spelled-out calls, since a
            # `**hooks` splat, even of an empty dict, costs as much again as the unpacking of
            # a small frame (every peer message and request goes through here).
            return msgpack.unpackb(
                body,
                use_list=False,
                raw=False,  # str must be valid UTF-8; bin stays bytes
                strict_map_key=True,
                max_str_len=MAX_STR_BYTES,
                max_bin_len=max_bytes,
                max_array_len=min(items, max_bytes),
                max_map_len=MAX_MAP_KEYS,  # arg and result maps are small; a huge one is abuse
                max_ext_len=0,
            )
        counter = _Budget(items)
        return msgpack.unpackb(
            body,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_STR_BYTES,
            max_bin_len=max_bytes,
            max_array_len=min(items, max_bytes),
            max_map_len=MAX_MAP_KEYS,
            max_ext_len=0,
            list_hook=counter.take,
            object_hook=counter.take,
        )
    except _OverBudget:
        raise DecodeError(f"frame expands into more than {items:,} items (arrays and maps in all)") from None
    except Exception as e:  # msgpack documents that "other exceptions" can be raised too
        raise DecodeError(f"malformed msgpack body ({type(e).__name__}: {str(e)[:80]})") from None


def _header(payload: bytes | bytearray | memoryview, max_bytes: int) -> _Kind:
    n = len(payload)
    if n < HEADER_BYTES:
        raise DecodeError(f"frame of {n} bytes is shorter than the {HEADER_BYTES}-byte header")
    if payload[0] != VERSION:
        raise DecodeError(f"unknown wire version {payload[0]} (this node speaks {VERSION})")
    kind = _BY_CODE.get(payload[1])
    if kind is None:
        raise DecodeError(f"unknown message kind {payload[1]}")
    if n - HEADER_BYTES > max_bytes:
        size = n - HEADER_BYTES
        raise FrameTooLarge(f"{kind.cls.__name__} body of {size} bytes is over the limit of {max_bytes}")
    return kind


def decode(payload: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """One frame's bytes -> a message object. Raises DecodeError and nothing else."""
    kind = _header(payload, max_bytes)
    body = _unpack(memoryview(payload)[HEADER_BYTES:], max_bytes, _item_budget(kind.code, max_bytes))
    return kind.build(_check_body(kind, body))


def reply_outcomes(payload: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES
                   ) -> list[tuple[int, bool, str]]:
    """(req_id, ok, code) of each reply in a ClientReply or ClientReplies frame, for a
    load generator that counts answers: the header, the frame's shape and those three
    fields are checked (DecodeError), the results are not (`decode` checks everything).
    The code of a refusal is the store's reason when it gives one (BAD_MAILBOX, ...)."""
    kind = _header(payload, max_bytes)
    if kind.code not in _REPLY_KINDS:
        raise DecodeError(f"expected a ClientReply or ClientReplies frame, got {kind.cls.__name__}")
    body = _unpack(memoryview(payload)[HEADER_BYTES:], max_bytes, _item_budget(kind.code, max_bytes))
    try:
        items = body[0] if kind.code == KIND_OF[ClientReplies] else (body,)
        out = []
        for req_id, ok, code, _message, result in items:
            if type(req_id) is not int or type(ok) is not bool or type(code) is not str:
                raise DecodeError("a reply's req_id, ok and code must be int, bool and str")
            reason = None if ok else result.get("reason")
            out.append((req_id, ok, reason if type(reason) is str and reason else code))
        return out
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise DecodeError(f"malformed {kind.cls.__name__}: {e}") from None


def _item_budget(code: int, max_bytes: int) -> int:
    """How many array items and map entries, in all, a frame of this kind may expand into."""
    if code in _REQUEST_KINDS:
        return MAX_REQUEST_ITEMS  # a client's frame never needs more, whatever its size
    if code in _REPLY_KINDS:
        return max_bytes  # only nodes send replies; a read of 10,000 tiny messages is legitimately dense
    return max(MAX_REQUEST_ITEMS, max_bytes // PEER_BYTES_PER_ITEM)


def request_id_of(payload: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """The req_id of a ClientRequest frame that failed to decode, or 0 if unreadable.

    Lets the node address its BAD_REQUEST reply to the request that caused it.
    """
    try:
        if _header(payload, max_bytes).code != CLIENT_REQUEST_KIND:
            return 0
        body = _unpack(memoryview(payload)[HEADER_BYTES:], max_bytes, MAX_REQUEST_ITEMS)
    except DecodeError:
        return 0
    if type(body) is tuple and body and type(body[0]) is int and 1 <= body[0] <= MAX_UINT:
        return body[0]
    return 0


_local = threading.local()  # a Packer is reusable (3x faster) but not thread-safe


def _pack(body: tuple[Any, ...]) -> bytes:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(body)


def encode(msg: Frame, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """A message -> one frame's bytes. Checks the message as decode would check it
    (a ClientReply only when it was made: the node encodes it right then)."""
    kind = _BY_TYPE.get(type(msg))
    if kind is None:
        raise TypeError(f"{type(msg).__name__} is not a wire message")
    try:
        body = kind.fields_of(msg)
        if not kind.checked_at_construction:
            _check_body(kind, body)
        packed = _pack(body)
    except (DecodeError, AttributeError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"cannot encode {type(msg).__name__}: {e}") from None
    if len(packed) > max_bytes:
        raise ValueError(f"{type(msg).__name__} body of {len(packed)} bytes is over the limit of {max_bytes}")
    return kind.header + packed


# ---------------------------------------------------------------- ClientBatch of one query, repeated


_BATCH_HEADER = bytes((VERSION, KIND_OF[ClientBatch])) + b"\x91"  # the body: an array of one field


def pack_same_requests(first_id: int, n: int, op: str, args: dict[str, Any], max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The frame encode(ClientBatch) makes of `n` requests with ids first_id..first_id+n-1
    that share `op` and `args` (a load generator's reads): checked as ClientRequest checks
    one, with the op and args packed once. ValueError as encode raises it."""
    if not 1 <= n <= MAX_BATCH_REQUESTS:
        raise ValueError(f"cannot encode ClientBatch: {n} requests, the limit is 1..{MAX_BATCH_REQUESTS}")
    check_request(first_id, op, args)
    check_request(first_id + n - 1, op, args)  # ids between two valid ones are valid
    tail = _pack(op) + _pack(args)
    body = _array_header(n) + b"".join(b"\x93" + _pack(i) + tail for i in range(first_id, first_id + n))
    if len(body) + 1 > max_bytes:
        raise ValueError(f"ClientBatch body of {len(body) + 1} bytes is over the limit of {max_bytes}")
    return _BATCH_HEADER + body


# ---------------------------------------------------------------- ClientReplies, built piecewise


def pack_reply(reply: ClientReply, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One reply packed as an item of a ClientReplies frame (checked when it was made).
    ValueError if it cannot be packed or would not fit in a frame on its own."""
    return pack_reply_fields(reply.req_id, reply.ok, reply.code, reply.message, reply.result, max_bytes)


def pack_reply_fields(req_id: int, ok: bool, code: str, message: str, result: dict[str, Any],
                      max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """pack_reply of the ClientReply of these fields, which the caller checked (as
    client_messages.check_ok_reply does): a node packs an OK reply without making it."""
    try:
        packed = _pack((req_id, ok, code, message, result))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"cannot encode ClientReply: {e}") from None
    if len(packed) + REPLIES_OVERHEAD > max_bytes:
        raise ValueError(f"ClientReply body of {len(packed)} bytes is over the limit of {max_bytes}")
    return packed


def _array_header(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")  # n <= 1024 (a batch's limit)


def replies_frames(packed: list[bytes], max_bytes: int = MAX_FRAME_BYTES) -> list[tuple[bytes, int]]:
    """(frame, replies in it): ClientReplies frames holding the `pack_reply` items
    in order, at most MAX_BATCH_REPLIES each and a body within max_bytes."""
    frames: list[tuple[bytes, int]] = []
    start, size = 0, REPLIES_OVERHEAD
    for i, item in enumerate(packed):
        if i > start and (i - start >= MAX_BATCH_REPLIES or size + len(item) > max_bytes):
            frames.append((_REPLIES_HEADER + _array_header(i - start) + b"".join(packed[start:i]), i - start))
            start, size = i, REPLIES_OVERHEAD
        size += len(item)
    if packed:
        n = len(packed) - start
        frames.append((_REPLIES_HEADER + _array_header(n) + b"".join(packed[start:]), n))
    return frames
