"""Random and mutated frames at every port of running nodes, plain and CURVE, authenticated and not.

Issue 16 item 7: whatever arrives, the node keeps serving, its memory stays
bounded, and nothing acknowledged changes. Each run is bounded in count and
time and seeded (a failure names its seed); raw TCP bytes go to the RPC and
PUB ports too, and an expansion bomb is among the frames.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
import zmq

from harness import LocalCluster
from zrep.client import Client
from zrep.core.messages import Append, AppendAck, Election, Entry, Heartbeat, Promise
from zrep.security.keys import load_secret
from zrep.security.zap import curve_client
from zrep.wire.client_messages import ClientBatch, ClientRequest, Op
from zrep.wire.codec import encode

FRAMES = 1500
RSS_LIMIT_MB = 400  # a node serving this test holds well under 100 MB; an expanded bomb would not


def _valid_frames() -> list[bytes]:
    send = ClientRequest(1, Op.SEND, {"client": "fz", "seq": 1, "low": 1, "ack": "majority", "sender": "",
                                      "to": "fuzz", "body": b"x" * 50})
    return [encode(send), encode(ClientBatch((send,))),
            encode(ClientRequest(2, Op.READ, {"mailbox": "fuzz", "after": -1, "limit": 10})),
            encode(Election(2, 1, 9, 9, 9, True)), encode(Promise(2, 1, 9, True)),
            encode(AppendAck(2, 1, 9, True, 5, 1, 0)), encode(Heartbeat(2, 0, 9, 2, 2, 9, 9, 9)),
            encode(Append(2, 1, 9, 0, 0, (Entry(9, 1, b"evil"),), 1, 1))]


def _mutations(rng: random.Random, count: int) -> list[list[bytes]]:
    valid = _valid_frames()
    bomb = bytes((1, 66)) + b"\xdd" + (4_000_000).to_bytes(4, "big") + b"\xc0" * 4_000_000
    out: list[list[bytes]] = [[bomb]]
    for _ in range(count):
        base = bytearray(rng.choice(valid))
        kind = rng.randrange(6)
        if kind == 0:  # random bytes
            frame = rng.randbytes(rng.randrange(0, 300))
        elif kind == 1:  # flip some bytes
            for _ in range(rng.randrange(1, 6)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            frame = bytes(base)
        elif kind == 2:  # cut short
            frame = bytes(base[: rng.randrange(len(base))])
        elif kind == 3:  # trailing garbage
            frame = bytes(base) + rng.randbytes(rng.randrange(1, 50))
        elif kind == 4:  # a valid header on a random body
            frame = bytes(base[:2]) + rng.randbytes(rng.randrange(0, 200))
        else:  # extra parts
            out.append([bytes(base), rng.randbytes(10)])
            continue
        out.append([frame])
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fuzz(c: LocalCluster, seed: int, curve: tuple[bytes, bytes] | None) -> None:
    rng = random.Random(seed)
    ctx = zmq.Context()
    try:
        for node in c.ids:
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.setsockopt(zmq.SNDHWM, 100_000)
            if curve is not None:
                curve_client(s, *curve, c.cfg.security.node_keys[node][0])
            s.connect(c.rpc(node))
            for parts in _mutations(rng, FRAMES // len(c.ids)):
                try:
                    s.send_multipart(parts, zmq.NOBLOCK)
                except zmq.Again:
                    pass
            for endpoint in (c.rpc(node), c.cfg.node(node).pub):  # raw TCP on both ports
                host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=5) as raw:
                    raw.sendall(rng.randbytes(2000))
            # drain whatever answers came, so nothing blocks
            while s.poll(200):
                s.recv_multipart()
            s.close()
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "curve"])
def test_fuzzed_ports_leave_every_node_serving_with_bounded_memory(tmp_path: Path, secure: bool) -> None:
    with LocalCluster(tmp_path, secure=secure) as c:
        c.wait_for_leader(20)
        key = c.client_key
        with Client(c.config_path, key=key, timeout_s=15) as client:
            before = client.send("kept", b"acknowledged before the fuzz")
        curve = None
        if secure:  # authenticated fuzz: a listed client key sends the garbage through CURVE
            pair = load_secret(key)
            curve = (pair.public, pair.secret)
        _fuzz(c, seed=1600 + int(secure), curve=curve)
        with Client(c.config_path, key=key, timeout_s=15) as client:
            client.send("kept", b"after the fuzz")
            bodies = [m.body for m in client.read("kept").messages]
        assert bodies == [b"acknowledged before the fuzz", b"after the fuzz"] and before.offset == 0
        for node in c.ids:
            assert c.running(node) and _rss_mb(c.procs[node].pid) < RSS_LIMIT_MB
        assert c.unexpected_exits() == []
