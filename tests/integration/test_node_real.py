"""Real node processes on loopback: replication, failover, crash recovery, bad frames.

Every wait polls with a deadline (tests/harness.py); bounds are generous
because the machine is shared, the happy path is quick. Each test checks
the promise it names against what the nodes serve over the wire.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections import Counter
from typing import Any, Callable

import msgpack
import pytest
import zmq
from harness import LocalCluster, wait_until

from zrep.config import write_config
from zrep.core.messages import Append, Entry, Heartbeat, Role
from zrep.node.start import EXIT_CORRUPT_LOG, EXIT_OK
from zrep.node.transport import peer_identity
from zrep.storage.wal_format import Scan, encode_record
from zrep.wire.client_messages import ClientReply, ClientRequest, Code
from zrep.wire.codec import decode, encode

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., LocalCluster]
Acked = dict[bytes, tuple[str, int]]  # body -> (mailbox, offset)


def send_args(client: str, seq: int, to: str, body: bytes, low: int | None = None) -> dict[str, Any]:
    return {"client": client, "seq": seq, "low": low or seq, "ack": "majority", "sender": client, "to": to,
            "body": body}


def send_seq(c: LocalCluster, client: str, seqs: range, box: Callable[[int], str], acked: Acked,
             via: Callable[[int], int | None] = lambda i: None) -> None:
    for seq in seqs:
        body = f"{client}-{seq}".encode()
        r = c.send(client, seq, box(seq), body, sender=client, first=via(seq))
        acked[body] = (r["mailbox"], r["offset"])


def assert_exactly_once(c: LocalCluster, acked: Acked, node: int | None = None) -> None:
    """Every acknowledged body is at its acknowledged (mailbox, offset), and no body twice."""
    for box in sorted({m for m, _ in acked.values()}):
        rows = c.read(box, node=node)
        counts = Counter(body for _, _, body, _ in rows)
        twice = [b for b, n in counts.items() if n > 1]
        assert not twice, f"{box}: applied more than once: {twice[:5]}"
        at = {offset: body for offset, _, body, _ in rows}
        for body, (mailbox, offset) in acked.items():
            if mailbox == box:
                assert at.get(offset) == body, f"acknowledged {body!r} not at {box}@{offset}"


def pipelined_sends(c: LocalCluster, node: int, client: str, seqs: range, box: str) -> list[ClientReply | None]:
    low = seqs[0]
    reqs = [("send", send_args(client, s, box, f"{client}-{s}".encode(), low)) for s in seqs]
    return c.pipeline(node, reqs)


# ------------------------------------------------------------------ replication


def test_300_sends_through_every_node_are_served_in_one_order(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    c.wait_for_leader(15)
    acked: Acked = {}
    boxes = ("a", "b", "c")
    # Three clients, one per node, each pipelining batches through its node: the
    # followers forward, the leader batches; all must agree on one order.
    for batch in range(4):
        for node in c.ids:
            client = f"via{node}"
            seqs = range(batch * 25 + 1, batch * 25 + 26)
            replies = pipelined_sends(c, node, client, seqs, boxes[node - 1])
            for seq, reply in zip(seqs, replies):
                body = f"{client}-{seq}".encode()
                if reply is None or not reply.ok:  # a lost race is retried, same (client, seq)
                    result = c.send(client, seq, boxes[node - 1], body, sender=client, first=node)
                else:
                    result = reply.result
                acked[body] = (result["mailbox"], result["offset"])
    assert len(acked) == 300
    digest = c.wait_converged(15, min_applied=301)
    for box in boxes:
        served = {i: c.read(box, node=i) for i in c.ids}
        stale = {i: c.read(box, node=i, stale=True) for i in c.ids}
        assert len(served[1]) == 100
        assert served[1] == served[2] == served[3] == stale[1] == stale[2] == stale[3]
    assert_exactly_once(c, acked)
    assert set(c.digests().values()) == {(digest, c.status(1)["store_applied"])}


def test_three_nodes_on_their_own_loopback_addresses(make_cluster: MakeCluster) -> None:
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    c = make_cluster(hosts=hosts)
    c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "hosts", range(1, 31), lambda s: "box", acked, via=lambda s: (s % 3) + 1)
    c.wait_converged(15)
    assert_exactly_once(c, acked)
    # Peer connections must leave from the node's own address (per-pair fault injection).
    conns = established_tcp()
    for i in c.ids:
        for j in c.ids:
            if i != j:
                _, port = c.rpc(j).rsplit(":", 1)
                assert (hosts[i - 1], hosts[j - 1], int(port)) in conns, f"no {i}->{j} connection from {hosts[i - 1]}"


def established_tcp() -> set[tuple[str, str, int]]:
    """(local ip, remote ip, remote port) of established IPv4 TCP connections, also
    those on dual-stack IPv6 sockets (IPv4-mapped addresses in /proc/net/tcp6)."""
    mapped = "0000000000000000FFFF0000"

    def ip(hex_ip: str) -> str | None:
        if len(hex_ip) == 32:
            if not hex_ip.startswith(mapped):
                return None
            hex_ip = hex_ip[len(mapped):]
        return ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))

    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, remote, state = line.split()[1:4]
                lip, (rip, rport) = ip(local.split(":")[0]), remote.split(":")
                if state == "01" and lip is not None and ip(rip) is not None:
                    out.add((lip, ip(rip), int(rport, 16)))
    return out


# ------------------------------------------------------------------ failures


def test_leader_killed_while_sending_loses_nothing_and_fails_over_fast(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    old = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "k", range(1, 41), lambda s: "box", acked)
    # Twenty requests in flight at the leader when it dies.
    in_flight = range(41, 61)
    pipelined_sends_nowait(c, old, "k", in_flight, "box")
    killed_at = time.monotonic()
    c.kill(old)
    survivors = [i for i in c.ids if i != old]
    new = c.wait_for_leader(10, nodes=survivors, not_=old)
    failover_s = time.monotonic() - killed_at
    assert failover_s < 3.0, f"new leader {new} after {failover_s:.2f}s"
    send_seq(c, "k", in_flight, lambda s: "box", acked)  # retries: same client and seq
    send_seq(c, "k", range(61, 101), lambda s: "box", acked)
    assert_exactly_once(c, acked)
    c.start(old)
    c.wait_converged(20)
    assert_exactly_once(c, acked, node=old)


def pipelined_sends_nowait(c: LocalCluster, node: int, client: str, seqs: range, box: str) -> None:
    sock = c._socket(node)
    for s in seqs:
        sock.send(encode(ClientRequest(next(c._req_ids), "send", send_args(client, s, box, f"{client}-{s}".encode(),
                                                                        seqs[0]))))


def test_killed_follower_catches_up_after_restart(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    lead = c.wait_for_leader(15)
    follower = next(i for i in c.ids if i != lead)
    acked: Acked = {}
    send_seq(c, "f", range(1, 11), lambda s: "box", acked)
    c.kill(follower)
    send_seq(c, "f", range(11, 111), lambda s: f"box{s % 2}", acked, via=lambda s: lead)
    before = c.status(lead)
    c.start(follower)
    digest = c.wait_converged(20, min_applied=before["commit"])
    st = c.status(follower)
    assert st["digest"] == digest and st["store_applied"] >= before["commit"]
    assert_exactly_once(c, acked, node=follower)


def test_kill_all_and_restart_all_keeps_every_acknowledged_write(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "all", range(1, 61), lambda s: f"box{s % 3}", acked, via=lambda s: (s % 3) + 1)
    # One clean stop (SIGTERM -> exit 0), the rest SIGKILLed.
    assert c.kill(1, signal.SIGTERM) == EXIT_OK
    assert "stopped" in c.node_log(1, last_life=True)
    for i in (2, 3):
        c.kill(i)
    c.start()
    c.wait_for_leader(15)
    assert_exactly_once(c, acked)
    send_seq(c, "all", range(61, 71), lambda s: "box0", acked)
    c.wait_converged(20)
    assert_exactly_once(c, acked)


def test_paused_leader_steps_down_and_nothing_diverges(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    old = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "p", range(1, 21), lambda s: "box", acked)
    pipelined_sends_nowait(c, old, "p", range(21, 31), "box")  # maybe taken, maybe not, before the pause
    c.pause(old)
    paused_at = time.monotonic()
    others = [i for i in c.ids if i != old]
    new = c.wait_for_leader(10, nodes=others, not_=old)
    send_seq(c, "p", range(21, 41), lambda s: "box", acked, via=lambda s: new)
    # Longer than the election timeout, for sure, before it wakes up.
    wait_until("the pause to outlast 3 election timeouts", lambda: time.monotonic() - paused_at > 1.5, 5)
    c.resume(old)
    new_epoch = c.status(new)["epoch"]

    def stepped_down() -> bool:
        st = c.statuses([old]).get(old)
        return bool(st) and st["role"] != Role.LEADER and st["leader"] == new and st["epoch"] >= new_epoch

    wait_until(f"old leader {old} to follow {new}", stepped_down, 10)
    send_seq(c, "p", range(41, 51), lambda s: "box", acked, via=lambda s: old)
    c.wait_converged(20)
    assert_exactly_once(c, acked)
    assert_exactly_once(c, acked, node=old)


def test_a_write_a_follower_holds_for_a_dead_leader_is_answered_once_a_new_leader_commits(
        make_cluster: MakeCluster) -> None:
    # The follower still trusts the leader it forwards to; the leader is gone.
    # Without a retry from the client, the follower proposes the write again
    # under the new leader and answers it (not TIMEOUT after 10 s).
    c = make_cluster()
    old = c.wait_for_leader(15)
    follower = next(i for i in c.ids if i != old)
    c.send("held", 1, "box", b"warm-up", sender="held")
    c.pause(old)
    started = time.monotonic()
    reply = c.request(follower, "send", send_args("held", 2, "box", b"held"), timeout=8)
    assert reply.ok, reply
    assert time.monotonic() - started < 8  # generous: an election is a few hundred ms
    new = c.wait_for_leader(10, nodes=[i for i in c.ids if i != old], not_=old)
    c.resume(old)
    c.wait_converged(20)
    rows = c.read("box", node=new)
    assert [body for _, _, body, _ in rows] == [b"warm-up", b"held"]  # once, in order


# ------------------------------------------------------------------ disks


def test_torn_wal_tails_are_cut_and_the_node_rejoins(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "t", range(1, 31), lambda s: "box", acked)
    c.wait_converged(15)
    f1, f2 = [i for i in c.ids if i != lead]
    # The first 16 bytes of a record after the last one, then the preallocated zeros
    # (a crash inside a write): the follower restarts alone while the others keep writing.
    c.kill(f1)
    data = c.wal_path(f1).read_bytes()
    records = list(Scan(data))
    end = records[-1][0] + len(encode_record(records[-1][1]))
    with open(c.wal_path(f1), "r+b") as wal:
        wal.seek(end)
        wal.write(encode_record(Entry(99, 10**6, b"never acknowledged"))[:16])
    c.start(f1)
    send_seq(c, "t", range(31, 41), lambda s: "box", acked, via=lambda s: lead)
    c.wait_converged(20)
    assert "torn tail of 16 bytes" in c.node_log(f1, last_life=True)
    # A record cut short (truncate -s -7), the follower again restarting alone
    # while the others keep writing. The cut entry was fsynced and acknowledged
    # (a real torn write never is): the leader must believe the follower's
    # shorter log and send the lost entries again.
    c.kill(f2)
    path = c.wal_path(f2)
    data = path.read_bytes()
    records = list(Scan(data))
    last = max(n for n, (_, rec) in enumerate(records) if isinstance(rec, Entry))
    end = records[last][0] + len(encode_record(records[last][1]))
    os.truncate(path, end - 7)  # inside the last ENTRY record, and whatever came after it
    c.start(f2)
    send_seq(c, "t", range(41, 51), lambda s: "box", acked, via=lambda s: lead)
    c.wait_converged(20)
    assert "torn tail" in c.node_log(f2, last_life=True)
    assert f"node {f2} lost entries" in c.node_log(lead)
    assert_exactly_once(c, acked)
    assert_exactly_once(c, acked, node=f2)


def test_mid_file_corruption_refuses_to_start_with_one_line(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "x", range(1, 21), lambda s: "box", acked)
    f = next(i for i in c.ids if i != lead)
    c.kill(f)
    path = c.wal_path(f)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x40  # inside the first record's body: valid records follow
    path.write_bytes(bytes(data))
    c.start(f)
    assert c.wait_exit(f, 15) == EXIT_CORRUPT_LOG
    lines = [ln for ln in c.node_log(f, last_life=True).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "corrupt record at byte" in lines[0] and "refusing to start" in lines[0]
    assert path.read_bytes() == bytes(data), "a corrupt log must be left as it is"
    send_seq(c, "x", range(21, 26), lambda s: "box", acked)  # the other two still serve
    assert_exactly_once(c, acked)


# ------------------------------------------------------------------ bad input


MAX_BODY = 1024
MAX_FRAME = 128 << 10


def test_garbage_and_oversized_frames_leave_every_node_serving(make_cluster: MakeCluster) -> None:
    # Node 4 is configured but never started: the test plays it, as a fake peer
    # on node 1's ROUTER and as the publisher the real nodes' SUBs connect to.
    c = make_cluster(nodes=4, start=False, max_body_bytes=MAX_BODY, max_frame_bytes=MAX_FRAME)
    found_without(c, 4)
    ctx = zmq.Context()
    try:
        check_client_garbage(c)
        check_fake_peer(c, ctx)
        check_fake_publisher(c, ctx)
        check_flood(c, ctx)
    finally:
        ctx.destroy(linger=0)
    acked: Acked = {}
    send_seq(c, "after", range(1, 11), lambda s: "box", acked, via=lambda s: (s % 3) + 1)
    assert_exactly_once(c, acked)
    assert all(c.running(i) for i in (1, 2, 3))


def found_without(c: LocalCluster, absent: int) -> None:
    """Nodes other than `absent` form the cluster from a cluster file without it (a provisional
    configuration needs every seed), then run with the full file: `absent` is a seed they link
    to (its PUB included), never a member."""
    full, others = c.cfg, [i for i in c.ids if i != absent]
    write_config(dataclasses.replace(full, nodes=tuple(n for n in full.nodes if n.id != absent)), c.config_path)
    c.reload_config()
    for i in others:
        c.start(i)  # first start: --init
    wait_until("the cluster formed", lambda: (st := c.statuses(others)) and len(st) == len(others) and all(
        not s["forming"] and s["config_index"] > 0 for s in st.values()), 15)
    for i in others:
        assert c.kill(i, signal.SIGTERM) == EXIT_OK
    write_config(full, c.config_path)
    c.reload_config()
    for i in others:
        c.start(i)  # not fresh: no flag
    c.wait_for_leader(15, nodes=others)

    def settled() -> bool:  # every node follows one leader, whose epoch's no-op every node applied
        st = c.statuses(others)
        return len(st) == len(others) and len({(s["epoch"], s["leader"]) for s in st.values()}) == 1 and all(
            s["leader"] and s["last_epoch"] == s["epoch"] and s["applied"] == s["last_index"] for s in st.values())

    wait_until("the restarted nodes to settle on one leader", settled, 15)


def _reply(frames: list[bytes] | None) -> ClientReply:
    assert frames is not None and len(frames) == 1, frames
    reply = decode(frames[0])
    assert isinstance(reply, ClientReply)
    return reply


def check_client_garbage(c: LocalCluster) -> None:
    cases: list[tuple[list[bytes], str, int]] = [
        ([b"garbage"], Code.BAD_REQUEST, 0),
        ([b""], Code.BAD_REQUEST, 0),
        ([bytes([1, 99]) + msgpack.packb([1])], Code.BAD_REQUEST, 0),  # unknown kind
        ([bytes([9, 64]) + msgpack.packb([5, "status", {}])], Code.BAD_REQUEST, 0),  # unknown version
        ([bytes([1, 64]) + msgpack.packb([7, "send", {"x": 1}])], Code.BAD_REQUEST, 7),  # bad args: id echoed
        ([bytes([1, 64]) + msgpack.packb([8, "status", {}]) + b"\x00"], Code.BAD_REQUEST, 0),  # trailing byte: unreadable
        ([encode(Heartbeat(2, 0, 1, 0, 0, 0, 0, 0))], Code.BAD_REQUEST, 0),  # a peer kind from a client
        ([encode(ClientRequest(9, "status", {})), b"extra"], Code.BAD_REQUEST, 0),  # two frames
        ([bytes([1, 64]) + bytes(MAX_FRAME + 1000)], Code.TOO_LARGE, 0),  # a little over the frame limit
    ]
    for frames, code, req_id in cases:
        reply = _reply(c.request_raw(1, frames))
        assert (reply.code, reply.req_id) == (code, req_id), (frames[0][:20], reply)
    big = c.request(1, "send", send_args("big", 1, "box", bytes(MAX_BODY + 1)))
    assert big.code == Code.TOO_LARGE, big
    bad_box = c.request(1, "send", send_args("badbox", 1, "a*b", b"x"), timeout=5)
    assert (bad_box.code, bad_box.result.get("reason")) == (Code.BAD_REQUEST, "BAD_MAILBOX"), bad_box
    # Far over the limit: libzmq drops the connection before buffering it (no reply),
    # and the node carries on.
    assert c.request_raw(1, [bytes([1, 64]) + bytes(4 * MAX_FRAME)], timeout=0.5) is None
    st = c.status(1)
    assert st["counters"]["client_bad"] >= 8 and st["counters"]["client_too_large"] >= 1


def check_fake_peer(c: LocalCluster, ctx: zmq.Context) -> None:
    fake = ctx.socket(zmq.DEALER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.setsockopt(zmq.ROUTING_ID, peer_identity(4))
    fake.connect(c.rpc(1))
    forming = bytes(8)  # a peer message is [cluster id, payload]; 0: a node not formed yet
    other = (c.status(1)["cluster_id"] ^ 1).to_bytes(8, "big")
    frames = [
        [forming, b"garbage"],  # undecodable
        [forming, bytes([1, 6]) + msgpack.packb([4, 1, 1, 0, 0, [], 0])],  # Append of the wrong arity
        [forming, encode(Heartbeat(2, 0, 99, int(Role.LEADER), 2, 0, 0, 0))],  # src 2 on node 4's connection
        [forming, encode(ClientRequest(1, "status", {}))],  # a client kind from a peer id
        [encode(Heartbeat(4, 0, 99, int(Role.LEADER), 4, 0, 0, 0))],  # no cluster id frame
        [other, encode(Heartbeat(4, 0, 99, int(Role.LEADER), 4, 0, 0, 0))],  # another cluster's node 4
    ]
    before = c.status(1)["counters"]
    for f in frames:
        fake.send_multipart(f)

    def counted() -> dict[str, int] | None:
        now = c.status(1)["counters"]
        kinds = ("peer_undecodable", "peer_spoofed", "peer_bad_parts", "peer_foreign_cluster")
        grew = {k: now[k] - before[k] for k in kinds}
        return grew if grew == dict(zip(kinds, (2, 2, 1, 1), strict=True)) else None

    wait_until("node 1 to drop and count the fake peer's frames", counted, 10)
    assert not fake.poll(100), "a peer's bad frame must not be answered"
    assert c.status(1)["epoch"] < 99, "a spoofed heartbeat must not reach the core"
    fake.close(0)


def check_fake_publisher(c: LocalCluster, ctx: zmq.Context) -> None:
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(c.cfg.node(4).pub)
    junk = [
        b"garbage",
        encode(Heartbeat(99, 0, 1, 0, 0, 0, 0, 0)),  # not a member
        encode(Heartbeat(4, 1, 1, 0, 0, 0, 0, 0)),  # a heartbeat is addressed to everyone (dst 0)
        encode(Append(4, 1, 1, 0, 0, (), 0, 0)),  # only heartbeats travel on PUB/SUB
    ]
    before = {i: c.status(i)["counters"]["sub_refused"] for i in (1, 2, 3)}

    def refused_everywhere() -> bool:
        for j in junk:  # the SUBs reconnect on their own schedule: publish until they hear it
            pub.send(j)
        now = {i: c.status(i)["counters"]["sub_refused"] for i in (1, 2, 3)}
        return all(now[i] - before[i] >= len(junk) for i in now)

    wait_until("every node to refuse the fake publisher's frames", refused_everywhere, 10, interval=0.1)
    pub.close(0)


FLOOD_FRAMES = 20_000


def check_flood(c: LocalCluster, ctx: zmq.Context) -> None:
    """A flood of bad frames at the leader must not starve its ticks: were its
    heartbeats late by an election timeout, the followers would elect another."""
    lead = c.wait_for_leader(10, nodes=[1, 2, 3])
    epoch = c.status(lead)["epoch"]
    before = c.status(lead)["counters"]["client_bad"]
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.SNDHWM, 0)  # queue the whole flood: its sender must not be the bottleneck
    flood.connect(c.rpc(lead))
    for k in range(FLOOD_FRAMES):
        flood.send(b"\x01\x40flood-%d" % k)

    def answered() -> bool:
        while flood.poll(0):
            flood.recv()  # drain the BAD_REQUEST replies, so the node's queue for us never fills
        return c.status(lead)["counters"]["client_bad"] - before >= FLOOD_FRAMES

    wait_until("the leader to answer the whole flood", answered, 60, interval=0.05)
    flood.close(0)
    after = c.statuses([1, 2, 3])
    assert {s["epoch"] for s in after.values()} == {epoch}, f"an election happened during the flood: {after}"
    assert {s["leader"] for s in after.values()} == {lead}


def test_a_paused_follower_does_not_suspect_the_leader_whose_messages_wait_for_it(make_cluster: MakeCluster) -> None:
    # The ticks a node missed while it did not read (a long turn, a pause) are not silence
    # of a leader whose heartbeats it reads in the same turn: no pre-vote, no new epoch.
    c = make_cluster()
    leader = c.wait_for_leader(15)
    follower = next(i for i in c.ids if i != leader)
    epoch = c.status(leader)["epoch"]
    before = len(c.node_log(follower, last_life=True))
    c.pause(follower)
    paused_at = time.monotonic()
    wait_until("the pause to outlast 3 election timeouts", lambda: time.monotonic() - paused_at > 1.0, 5)
    c.resume(follower)
    # Its first turn reads what waited (the leader's heartbeats and appends) and runs the
    # missed ticks; it answers this status only after that turn.
    wait_until("the follower to answer again", lambda: c.statuses([follower]).get(follower) is not None, 10)
    since = c.node_log(follower, last_life=True)[before:]
    assert "suspects leader" not in since, since
    assert c.status(leader)["epoch"] == epoch and c.status(follower)["leader"] == leader
