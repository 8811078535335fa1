"""Real node processes answering ClientBatch frames: each request of a batch is
served as a single one would be (exactly once by (client, seq), one bad request
refused alone), replies come back in ClientReplies frames matched by req_id,
and malformed batches are answered while the node keeps serving."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import msgpack
import pytest
from harness import LocalCluster

from zrep.wire.client_messages import (
    MAX_BATCH_REQUESTS,
    ClientReplies,
    ClientReply,
    Code,
)
from zrep.wire.codec import decode

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., LocalCluster]
BATCH = bytes((1, 66))  # version 1, kind ClientBatch


def send(client: str, seq: int, box: str, low: int = 1) -> tuple[str, dict[str, Any]]:
    return "send", {"client": client, "seq": seq, "low": low, "ack": "majority", "sender": client, "to": box,
                    "body": f"{client}-{seq}".encode()}


def read(box: str, op: str = "read") -> tuple[str, dict[str, Any]]:
    return op, {"mailbox": box, "after": -1, "limit": 10_000}


def test_a_batch_of_sends_is_applied_exactly_once_and_every_reply_matches_its_request(
        make_cluster: MakeCluster) -> None:
    c = make_cluster()
    lead = c.wait_for_leader(15)
    follower = next(i for i in c.ids if i != lead)
    sends = [send("b", seq, "box") for seq in range(1, 301)]
    replies, frames = c.batch(lead, sends)
    assert all(r is not None and r.ok for r in replies), [r for r in replies if r is None or not r.ok][:3]
    assert frames < len(sends) / 10, f"{frames} reply frames for {len(sends)} requests: not coalesced"
    offsets = [r.result["offset"] for r in replies if r is not None]
    assert sorted(offsets) == list(range(300))
    assert all(c.cfg.node(lead).id in r.result["durable_on"] and len(r.result["durable_on"]) >= 2
               for r in replies if r is not None), "acknowledged before a majority had it on disk"

    # The same batch again through a follower (a client's retry): the original answers, nothing applied twice.
    again, _ = c.batch(follower, sends)
    assert [r.result["offset"] if r else None for r in again] == offsets

    # Reads, writes, a status and a bad request in one batch: each answered by its own req_id.
    mixed = [send("b", 301, "box", low=301), read("box"), ("status", {}), ("read", {"mailbox": "box"}),
             read("box", "stale_read"), send("b", 302, "other", low=301), ("mailboxes", {"pattern": "*"})]
    replies, _ = c.batch(lead, mixed)
    assert all(r is not None for r in replies)
    codes = [r.code for r in replies if r is not None]
    assert codes == [Code.OK, Code.OK, Code.OK, Code.BAD_REQUEST, Code.OK, Code.OK, Code.OK], replies
    assert "read args: missing" in replies[3].message  # type: ignore[union-attr]
    assert len(replies[1].result["messages"]) >= 300  # type: ignore[union-attr]  # every acknowledged send
    assert replies[2].result["node"] == lead  # type: ignore[union-attr]

    rows = c.read("box")
    bodies = Counter(body for _, _, body, _ in rows)
    assert len(rows) == 301 and set(bodies.values()) == {1}
    at = {offset: body for offset, _, body, _ in rows}
    assert all(at[o] == f"b-{seq}".encode() for seq, o in zip(range(1, 301), offsets))
    c.wait_converged(20)


def _replies(c: LocalCluster, node: int, payload: bytes) -> list[ClientReply]:
    frames = c.request_raw(node, [payload], timeout=5)
    assert frames is not None and len(frames) == 1, frames
    out = decode(frames[0])
    return list(out.replies) if isinstance(out, ClientReplies) else [out]  # type: ignore[list-item]


def test_malformed_batches_are_answered_with_clear_errors_and_the_node_keeps_serving(
        make_cluster: MakeCluster) -> None:
    c = make_cluster(max_body_bytes=1000, max_frame_bytes=70_000)
    lead = c.wait_for_leader(15)
    status = [1, "status", {}]
    cases = [
        (BATCH + msgpack.packb([[]]), Code.BAD_REQUEST, "1..1024"),
        (BATCH + msgpack.packb([[status] * (MAX_BATCH_REQUESTS + 1)]), Code.BAD_REQUEST, "1..1024"),
        (BATCH + msgpack.packb(["status"]), Code.BAD_REQUEST, "expected an array"),
        (BATCH + b"\xc1", Code.BAD_REQUEST, "malformed"),
        (BATCH + msgpack.packb([[[7, "send", {"body": b"x" * 75_000}]]]), Code.TOO_LARGE, "over the limit"),
    ]
    for payload, code, words in cases:
        (reply,) = _replies(c, lead, payload)
        assert (reply.code, reply.req_id) == (code, 0) and words in reply.message, reply

    good = [[11, "send", dict(send("m", 1, "box")[1])], [12, "read", {"mailbox": "box"}], "junk",
            [13, "stale_read", {"mailbox": "box", "after": -1, "limit": 5}], [14, "status", {}]]
    sock = c._socket(lead)
    sock.send(BATCH + msgpack.packb([good], use_bin_type=True))
    got: dict[int, ClientReply] = {}
    while len(got) < 5 and sock.poll(10_000):  # the write's answer comes in a later frame than the rest
        out = decode(sock.recv())
        assert isinstance(out, ClientReplies)
        got.update((r.req_id, r) for r in out.replies)
    assert got[11].ok and got[13].ok and got[14].ok
    assert (got[12].code, got[0].code) == (Code.BAD_REQUEST, Code.BAD_REQUEST)
    assert "requests[2]: expected [req_id, op, args]" in got[0].message
    assert c.status(lead)["counters"]["client_bad"] >= 6
    assert [body for _, _, body, _ in c.read("box")] == [b"m-1"]
    assert all(c.running(i) for i in c.ids)
