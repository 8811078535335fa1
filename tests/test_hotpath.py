"""Fast paths against the slow definitions they replace: each must give the same answers."""

from __future__ import annotations

import random

from zrep.service.service import _DurableRun


class _FakeReplica:
    """durable_on as the real leader computes it: the members whose match reaches the index."""

    def __init__(self, matches: dict[int, int]) -> None:
        self.matches = matches
        self.calls = 0

    def durable_on(self, index: int) -> tuple[int, ...]:
        self.calls += 1
        return tuple(sorted(m for m, match in self.matches.items() if match >= index))


def test_durable_run_equals_durable_on_for_any_order_of_indexes() -> None:
    rng = random.Random(7)
    for _ in range(300):
        matches = {m: rng.randint(0, 30) for m in (1, 2, 3, 4, 5)}
        end = rng.randint(0, 30)
        run = _DurableRun(_FakeReplica(matches), end)
        ref = _FakeReplica(matches)
        # Mostly ascending, as entries are applied, with duplicates naming older indexes.
        asks = sorted(rng.randint(1, end) for _ in range(10)) if end else []
        asks += [rng.randint(1, 31) for _ in range(5)]
        for index in asks:
            assert run.at(index) == list(ref.durable_on(index)), (matches, end, index)


def test_durable_run_asks_the_replica_once_per_run_not_once_per_entry() -> None:
    replica = _FakeReplica({1: 100, 2: 100, 3: 90})
    run = _DurableRun(replica, 100)
    for index in range(1, 101):
        run.at(index)
    assert replica.calls <= 2 * 8  # two runs, each found by a binary search over 100 indexes


def test_durable_run_hands_out_lists_the_caller_may_change() -> None:
    run = _DurableRun(_FakeReplica({1: 5, 2: 5}), 5)
    first = run.at(1)
    first.append(99)
    assert run.at(2) == [1, 2]


# ---------------------------------------------------------------- client_messages.WELL_FORMED

import itertools  # noqa: E402

from zrep.wire.client_messages import (  # noqa: E402
    MAX_CLIENT_ID_BYTES,
    MAX_NAME_CHARS,
    MAX_UINT,
    OP_ARGS,
    OP_RULES,
    WELL_FORMED,
    ClientReply,
    Code,
    check_args,
    ok_reply,
)

_TEXTS = ["", "a", "bench", "\x00", "a\x9f", "\ud800", "é" * 64, "é" * 65, "x" * MAX_CLIENT_ID_BYTES,
          "x" * (MAX_CLIENT_ID_BYTES + 1), "y" * MAX_NAME_CHARS, "y" * (MAX_NAME_CHARS + 1), Code.OK]
_INTS = [-2, -1, 0, 1, 2, 10_000, 10_001, MAX_UINT, MAX_UINT + 1, True, False, 1.0, "1"]
_POOL = {
    "client": _TEXTS + [b"w0", 1, None],
    "seq": _INTS, "low": _INTS, "after": _INTS, "limit": _INTS,
    "ack": ["majority", "all", "none", b"all", ("all",), {"all": 1}, None, Code.OK],
    "sender": _TEXTS + [b"", None], "to": _TEXTS + [b"x", ()], "mailbox": _TEXTS + [b"x", ()],
    "body": [b"", b"x" * 100, "x", bytearray(b"x"), None],
}


def _slow_accepts(op: str, args: dict) -> bool:
    try:
        for key, check in OP_ARGS[op].items():
            check(args[key])
        rule = OP_RULES.get(op)
        if rule is not None:
            rule(args)
    except ValueError:
        return False
    return True


def test_well_formed_accepts_only_what_the_schema_accepts() -> None:
    rng = random.Random(11)
    for op, fast in WELL_FORMED.items():
        keys = list(OP_ARGS[op])
        accepted = 0
        for _ in range(20_000):
            args = {k: rng.choice(_POOL[k]) for k in keys}
            slow = _slow_accepts(op, args)
            if fast(args):
                accepted += 1
                assert slow, (op, args)
            check_args(op, args) if slow else None  # the full path agrees with the slow one
        assert accepted > 10  # the fast path is taken, not just always refusing


def test_well_formed_takes_the_common_requests() -> None:
    send = {"client": "w0", "seq": 5, "low": 3, "ack": "majority", "sender": "", "to": "bench", "body": b"x"}
    read = {"mailbox": "bench", "after": -1, "limit": 1}
    assert WELL_FORMED["send"](send) and WELL_FORMED["read"](read) and WELL_FORMED["stale_read"](read)
    for key, bad in itertools.product(["seq", "low"], [0, True, MAX_UINT + 1]):
        assert not WELL_FORMED["send"](dict(send, **{key: bad}))
    assert not WELL_FORMED["send"](dict(send, low=6))


def test_ok_reply_equals_the_checked_constructor() -> None:
    result = {"mailbox": "m", "offset": 3, "index": 9, "epoch": 2, "durable_on": [1, 2], "leader": 1}
    assert ok_reply(7, result) == ClientReply(7, True, Code.OK, "", result)


# ---------------------------------------------------------------- Service: reads share a read index request

from zrep.core.messages import Role  # noqa: E402
from zrep.service.service import Service  # noqa: E402
from zrep.store.store import Store  # noqa: E402


class _ReadReplica:
    """Just enough of a Replica for Service.submit_read and an idle process()."""

    role, leader, now, members, voters = Role.LEADER, 1, 0, (1,), (1,)

    class hs:  # noqa: N801
        epoch = 1

    def __init__(self) -> None:
        self.ctxs: list[int] = []

    def read_index(self, ctx: int) -> bool:
        self.ctxs.append(ctx)
        return True

    def has_ready(self) -> bool:
        return False

    def durable_on(self, index: int) -> tuple[int, ...]:
        return (1,)


