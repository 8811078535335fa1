"""Tests for zrep.client.

Unit part: the retry, seq and low bookkeeping against fake nodes: real ZeroMQ
ROUTER sockets in threads that speak the real codec, each answering by a
script (OK, NOT_LEADER, NO_LEADER, TIMEOUT, silence, late answers, death).
Integration part: the library against a real LocalCluster (tests/harness.py),
skipped while that harness does not exist.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import zmq

from zrep.client import (
    Client,
    ClientExpired,
    MailboxInfo,
    Message,
    OutcomeUnknown,
    Receipt,
    Rejected,
    Unavailable,
)
from zrep.aio import Client as AioClient
from zrep.config import ClusterConfig, config_from_dict
from zrep.errors import ZrepError
from zrep.node.requests import reply_for
from zrep.wire import codec
from zrep.wire.client_messages import (
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    Code,
    error_reply,
    not_leader_reply,
    ok_reply,
)

# ================================================================ fake nodes
#
# A script is `(node, request) -> Reply | None`: None stays silent (the request
# is still recorded); a Reply is sent after its delay. FakeMailboxes is a toy
# store shared by several fakes (exactly once by (client, seq), and the store's
# rule that an unknown client id must send low == 1).


@dataclass(frozen=True)
class Reply:
    reply: ClientReply
    delay_s: float = 0.0


Script = Callable[["FakeNode", ClientRequest], "Reply | None"]


class FakeNode:
    """One fake node: records every request, answers by its script."""

    def __init__(self, node_id: int, script: Script) -> None:
        self.id = node_id
        self.script = script
        self.requests: list[ClientRequest] = []
        self.frames: list[Any] = []  # as received: ClientRequest or ClientBatch
        self.address = ""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-node-{node_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fake node did not bind")

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)  # made in its own thread: sockets never cross threads
        sock.linger = 0
        sock.bind("tcp://127.0.0.1:*")
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ready.set()
        later: list[tuple[float, bytes, bytes]] = []  # (due, routing id, payload)
        try:
            while not self._stop.is_set():
                if sock.poll(10):
                    rid, payload = sock.recv_multipart()
                    frame = codec.decode(payload)
                    self.frames.append(frame)
                    batched = isinstance(frame, ClientBatch)  # answered in ClientReplies, as a node does
                    for request in frame.requests if batched else (frame,):
                        self.requests.append(request)
                        answer = self.script(self, request)
                        if answer is not None:
                            out = ClientReplies((answer.reply,)) if batched else answer.reply
                            later.append((time.monotonic() + answer.delay_s, rid, codec.encode(out)))
                now = time.monotonic()
                for item in [x for x in later if x[0] <= now]:
                    later.remove(item)
                    sock.send_multipart([item[1], item[2]])
        finally:
            sock.close(linger=0)

    def kill(self) -> None:
        """Stop answering and close the port, like a dead process."""
        self._stop.set()
        self._thread.join(5)

    def writes(self) -> list[tuple[int, int]]:
        """(seq, low) of every write request received, in order."""
        return [(r.args["seq"], r.args["low"]) for r in self.requests if r.op in ("send", "delete")]


def config_for(nodes: list[FakeNode], tmp_path: Path, extra_addresses: dict[int, str] | None = None) -> ClusterConfig:
    """A cluster file whose rpc addresses are the fakes' (plus extra ids -> addresses)."""
    addresses = {n.id: n.address for n in nodes} | (extra_addresses or {})
    rows = [{"id": i, "rpc": a, "pub": f"tcp://127.0.0.1:{i}"} for i, a in sorted(addresses.items())]
    raw = {"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 500, "data_dir": "data"}, "nodes": rows}
    return config_from_dict(raw, tmp_path)


_held_ports: list[socket.socket] = []


def closed_port_address() -> str:
    """A loopback address nothing listens on. Its port stays bound (not listening) for the
    session: a connect is refused, and neither another process nor a TCP self-connect (a
    client given the same port as its source) can answer there, as with a closed port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _held_ports.append(sock)
    return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


# ---------------------------------------------------------------- scripts


def silent(node: FakeNode, request: ClientRequest) -> Reply | None:
    return None


def answer_code(code: str, message: str = "scripted") -> Script:
    def script(node: FakeNode, request: ClientRequest) -> Reply:
        return Reply(error_reply(request.req_id, code, message))

    return script


def redirect_to(leader: int, rpc: str = "") -> Script:
    def script(node: FakeNode, request: ClientRequest) -> Reply:
        return Reply(not_leader_reply(request.req_id, leader, rpc))

    return script


@dataclass
class FakeMailboxes:
    """A thread-safe toy store shared by fakes: sends, deletes, reads, exactly once."""

    boxes: dict[str, list[tuple[int, str, bytes, int]]] = field(default_factory=dict)
    answers: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    index: int = 0
    applied_writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, mailbox: str, body: bytes, sender: str = "") -> int:
        with self.lock:
            return self._append(mailbox, sender, body)

    def _append(self, mailbox: str, sender: str, body: bytes) -> int:
        box = self.boxes.setdefault(mailbox, [])
        self.index += 1
        offset = box[-1][0] + 1 if box else 0
        box.append((offset, sender, body, self.index))
        return offset

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            key = (args["client"], args["seq"])
            if key in self.answers:
                return self.answers[key]
            if args["client"] not in self.known and args["low"] != 1:
                return {"ok": False, "error": "CLIENT_EXPIRED", "message": "unknown client id"}
            self.known.add(args["client"])
            self.applied_writes += 1
            offset = self._append(args["to"], args["sender"], args["body"])
            answer = {"ok": True, "mailbox": args["to"], "offset": offset, "index": self.index,
                      "epoch": 1, "durable_on": [1, 2]}
            self.answers[key] = answer
            return answer

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            rows = [list(m) for m in self.boxes.get(args["mailbox"], []) if m[0] > args["after"]]
            return {"ok": True, "messages": rows[: args["limit"]], "applied": self.index}


def node_reply(req_id: int, answer: dict[str, Any]) -> ClientReply:
    """A store or service answer as the real node puts it on the wire."""
    return reply_for(req_id, answer, lambda node_id: "")


def refuse_with(code: str) -> Script:
    """A node whose store refuses every write with `code`."""

    def script(node: FakeNode, request: ClientRequest) -> Reply:
        return Reply(node_reply(request.req_id, {"ok": False, "error": code, "message": "refused by the fake"}))

    return script


def serve(store: FakeMailboxes) -> Script:
    """A leader over `store`: answers writes and reads."""

    def script(node: FakeNode, request: ClientRequest) -> Reply:
        if request.op in ("send",):
            answer = store.write(request.args)
        elif request.op in ("read", "stale_read"):
            answer = store.read(request.args)
        else:
            return Reply(error_reply(request.req_id, Code.BAD_REQUEST, f"fake: no {request.op}"))
        return Reply(node_reply(request.req_id, answer))

    return script


# ================================================================ fixtures


@pytest.fixture
def fake_cluster(tmp_path):
    """fake_cluster(script1, script2, ...) -> (fakes, config); fakes get ids 1, 2, ..."""
    made: list[FakeNode] = []

    def make(*scripts: Script, extra: dict[int, str] | None = None) -> tuple[list[FakeNode], ClusterConfig]:
        nodes = [FakeNode(i, s) for i, s in enumerate(scripts, start=1)]
        made.extend(nodes)
        return nodes, config_for(nodes, tmp_path, extra)

    yield make
    for n in made:
        n.kill()


@pytest.fixture
def clients():
    """clients(config, **kw) -> a Client with short test timeouts, closed at teardown."""
    made: list[Client] = []

    def make(config: ClusterConfig, **kw: Any) -> Client:
        kw.setdefault("timeout_s", 2.0)
        kw.setdefault("attempt_timeout_s", 0.3)
        c = Client(config, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# ================================================================ writes: seq, low, receipt


def test_send_returns_the_receipt_and_carries_client_seq_low(fake_cluster, clients):
    store = FakeMailboxes()
    (n1,), cfg = fake_cluster(serve(store))
    c = clients(cfg, client_id="alice")
    r = c.send("inbox", "hello", sender="bob")
    assert (r.mailbox, r.offset, r.index, r.epoch, r.durable_on, r.all_durable, r.node) == (
        "inbox", 0, 1, 1, [1, 2], None, 1)
    (req,) = n1.requests
    assert req.op == "send"
    assert req.args == {"client": "alice", "seq": 1, "low": 1, "ack": "majority", "sender": "bob",
                        "to": "inbox", "body": b"hello"}


def test_seq_grows_per_write_and_low_follows_it_once_the_store_knows_the_client(fake_cluster, clients):
    store = FakeMailboxes()
    (n1,), cfg = fake_cluster(serve(store))
    c = clients(cfg)
    for _ in range(3):
        c.send("inbox", b"x")
    assert n1.writes() == [(1, 1), (2, 2), (3, 3)]
    assert c.seq == 3


def test_a_new_client_keeps_low_1_until_its_first_answer(fake_cluster, clients):
    # The first write gets no answer at all: the store may never have seen this id, so
    # the next write must still say low == 1 or the store would refuse it as expired.
    store = FakeMailboxes()
    answering = threading.Event()

    def script(node: FakeNode, req: ClientRequest) -> Reply | None:
        return serve(store)(node, req) if answering.is_set() else None

    (n1,), cfg = fake_cluster(script)
    c = clients(cfg, timeout_s=0.5, attempt_timeout_s=0.2)
    with pytest.raises(OutcomeUnknown):
        c.send("inbox", b"first")
    answering.set()
    c.send("inbox", b"second")
    c.send("inbox", b"third")
    seqs = sorted(set(n1.writes()))
    assert seqs == [(1, 1), (2, 1), (3, 3)]


def test_a_local_refusal_spends_no_seq_and_sends_nothing(fake_cluster, clients):
    (n1,), cfg = fake_cluster(serve(FakeMailboxes()))
    c = clients(cfg)
    with pytest.raises(Rejected) as e:
        c.send("", b"x")  # the wire schema wants a non-empty mailbox
    assert e.value.code == "BAD_REQUEST"
    with pytest.raises(Rejected) as e:
        c.send("inbox", b"x" * (cfg.max_body_bytes + 1))
    assert e.value.code == "TOO_LARGE"
    c.send("inbox", b"ok")
    assert n1.writes() == [(1, 1)]


def test_a_bad_client_id_is_refused_at_construction(fake_cluster):
    _, cfg = fake_cluster(silent)
    with pytest.raises(ValueError):
        Client(cfg, client_id="bad\nid")


# ================================================================ failover and retries


def test_not_leader_is_followed_with_the_same_seq_and_the_leader_is_remembered(fake_cluster, clients):
    store = FakeMailboxes()
    (n1, n2, n3), cfg = fake_cluster(redirect_to(3), redirect_to(3), serve(store))
    c = clients(cfg)
    assert c.send("inbox", b"a").node == 3
    assert c.send("inbox", b"b").node == 3
    assert n1.writes() == [(1, 1)]  # asked first (lowest id), then never again
    assert n3.writes() == [(1, 1), (2, 2)]
    assert n2.requests == []


def test_a_leader_hint_with_an_address_the_config_lacks_is_followed(fake_cluster, clients):
    store = FakeMailboxes()
    leader = FakeNode(9, serve(store))
    try:
        (n1,), cfg = fake_cluster(redirect_to(9, leader.address))
        c = clients(cfg)
        assert c.send("inbox", b"a").node == 9
        assert leader.writes() == [(1, 1)]
    finally:
        leader.kill()


def test_no_leader_and_timeout_answers_move_on_to_the_next_node_with_the_same_seq(fake_cluster, clients):
    store = FakeMailboxes()
    (n1, n2, n3), cfg = fake_cluster(answer_code(Code.NO_LEADER), answer_code(Code.TIMEOUT), serve(store))
    c = clients(cfg)
    r = c.send("inbox", b"a")
    assert r.node == 3
    assert n1.writes() == n2.writes() == n3.writes() == [(1, 1)]
    assert store.applied_writes == 1


def test_a_silent_node_costs_one_attempt_timeout(fake_cluster, clients):
    store = FakeMailboxes()
    (n1, n2), cfg = fake_cluster(silent, serve(store))
    c = clients(cfg, attempt_timeout_s=0.3)
    start = time.monotonic()
    assert c.send("inbox", b"a").node == 2
    assert 0.3 <= time.monotonic() - start < 1.0
    assert n1.writes() == n2.writes() == [(1, 1)]


def test_a_node_that_left_an_attempt_unanswered_is_passed_over_and_a_dead_one_costs_nothing(
        fake_cluster, clients):
    # Node 1 (a leader) dies; node 2 holds writes (a follower forwarding to the dead
    # leader); node 3 serves. The rotation goes 1 -> 2 -> 3 once, and the next call,
    # still preferring node 1, fails at once on the lost connection instead of
    # waiting out a connect timeout.
    store = FakeMailboxes()
    (n1, n2, n3), cfg = fake_cluster(serve(store), silent, serve(store))
    c = clients(cfg, timeout_s=5.0, attempt_timeout_s=0.2)
    assert c.send("inbox", b"a").node == 1
    n1.kill()
    assert c.send("inbox", b"b").node == 3
    assert n2.writes() == [(2, 2)]  # visited once, not again after node 1's timeout
    c._preferred = 1  # as if node 1 were named the leader again
    start = time.monotonic()
    assert c.send("inbox", b"c").node == 3
    assert time.monotonic() - start < 0.2  # no attempt timeout: 1 is down, 2 was silent
    assert n2.writes() == [(2, 2)]


def test_a_late_ok_from_an_earlier_attempt_ends_the_call(fake_cluster, clients):
    # Node 1 answers after the attempt timeout; node 2 knows no leader. The late OK
    # answers the same (client, seq), so the call returns it instead of retrying on.
    store = FakeMailboxes()

    def slow(node: FakeNode, req: ClientRequest) -> Reply:
        return Reply(serve(store)(node, req).reply, delay_s=0.5)

    (n1, n2), cfg = fake_cluster(slow, answer_code(Code.NO_LEADER))
    c = clients(cfg, timeout_s=3.0, attempt_timeout_s=0.2)
    start = time.monotonic()
    assert c.send("inbox", b"a").node == 1
    assert time.monotonic() - start < 1.5
    assert store.applied_writes == 1


def test_replies_to_other_requests_are_ignored(fake_cluster, clients):
    store = FakeMailboxes()
    calls = []

    def confused(node: FakeNode, req: ClientRequest) -> Reply:
        calls.append(req.req_id)
        if len(calls) == 1:  # answer with a req_id that is not ours: must be ignored
            return Reply(ok_reply(req.req_id + 1000, {"offset": 99, "index": 99}))
        return serve(store)(node, req)

    (n1,), cfg = fake_cluster(confused)
    c = clients(cfg, attempt_timeout_s=0.2)
    r = c.send("inbox", b"a")
    assert (r.offset, r.index) == (0, 1)
    assert [w for w in n1.writes()] == [(1, 1), (1, 1)]


def test_backoff_keeps_a_leaderless_cluster_from_a_hot_loop(fake_cluster, clients):
    nodes, cfg = fake_cluster(*[answer_code(Code.NO_LEADER)] * 3)
    c = clients(cfg, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(Unavailable) as e:
        c.send("inbox", b"a")
    assert 1.0 <= time.monotonic() - start < 1.5
    attempts = sum(len(n.requests) for n in nodes)
    assert 3 <= attempts <= 40  # every node tried, but backed off (a hot loop makes thousands)
    assert "status" in str(e.value) and "\n" not in str(e.value)


def test_unreachable_nodes_are_unavailable_not_unknown(fake_cluster, clients, tmp_path):
    addresses = {1: closed_port_address(), 2: closed_port_address()}
    cfg = config_for([], tmp_path, addresses)
    c = clients(cfg, timeout_s=0.6)
    with pytest.raises(Unavailable):
        c.send("inbox", b"a")  # nothing left the client: nothing can have been applied


def test_a_write_that_may_have_landed_is_outcome_unknown_and_the_same_call_retries_it(fake_cluster, clients):
    store = FakeMailboxes()
    answering = threading.Event()

    def flaky(node: FakeNode, req: ClientRequest) -> Reply | None:
        reply = serve(store)(node, req)  # applied every time it arrives...
        return reply if answering.is_set() else None  # ...but answered only later

    (n1,), cfg = fake_cluster(flaky)
    c = clients(cfg, timeout_s=0.5, attempt_timeout_s=0.2)
    with pytest.raises(OutcomeUnknown) as e:
        c.send("inbox", b"a")
    assert "same client" in str(e.value)
    answering.set()
    r = c.send("inbox", b"a")  # the same call: a retry of seq 1, not a second message
    assert r.offset == 0
    assert store.applied_writes == 1
    assert {w for w in n1.writes()} == {(1, 1)}
    c.send("inbox", b"a")  # after an answer, the same call is a new write
    assert store.applied_writes == 2
    assert n1.writes()[-1] == (2, 2)


def test_a_retry_that_reaches_no_node_keeps_the_outcome_unknown_and_the_seq(fake_cluster, clients):
    store = FakeMailboxes()
    phase = ["apply silently"]

    def script(node: FakeNode, req: ClientRequest) -> Reply | None:
        if phase[0] == "apply silently":
            serve(store)(node, req)
            return None
        if phase[0] == "no leader":
            return answer_code("NO_LEADER")(node, req)
        return serve(store)(node, req)

    (n1,), cfg = fake_cluster(script)
    c = clients(cfg, timeout_s=0.5, attempt_timeout_s=0.2)
    with pytest.raises(OutcomeUnknown):
        c.send("inbox", b"a")
    phase[0] = "no leader"
    with pytest.raises(OutcomeUnknown):  # not Unavailable: the first attempt may have landed
        c.send("inbox", b"a")
    phase[0] = "serve"
    assert c.send("inbox", b"a").offset == 0  # still seq 1: applied once
    assert store.applied_writes == 1


def test_client_expired_says_to_use_a_new_client_id(fake_cluster, clients):
    (n1,), cfg = fake_cluster(refuse_with("CLIENT_EXPIRED"))
    c = clients(cfg)
    with pytest.raises(ClientExpired) as e:
        c.send("inbox", b"a")
    assert isinstance(e.value, OutcomeUnknown)
    assert "new client id" in str(e.value)
    assert len(n1.requests) == 1  # never retried


@pytest.mark.parametrize("code", ["BAD_MAILBOX", "NO_SUCH_MESSAGE", "TOO_LARGE"])
def test_store_refusals_are_rejected_at_once(fake_cluster, clients, code):
    (n1, n2), cfg = fake_cluster(refuse_with(code), refuse_with(code))
    c = clients(cfg)
    with pytest.raises(Rejected) as e:
        c.delete("inbox", [3])
    assert e.value.code == code
    assert code in str(e.value) and "\n" not in str(e.value)
    assert len(n1.requests) + len(n2.requests) == 1


def test_after_a_store_refusal_low_leaves_1(fake_cluster, clients):
    store = FakeMailboxes()
    (n1,), cfg = fake_cluster(refuse_with("BAD_MAILBOX"))
    c = clients(cfg)
    with pytest.raises(Rejected):
        c.send("box", b"a")  # the store refused it and kept the answer: it knows the client now
    n1.script = serve(store)
    store.known.add(c.client_id)
    c.send("inbox", b"b")
    assert n1.writes() == [(1, 1), (2, 2)]


def test_errors_are_zrep_errors():
    for cls in (Unavailable, OutcomeUnknown, ClientExpired, Rejected):
        assert issubclass(cls, ZrepError)


# ================================================================ reads, status, watch


def test_read_parses_messages_and_picks_the_op(fake_cluster, clients):
    store = FakeMailboxes()
    for i in range(5):
        store.add("inbox", f"m{i}".encode(), sender="s")
    (n1,), cfg = fake_cluster(serve(store))
    c = clients(cfg)
    got = c.read("inbox", after=1, limit=2)
    assert got.messages == [Message(2, "s", b"m2", 3), Message(3, "s", b"m3", 4)]
    assert (got.applied, got.node) == (5, 1)
    c.read("inbox", stale=True)
    assert [r.op for r in n1.requests] == ["read", "stale_read"]


def test_a_read_nobody_answers_is_unavailable_not_unknown(fake_cluster, clients):
    _, cfg = fake_cluster(silent, silent)
    c = clients(cfg, timeout_s=0.5, attempt_timeout_s=0.2)
    with pytest.raises(Unavailable):
        c.read("inbox")


def test_status_asks_every_node_in_parallel(fake_cluster, clients, tmp_path):
    def status(node: FakeNode, req: ClientRequest) -> Reply:
        peers = [{"id": 2, "heard_ms_ago": 1500, "rpc": ""}, {"id": 3, "heard_ms_ago": None, "rpc": ""}]
        return Reply(ok_reply(req.req_id, {"id": 1, "role_name": "leader", "role": 3, "epoch": 4, "leader": 1,
                                           "last_index": 9, "commit": 8, "applied": 7, "store_applied": 7,
                                           "peers": peers}))

    (n1, n2), _ = fake_cluster(status, silent)
    cfg = config_for([n1, n2], tmp_path, {3: closed_port_address()})
    c = clients(cfg)
    start = time.monotonic()
    rows = c.status(timeout_s=0.5)
    assert time.monotonic() - start < 0.9  # one timeout for all, not one per node
    assert [(r.id, r.up) for r in rows] == [(1, True), (2, False), (3, False)]
    up = rows[0]
    assert (up.role, up.epoch, up.leader, up.last_index, up.commit, up.applied) == ("leader", 4, 1, 9, 8, 7)
    assert up.address == n1.address
    assert [r.last_heard_ms for r in rows] == [None, 1500, None]  # as node 1 hears its peers
    assert "no answer" in rows[1].error and "connect" in rows[2].error


def test_watch_crosses_the_death_of_its_node_without_gap_or_repeat(fake_cluster, clients):
    store = FakeMailboxes()
    for i in range(150):  # more than one page
        store.add("inbox", f"m{i}".encode())
    (n1, n2), cfg = fake_cluster(serve(store), serve(store))
    c = clients(cfg, timeout_s=3.0, attempt_timeout_s=0.3)
    seen: list[int] = []
    stream = c.watch("inbox", after=9, poll_s=0.02)
    for m in stream:
        seen.append(m.offset)
        if m.offset == 149:
            break
    assert seen == list(range(10, 150))
    n1.kill()  # the node it follows dies; the cluster goes on
    for i in range(150, 160):
        store.add("inbox", f"m{i}".encode())
    for m in stream:
        seen.append(m.offset)
        if m.offset == 159:
            break
    stream.close()
    assert seen == list(range(10, 160))
    assert any(r.op == "read" for r in n2.requests)


def test_close_is_idempotent_and_a_closed_client_refuses_work(fake_cluster):
    _, cfg = fake_cluster(serve(FakeMailboxes()))
    with Client(cfg) as c:
        c.send("inbox", b"a")
    c.close()
    with pytest.raises(ZrepError):
        c.send("inbox", b"b")


# ================================================================ send_many


def test_send_many_sends_one_batch_with_consecutive_seqs_and_returns_receipts_in_order(fake_cluster, clients):
    store = FakeMailboxes()
    (n1,), cfg = fake_cluster(serve(store))
    c = clients(cfg, client_id="bulk")
    first = c.send_many("box", [f"m{i}" for i in range(50)], sender="me")
    assert [r.offset for r in first] == list(range(50)) and all(r.mailbox == "box" for r in first)
    assert [type(f).__name__ for f in n1.frames] == ["ClientBatch"]
    assert n1.writes() == [(seq, 1) for seq in range(1, 51)]  # a new client id: low stays 1
    second = c.send_many("box", [b"x", b"y"])
    assert [r.offset for r in second] == [50, 51] and c.seq == 52
    assert n1.writes()[50:] == [(51, 51), (52, 51)]  # low: the first seq of the call
    assert c.send_many("box", []) == []
    assert store.applied_writes == 52


def test_send_many_retries_only_the_unanswered_with_the_same_seqs_exactly_once(fake_cluster, clients):
    store = FakeMailboxes()
    answered: set[int] = set()

    def odd_ones_only_at_first(node: FakeNode, request: ClientRequest) -> Reply | None:
        seq = request.args["seq"]
        if seq % 2 == 0 and seq not in answered:
            answered.add(seq)
            store.write(request.args)  # applied, but the answer is lost
            return None
        return Reply(node_reply(request.req_id, store.write(request.args)))

    (n1,), cfg = fake_cluster(odd_ones_only_at_first)
    c = clients(cfg, client_id="retry", timeout_s=0.5, attempt_timeout_s=0.2)
    bodies = [f"b{i}" for i in range(1, 11)]
    # Within one call, the next attempt re-sends only the five unanswered writes.
    got = c.send_many("box", bodies)
    assert [r.offset for r in got] == list(range(10))
    seqs = [r.args["seq"] for r in n1.requests]
    assert seqs[:10] == list(range(1, 11)) and sorted(seqs[10:15]) == [2, 4, 6, 8, 10]
    assert store.applied_writes == 10

    # A node that never answers: OutcomeUnknown with the receipts so far; the same call retries.
    answered.clear()
    c2 = clients(cfg, client_id="retry2", timeout_s=0.5, attempt_timeout_s=0.2)
    n1.script = lambda node, req: (None if req.args["seq"] % 2 == 0 else
                                   Reply(node_reply(req.req_id, store.write(req.args))))
    with pytest.raises(OutcomeUnknown) as e:
        c2.send_many("box2", bodies)
    assert [r is not None for r in e.value.receipts] == [True, False] * 5
    n1.requests.clear()
    n1.script = serve(store)
    got = c2.send_many("box2", bodies)  # the retry: same seqs, only the unanswered
    assert sorted(r.args["seq"] for r in n1.requests) == [2, 4, 6, 8, 10]
    assert [r.offset for r in got] == [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]  # odd seqs stored first, then the retried
    assert [m[2] for m in store.boxes["box2"]] == [b.encode() for b in bodies[0::2] + bodies[1::2]]
    assert c2.seq == 10


def test_a_bad_mailbox_name_is_refused_here_with_the_real_rule_and_sends_nothing(fake_cluster, clients):
    (n1,), cfg = fake_cluster(serve(FakeMailboxes()))
    c = clients(cfg)
    for name in ("", "x" * 256, "é" * 128, "a*b", "tab\there"):
        with pytest.raises(Rejected, match=r"1\.\.255 UTF-8 bytes"):
            c.send(name, b"x")
    with pytest.raises(Rejected, match=r"1\.\.255 UTF-8 bytes"):
        c.read("")
    assert n1.requests == [] and c.seq == 0
    c.send("x" * 255, b"x")  # the longest name the store takes


def test_every_node_refusing_the_connection_fails_fast(tmp_path, clients):
    dead = config_for([], tmp_path, {i: closed_port_address() for i in (1, 2, 3)})
    for call in (lambda c: c.send("box", b"x"), lambda c: c.read("box"), lambda c: c.send_many("box", [b"x"])):
        started = time.monotonic()
        with pytest.raises(Unavailable, match="cannot connect to any node"):
            call(clients(dead, timeout_s=10.0))
        assert time.monotonic() - started < 3.0  # three connect waits, not the 10 s timeout


def test_send_many_refusals_and_a_dead_cluster(fake_cluster, clients, tmp_path):
    store = FakeMailboxes()
    (n1,), cfg = fake_cluster(refuse_with("BAD_MAILBOX"))
    c = clients(cfg)
    with pytest.raises(Rejected) as e:
        c.send_many("box", ["x", "y"])  # the fake store refuses it
    assert e.value.code == "BAD_MAILBOX" and e.value.receipts == [None, None]
    with pytest.raises(Rejected, match="limit") as e:
        c.send_many("box", [b"x" * (cfg.max_body_bytes + 1)])
    assert e.value.code == "TOO_LARGE"
    assert c.seq == 2  # the local refusal spent no seq
    dead = config_for([], tmp_path, {1: closed_port_address()})
    with pytest.raises(Unavailable):
        clients(dead, timeout_s=0.5).send_many("box", ["x"])


# ================================================================ the asyncio client (zrep.aio)


def run_aio(config: ClusterConfig, body: Callable[[AioClient], Any], **kw: Any) -> Any:
    """Run `await body(client)` in a fresh event loop with a test-timeout asyncio client."""
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("attempt_timeout_s", 0.3)

    async def main() -> Any:
        async with AioClient(config, **kw) as c:
            return await body(c)

    return asyncio.run(main())


def test_aio_concurrent_sends_each_get_a_seq_and_low_stays_at_the_oldest_in_flight(fake_cluster):
    store = FakeMailboxes()
    (leader,), config = fake_cluster(serve(store))

    async def body(c: AioClient) -> list[Receipt]:
        return await asyncio.gather(*(c.send("box", f"m{i}") for i in range(50)))

    receipts = run_aio(config, body)
    assert sorted(r.offset for r in receipts) == list(range(50)) and store.applied_writes == 50
    writes = leader.writes()
    assert sorted(seq for seq, _ in writes) == list(range(1, 51))
    assert all(low == 1 for seq, low in writes if seq <= 50)  # all started before the first answer
    bodies = {bytes(b) for _, _, b, _ in store.boxes["box"]}
    assert bodies == {f"m{i}".encode() for i in range(50)}


def test_aio_low_never_passes_a_write_still_in_flight(fake_cluster):
    store = FakeMailboxes()
    held = threading.Event()

    def slow_first(node: FakeNode, request: ClientRequest) -> Reply | None:
        answer = serve(store)(node, request)
        return Reply(answer.reply, 0.5) if request.args.get("body") == b"slow" else answer

    (leader,), config = fake_cluster(slow_first)

    async def body(c: AioClient) -> None:
        await c.send("box", "first")  # the store knows the client id from now on
        slow = asyncio.create_task(c.send("box", "slow"))
        await asyncio.sleep(0.05)
        await asyncio.gather(*(c.send("box", f"f{i}") for i in range(5)))
        held.set()
        await slow

    run_aio(config, body)
    writes = dict(leader.writes())
    assert writes[2] == 2  # the slow one
    assert all(writes[seq] == 2 for seq in range(3, 8)), writes  # never past seq 2 while it was in flight


def test_aio_a_reply_goes_to_the_call_that_sent_it_and_not_leader_is_followed(fake_cluster):
    store = FakeMailboxes()
    (_, leader), config = fake_cluster(redirect_to(2), serve(store))

    async def body(c: AioClient) -> list[Receipt]:
        return await asyncio.gather(*(c.send(f"box{i % 3}", f"m{i}") for i in range(30)))

    receipts = run_aio(config, body)
    assert [r.mailbox for r in receipts] == [f"box{i % 3}" for i in range(30)]
    for i, r in enumerate(receipts):
        assert store.boxes[r.mailbox][r.offset][2] == f"m{i}".encode()
    assert store.applied_writes == 30


def test_aio_outcome_unknown_and_the_same_call_retries_it_exactly_once(fake_cluster):
    store = FakeMailboxes()
    mode = {"silent": True}

    def flaky(node: FakeNode, request: ClientRequest) -> Reply | None:
        answer = serve(store)(node, request)  # applied even when the answer is lost
        return None if mode["silent"] else answer

    (node,), config = fake_cluster(flaky)

    async def body(c: AioClient) -> Receipt:
        with pytest.raises(OutcomeUnknown):
            await c.send("box", "once")
        mode["silent"] = False
        return await c.send("box", "once")

    receipt = run_aio(config, body, timeout_s=1.0)
    assert receipt.offset == 0 and store.applied_writes == 1
    assert {seq for seq, _ in node.writes()} == {1}


def test_aio_a_cancelled_send_is_retried_by_the_same_call_exactly_once(fake_cluster):
    store = FakeMailboxes()
    mode = {"silent": True}

    def flaky(node: FakeNode, request: ClientRequest) -> Reply | None:
        answer = serve(store)(node, request)  # applied even when the answer is lost
        return None if mode["silent"] else answer

    (node,), config = fake_cluster(flaky)

    async def body(c: AioClient) -> Receipt:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.send("box", "once"), 0.2)  # cancelled after its request left
        mode["silent"] = False
        await c.send("box", "other")  # another write meanwhile does not make the first one's seq stale
        return await c.send("box", "once")

    receipt = run_aio(config, body)
    assert receipt.offset == 0 and store.applied_writes == 2
    assert [seq for seq, _ in node.writes()].count(1) >= 2  # the retry carried the cancelled call's seq


def test_aio_read_watch_mailboxes_status_and_errors(fake_cluster, tmp_path):
    store = FakeMailboxes()
    for i in range(3):
        store.add("feed", f"old{i}".encode())
    (_, _), config = fake_cluster(serve(store), serve(store))

    async def body(c: AioClient) -> tuple[Any, ...]:
        got = await c.read("feed", after=0)
        seen: list[Message] = []
        stream = c.watch("feed", after=1, poll_s=0.01)
        async for m in stream:
            seen.append(m)
            if len(seen) == 1:
                store.add("feed", b"new")
            if len(seen) == 2:
                break
        await stream.aclose()
        rows = await c.status(timeout_s=0.5)
        with pytest.raises(Rejected):
            await c.read("feed", limit=0)
        return got, seen, rows

    got, seen, rows = run_aio(config, body)
    assert [m.body for m in got.messages] == [b"old1", b"old2"]
    assert [(m.offset, m.body) for m in seen] == [(2, b"old2"), (3, b"new")]
    assert [(r.id, r.up) for r in rows] == [(1, True), (2, True)]  # the fakes answer status with an error
    closed = closed_port_address()
    dead = config_for([], tmp_path, {1: closed})
    with pytest.raises(Unavailable):
        run_aio(dead, lambda c: c.send("box", "x"), timeout_s=0.5)


# ================================================================ a real cluster (tests/harness.py)


def test_the_library_against_a_real_cluster(cluster):
    cluster.wait_for_leader()
    with Client(cluster.config_path, timeout_s=10.0) as c:
        receipts = [c.send("inbox", f"m{i}", sender="tester") for i in range(3)]
        assert [r.offset for r in receipts] == [0, 1, 2]
        assert receipts[0].index < receipts[1].index < receipts[2].index
        assert all(r.epoch >= 1 and r.mailbox == "inbox" for r in receipts)
        every = c.send("inbox", "to all", ack="all")
        assert every.all_durable is True and every.durable_on == [1, 2, 3]
        got = c.read("inbox")
        assert [(m.offset, m.sender, m.body) for m in got.messages] == [
            (0, "tester", b"m0"), (1, "tester", b"m1"), (2, "tester", b"m2"), (3, "", b"to all")]
        assert got.applied >= every.index
        stale = c.read("inbox", stale=True)
        assert stale.messages == got.messages[: len(stale.messages)]  # may lag, never differs
        assert c.mailboxes() == [MailboxInfo("inbox", 4, bytes=len("m0m1m2") + len("to all"))]
        assert c.delete("inbox", [0, 2]) == [0, 2]
        assert [m.offset for m in c.read("inbox").messages] == [1, 3]
        with pytest.raises(Rejected) as e:
            c.delete("inbox", [0])
        assert e.value.code == "NO_SUCH_MESSAGE"
        rows = c.status()
        assert [(r.id, r.up) for r in rows] == [(1, True), (2, True), (3, True)]
        leaders = {r.leader for r in rows}
        assert len(leaders) == 1 and [r.role for r in rows].count("leader") == 1


def test_watch_follows_through_node_and_leader_kills_with_no_gap_and_no_repeat(cluster):
    leader = cluster.wait_for_leader()
    total = 60
    receipts: list[Receipt] = []
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with Client(cluster.config_path, timeout_s=20.0) as w:
                for i in range(total):
                    receipts.append(w.send("feed", f"m{i}"))
                    time.sleep(0.02)
        except BaseException as e:  # surfaced by the main thread
            failures.append(e)

    writer = threading.Thread(target=write, daemon=True)
    seen: list[Message] = []
    killed: list[int] = []
    with Client(cluster.config_path, timeout_s=15.0, attempt_timeout_s=0.5) as watcher:
        stream = watcher.watch("feed", poll_s=0.02)
        writer.start()
        for m in stream:
            seen.append(m)
            if len(seen) == 10:  # the node this watcher reads from dies
                followed = watcher.preferred_node
                cluster.kill(followed)
                killed.append(followed)
            if len(seen) == 25 and killed[0] != leader:  # bring it back, then the leader dies
                cluster.start(killed[0])
                cluster.kill(leader)
                killed.append(leader)
            if len(seen) == total or failures:
                break
        stream.close()
    writer.join(30)
    assert not failures, failures
    assert leader in killed, killed
    assert [m.offset for m in seen] == list(range(total))
    assert [m.body for m in seen] == [f"m{i}".encode() for i in range(total)]
    assert [r.offset for r in receipts] == list(range(total))  # every write applied exactly once


def test_send_many_through_a_leader_kill_stores_every_acknowledged_message_exactly_once(cluster):
    leader = cluster.wait_for_leader()
    calls, per_call = 30, 100
    receipts: dict[bytes, Receipt] = {}
    failures: list[BaseException] = []
    done = threading.Event()
    progress = [0]

    def write() -> None:
        try:
            with Client(cluster.config_path, timeout_s=20.0, attempt_timeout_s=0.5) as w:
                for k in range(calls):
                    bodies = [f"c{k}-m{i}".encode() for i in range(per_call)]
                    for _ in range(5):  # OutcomeUnknown: the same call again retries the unanswered ones
                        try:
                            got = w.send_many("bulk", bodies)
                            break
                        except OutcomeUnknown:
                            continue
                    else:
                        raise AssertionError(f"call {k} never succeeded")
                    receipts.update(zip(bodies, got))
                    progress[0] = k + 1
        except BaseException as e:  # surfaced by the main thread
            failures.append(e)
        finally:
            done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.monotonic() + 30
    while progress[0] < 5 and not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.005)
    cluster.kill(leader)  # with a batch in flight, most likely
    assert done.wait(60), "send_many did not finish"
    assert not failures, failures
    assert len(receipts) == calls * per_call
    rows = cluster.read("bulk")
    bodies = [body for _, _, body, _ in rows]
    assert len(bodies) == len(set(bodies)) == calls * per_call, "a message stored twice or lost"
    at = {offset: body for offset, _, body, _ in rows}
    assert all(at[r.offset] == body for body, r in receipts.items())


def test_send_many_of_more_writes_than_the_store_keeps_answers_for(cluster):
    """The store keeps at most 4,096 answers per client: a bigger call goes in windows,
    each raising `low` past the one before, so no write is refused TOO_MANY_IN_FLIGHT."""
    cluster.wait_for_leader()
    bodies = [f"w{i}".encode() for i in range(5000)]
    with Client(cluster.config_path, timeout_s=30.0) as c:
        got = c.send_many("windows", bodies)
    assert [r.offset for r in got] == list(range(5000))
    assert [body for _, _, body, _ in cluster.read("windows")] == bodies


def test_aio_1000_concurrent_sends_through_a_leader_kill_none_lost_or_duplicated(cluster):
    """One event loop, 1,000 concurrent send calls (their first attempts spread over 1.5 s),
    the leader killed after the first 200 answers: every send returns a receipt, some
    land in the new leader's epoch, and the mailbox holds each body exactly once."""
    leader = cluster.wait_for_leader()
    total, spread_s = 1000, 1.5
    bodies = [f"a{i}".encode() for i in range(total)]

    async def main() -> dict[bytes, Receipt]:
        async with AioClient(cluster.config_path, timeout_s=30.0, attempt_timeout_s=0.5) as c:
            finished = [0]
            in_flight: list[int] = []

            async def one(i: int, body: bytes) -> Receipt:
                await asyncio.sleep(i * spread_s / total)  # all in flight at once, sends spread over time
                for _ in range(5):  # OutcomeUnknown: the same call again retries it, exactly once
                    try:
                        receipt = await c.send("many", body)
                        break
                    except OutcomeUnknown:
                        continue
                else:
                    raise AssertionError(f"{body!r} never succeeded")
                finished[0] += 1
                if finished[0] == total // 5:  # the leader dies while the others are in flight
                    in_flight.append(total - finished[0])
                    cluster.kill(leader)
                return receipt

            receipts = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
            assert in_flight and in_flight[0] > 100, f"only {in_flight} sends were in flight at the kill"
            return dict(zip(bodies, receipts))

    receipts = asyncio.run(main())
    assert len(receipts) == total
    rows = cluster.read("many")
    stored = [body for _, _, body, _ in rows]
    assert len(stored) == len(set(stored)) == total, "a message stored twice or lost"
    at = {offset: body for offset, _, body, _ in rows}
    assert all(at[r.offset] == body for body, r in receipts.items())
    assert len({r.epoch for r in receipts.values()}) >= 2, "no send crossed the failover"
