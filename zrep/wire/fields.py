"""The codec's checks: each field of a wire message, and the rules across a message's fields.

Job: turn one decoded msgpack value into a checked field value (or raise
DecodeError naming what was expected), and check what spans fields (an
Append's entry run, an InstallSnapshot chunk, a client batch item by item).
Invariants: pure; checks never trust a type by its look (a bool is not an
int, a str is not bytes); zrep.wire.codec's kinds table is their only user.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, NoReturn

from zrep.core.messages import (
    Answer,
    AnswerReason,
    Append,
    Heartbeat,
    InstallSnapshot,
    Role,
)
from zrep.errors import DecodeError
from zrep.wire.client_messages import (
    MAX_BATCH_REPLIES,
    MAX_BATCH_REQUESTS,
    BadRequest,
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    check_reply,
    check_request,
)

MAX_UINT = 2**63 - 1
Check = Callable[[Any], Any]  # returns the value to store (maybe converted); raises DecodeError


# ---------------------------------------------------------------- field checks


def show(v: object) -> str:
    text = repr(v)
    return (text[:40] + "...") if len(text) > 40 else text


def bad(expected: str, v: object) -> NoReturn:
    raise DecodeError(f"expected {expected}, got {show(v)}")


def uint(v: Any) -> int:
    if type(v) is int and 0 <= v <= MAX_UINT:  # type() is int: a bool never passes
        return v
    bad("an integer in 0..2**63-1", v)


def flag(v: Any) -> bool:
    if type(v) is bool:
        return v
    bad("a boolean", v)


def blobs(v: Any) -> tuple[bytes, ...]:
    if type(v) is not tuple:
        bad("an array of bytes", v)
    for item in v:
        if type(item) is not bytes:
            bad("bytes in the array", item)
    return v


def bin(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    bad("bytes", v)


def array(v: Any) -> tuple[Any, ...]:
    if type(v) is not tuple:
        bad("an array", v)
    return v


def enum(enum: type) -> Check:
    members = {m.value: m for m in enum}

    def check(v: Any) -> Any:
        member = members.get(v) if type(v) is int or type(v) is enum else None
        if member is None:
            bad(f"a {enum.__name__} value {sorted(members)}", v)
        return member

    return check


# Checks by field annotation (string: messages.py uses postponed annotations).
CHECK_BY_TYPE: dict[str, Check] = {
    "int": uint,
    "bool": flag,
    "bytes": bin,
    "tuple[bytes, ...]": blobs,
    "tuple[Entry, ...]": array,  # each entry is checked by check_run, which knows prev_index
}
CHECK_BY_FIELD: dict[tuple[type, str], Check] = {
    (Heartbeat, "role"): enum(Role),
    (Answer, "reason"): enum(AnswerReason),
}


# ---------------------------------------------------------------- rules across fields


def no_rule(values: list[Any]) -> None:
    pass


# Positions of Append's fields, so the rules below survive a reordering in messages.py.
_AT = {f.name: i for i, f in enumerate(fields(Append))}
_EPOCH, _PREV_INDEX, _PREV_EPOCH, ENTRIES = _AT["epoch"], _AT["prev_index"], _AT["prev_epoch"], _AT["entries"]


def check_run(values: list[Any]) -> None:
    """Append: entries must extend (prev_index, prev_epoch) contiguously, epochs sorted."""
    epoch, prev_index = values[_EPOCH], values[_PREV_INDEX]
    prev_epoch, entries = values[_PREV_EPOCH], values[ENTRIES]
    if prev_epoch > epoch:
        raise DecodeError(f"Append.prev_epoch: {prev_epoch} is above the Append's epoch {epoch}")
    expect, floor = prev_index + 1, prev_epoch
    for item in entries:
        k = expect - prev_index - 1
        if not isinstance(item, tuple) or len(item) != 3:  # a decoded array, or an Entry being encoded
            raise DecodeError(f"Append.entries[{k}]: expected [epoch, index, data], got {show(item)}")
        e, i, d = item
        if type(e) is not int or type(i) is not int or type(d) is not bytes:
            raise DecodeError(f"Append.entries[{k}]: expected [int, int, bytes], got {show(item)}")
        if i != expect:
            raise DecodeError(f"Append.entries[{k}].index: expected {expect}, got {show(i)}")
        if not floor <= e <= epoch:  # floor >= prev_epoch >= 0 and epoch <= MAX_UINT bound e too
            raise DecodeError(f"Append.entries[{k}].epoch: expected {floor}..{epoch}, got {show(e)}")
        expect, floor = expect + 1, e
    if expect - 1 > MAX_UINT:
        raise DecodeError(f"Append.entries: last index {expect - 1} is above 2**63-1")


_SNAP = {f.name: i for i, f in enumerate(fields(InstallSnapshot))}


def check_chunk(values: list[Any]) -> None:
    """InstallSnapshot: a leader's snapshot holds entries of epochs up to its own."""
    if values[_SNAP["index_epoch"]] > values[_SNAP["epoch"]]:
        raise DecodeError(f"InstallSnapshot.index_epoch: {values[_SNAP['index_epoch']]} is above the epoch "
                          f"{values[_SNAP['epoch']]}")
    if values[_SNAP["offset"]] + len(values[_SNAP["data"]]) > MAX_UINT:
        raise DecodeError("InstallSnapshot.offset: the chunk ends past 2**63-1")


