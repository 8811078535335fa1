"""The transport's drain: every waiting frame is read, in order, at most `budget` per call;
a drain ends when the socket says nothing more waits (ZMQ_EVENTS), and a drain of a socket
that turned out empty returns nothing rather than raising."""

from __future__ import annotations

import time

import zmq
from test_transport_monitor import two_nodes

from zrep.node.transport import Transport
from zrep.wire.client_messages import ClientRequest
from zrep.wire.codec import encode

FRAMES = 40
BUDGET = 7


def test_a_drain_reads_every_waiting_frame_in_order_within_its_budget(tmp_path):
    cfg = two_nodes(tmp_path)
    node = Transport(cfg, 1)
    ctx = zmq.Context()
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    try:
        client.connect(cfg.node(1).rpc)
        for req_id in range(1, FRAMES + 1):
            client.send(encode(ClientRequest(req_id, "status", {})))
        got: list[int] = []
        calls, most = 0, 0
        deadline = time.monotonic() + 10
        while len(got) < FRAMES and time.monotonic() < deadline:
            ready = node.poll(20)
            peer, clients = node.drain(ready, BUDGET)
            calls += bool(clients)
            most = max(most, len(clients))
            assert peer == [] and len(clients) <= BUDGET
            got += [req.req_id for _, req, batched in clients if not batched]
        assert got == list(range(1, FRAMES + 1))
        assert calls >= FRAMES // BUDGET  # the budget held on every call
        assert most > 1  # a drain goes on past its first frame while more wait (all 40 were sent first)
        # The router said it was ready, but nothing waits now: the drain returns empty.
        assert node.drain([node._router], BUDGET) == ([], [])
    finally:
        client.close(linger=0)
        ctx.term()
        node.close()