def test_reads_between_two_process_calls_share_one_read_index_request() -> None:
    replica = _ReadReplica()
    svc = Service(replica, Store(), request_ticks=10)  # type: ignore[arg-type]
    query = {"op": "read", "mailbox": "m", "after": -1, "limit": 1}
    for route in ("a", "b", "c"):
        svc.submit_read(route, query)
    assert len(replica.ctxs) == 1 and len(svc.pending) == 3
    assert svc.process(None, lambda m: None) == []  # type: ignore[arg-type]
    svc.submit_read("d", query)  # after process the core may have fixed the index: a new request
    assert len(replica.ctxs) == 2 and replica.ctxs[0] != replica.ctxs[1]
    done = svc.pending.on_read_index(replica.ctxs[0], 0) + svc.pending.on_read_index(replica.ctxs[1], 0)
    assert done == [] and [r for r, _ in svc.pending.reads_ready(0)] == ["a", "b", "c", "d"]


# ---------------------------------------------------------------- Store.read_rows

from zrep.store.commands import encode_delete, encode_send  # noqa: E402


def test_read_rows_equals_read_for_every_window() -> None:
    rng = random.Random(5)
    store, index, live = Store(), 0, []
    for seq in range(1, 3000):
        index += 1
        if seq % 3 == 0 and live:  # deletes leave holes, mostly at the front (trim then moves the base)
            gone = [live.pop(0)] + ([live.pop(rng.randrange(len(live)))] if len(live) > 1 else [])
            data = encode_delete("c", seq, seq, "m", gone)
        else:
            data = encode_send("c", seq, seq, f"s{seq % 4}", "m", b"%d" % seq)
        answer = store.apply(index, data)
        if "offset" in answer:
            live.append(answer["offset"])
    assert store._boxes["m"].base > 0  # the columns were trimmed
    for after in (-5, -1, 0, 7, 150, 1500, 1990, 2500):
        for limit in (-1, 0, 1, 3, 100, 20_000):
            expect = [[m.offset, m.sender, m.body, m.index] for m in store.read("m", after, limit)]
            assert store.read_rows("m", after, limit) == expect, (after, limit)
    assert store.read_rows("nope") == []


# ---------------------------------------------------------------- OK replies packed without a ClientReply

import pytest  # noqa: E402

from zrep.node.requests import ok_result, reply_for  # noqa: E402
from zrep.node.transport import Transport  # noqa: E402


def _queue_only(max_frame_bytes: int = 1 << 20) -> Transport:
    """A Transport without sockets: enough for batched replies, which only queue."""
    t = Transport.__new__(Transport)
    t.max_frame_bytes, t._batched = max_frame_bytes, {}
    return t


@pytest.mark.parametrize("answer", [
    {"ok": True, "mailbox": "m", "offset": 3, "index": 9, "epoch": 2, "durable_on": [1, 2], "leader": 1},
    {"ok": True, "messages": [[0, "s", b"body", 4]], "applied": 7},
    {"ok": True, "messages": [], "applied": 0, "message": "dropped", "error": None},
    {"ok": True},
    {"ok": True, "big": "x" * 3000},  # over the small frame below: TOO_LARGE either way
])
def test_reply_ok_queues_the_bytes_reply_queues(answer: dict) -> None:
    fast, slow = _queue_only(2000), _queue_only(2000)
    fast.reply_ok(b"c", 7, ok_result(answer), batched=True)
    slow.reply(b"c", reply_for(7, answer, lambda n: ""), batched=True)
    assert fast._batched == slow._batched


def test_reply_ok_refuses_what_ok_reply_refuses() -> None:
    for bad in ({"n": 2**64}, {"k": {"x": object()}}, {"s": "x" * 70_000}):
        with pytest.raises(ValueError) as slow:
            reply_for(7, {"ok": True, **bad}, lambda n: "")
        with pytest.raises(ValueError) as fast:
            _queue_only().reply_ok(b"c", 7, ok_result({"ok": True, **bad}), batched=True)
        assert str(fast.value) == str(slow.value)
    assert ok_result({"ok": False, "error": "TIMEOUT", "message": "m"}) is None


# ---------------------------------------------------------------- commands: remembered client ids

from zrep.errors import DecodeError  # noqa: E402
from zrep.store import commands  # noqa: E402


def _verdict(data: bytes) -> object:
    try:
        return commands.decode_command(data)
    except DecodeError as e:
        return str(e)


def test_remembered_client_ids_change_no_decode() -> None:
    ids = ["w0", "", "a\x00b", "\x9f", "é" * 64, "é" * 65, "x" * 128, "x" * 129, "ok-id"]
    datas = [commands.msgpack.packb([1, c, 2, 1, "", "m", b"b"]) for c in ids]
    cold = [_verdict(d) for d in datas]
    assert [type(v) is str for v in cold] == [False, True, True, True, False, True, False, True, False]
    assert [_verdict(d) for d in datas] == cold  # warm: the ids that passed are remembered
    commands._good_clients.clear()
    for i in range(commands._GOOD_CLIENTS_MAX + 5):  # past the bound the set starts over
        commands._good_client(f"c{i}")
    assert len(commands._good_clients) <= commands._GOOD_CLIENTS_MAX
    assert [_verdict(d) for d in datas] == cold