def client_rule(name: str, validate: Callable[..., None]) -> Callable[[list[Any]], None]:
    def rule(values: list[Any]) -> None:
        try:
            validate(*values)
        except ValueError as e:
            raise DecodeError(f"{name}: {e}") from None

    return rule


def _items(name: str, values: list[Any], most: int) -> tuple[Any, ...]:
    items = values[0]
    if type(items) is not tuple or not 1 <= len(items) <= most:
        raise DecodeError(f"{name}: expected an array of 1..{most} items, got {show(items)}")
    return items


def _salvaged_id(item: Any) -> int:
    if type(item) is tuple and item and type(item[0]) is int and 1 <= item[0] <= MAX_UINT:
        return item[0]
    return 0


def _each_item(name: str, values: list[Any], most: int, fields: str, check: Callable[..., None],
               build: Callable[[Any], Any], bad: Callable[[int, Any, str], Any]) -> None:
    """Check every item of a batch as its single kind would be checked; a good one
    becomes `build(item)`, a bad one `bad(k, item, why)` (which may raise instead)."""
    arity = fields.count(",") + 1
    out = []
    for k, item in enumerate(_items(name, values, most)):
        try:
            if type(item) is not tuple or len(item) != arity:
                raise ValueError(f"expected [{fields}], got {show(item)}")
            check(*item)
        except ValueError as e:
            out.append(bad(k, item, str(e)))
            continue
        out.append(build(item))
    values[0] = tuple(out)


def batch_rule(values: list[Any]) -> None:
    """ClientBatch: each item becomes a ClientRequest, or a BadRequest saying why not."""
    def bad(k: int, item: Any, why: str) -> BadRequest:
        return BadRequest(_salvaged_id(item), f"ClientBatch.requests[{k}]: {why}")

    _each_item("ClientBatch.requests", values, MAX_BATCH_REQUESTS, "req_id, op, args", check_request,
               _new_request, bad)


def replies_rule(values: list[Any]) -> None:
    """ClientReplies: one bad reply fails the frame (only nodes send them)."""
    def bad(k: int, item: Any, why: str) -> NoReturn:
        raise DecodeError(f"ClientReplies.replies[{k}]: {why}")

    _each_item("ClientReplies.replies", values, MAX_BATCH_REPLIES, "req_id, ok, code, message, result",
               check_reply, _new_reply, bad)


def batch_fields(b: ClientBatch) -> tuple[Any, ...]:
    # Each request is checked again on encode, as a single one is (args mutated after construction).
    items = []
    for r in b.requests:
        check_request(r.req_id, r.op, r.args)  # type: ignore[union-attr]  # a BadRequest: AttributeError
        items.append((r.req_id, r.op, r.args))  # type: ignore[union-attr]
    return (tuple(items),)


def replies_fields(b: ClientReplies) -> tuple[Any, ...]:
    return (tuple((r.req_id, r.ok, r.code, r.message, r.result) for r in b.replies),)


def trusted(cls: type) -> Callable[[list[Any]], Any]:
    """Build a self-validating message from values the decoder already checked with
    the same function its __post_init__ would run: once is enough on the hot path."""
    # The slots' own setters: a frozen dataclass refuses setattr, and object.__setattr__
    # looks each name up again (twice the cost, per request).
    setters = tuple(getattr(cls, f.name).__set__ for f in fields(cls))
    new = object.__new__
    if len(setters) == 3:  # ClientRequest, one per request a node receives: no loop
        set_0, set_1, set_2 = setters

        def build_3(values: list[Any]) -> Any:
            obj = new(cls)
            set_0(obj, values[0])
            set_1(obj, values[1])
            set_2(obj, values[2])
            return obj

        return build_3

    def build(values: list[Any]) -> Any:
        obj = new(cls)
        for set_field, v in zip(setters, values):
            set_field(obj, v)
        return obj

    return build


_new_request = trusted(ClientRequest)
_new_reply = trusted(ClientReply)
