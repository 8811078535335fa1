"""`LocalCluster` for tests: zrep.local.cluster plus the wire tricks tests need.

Job: the tests' view of a local cluster. Everything reusable (cluster file on
free ports, node processes in their own process groups, kill, pause, resume,
restart, status, leader and convergence waits, node logs, the record of every
node's life) lives in zrep.local.cluster, shared with the chaos tool; this
module adds only what a test needs to poke a node: raw frames, a pipeline of
requests, and a minimal synchronous client that retries one (client, seq)
until acknowledged. Fixtures (tests/conftest.py) call `close()` at teardown,
also when the test failed, so no process group outlives its test.

Invariants:
  * Every wait polls a condition against a deadline; none is a bare sleep.
  * The helper client speaks the real wire protocol (zrep.wire.codec), one DEALER
    per node; it does not use zrep.client (tested separately against this).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

from zrep.local.cluster import (
    START_MARK,
    ClusterError,
    Life,
    free_ports,
    loopback_hosts,
    wait_until,
)
from zrep.local.cluster import LocalCluster as _BaseCluster
from zrep.wire.client_messages import (
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    Code,
)
from zrep.wire.codec import KIND_OF, decode, encode

__all__ = ["REPO", "START_MARK", "ClusterError", "Life", "LocalCluster", "free_ports", "loopback_hosts",
           "wait_until"]

REPO = Path(__file__).resolve().parents[2]
RETRYABLE = frozenset({Code.NO_LEADER, Code.TIMEOUT, Code.UNAVAILABLE})


class LocalCluster(_BaseCluster):
    """A cluster of real node processes (see zrep.local.cluster) with test-only wire helpers."""

    # ---------------------------------------------------------------- raw wire

    def request_raw(self, node_id: int, frames: list[bytes], timeout: float = 2.0) -> list[bytes] | None:
        """Send raw frames (one message, maybe multipart) and return the first reply's frames."""
        s = self._socket(node_id)
        s.send_multipart(frames)
        if s.poll(int(timeout * 1000)):
            return s.recv_multipart()
        self._drop_socket(node_id)  # nothing stale may answer a later request
        return None

    def pipeline(self, node_id: int, requests: list[tuple[str, dict[str, Any]]],
                 timeout: float = 10.0) -> list[ClientReply | None]:
        """Send every request before reading any reply; replies in request order
        (None for one that did not come back in time)."""
        s = self._socket(node_id)
        ids = [next(self._req_ids) for _ in requests]
        for req_id, (op, args) in zip(ids, requests):
            s.send(encode(ClientRequest(req_id, op, args)))
        got: dict[int, ClientReply] = {}

        def take(frame: Any) -> None:
            if isinstance(frame, ClientReply):
                got[frame.req_id] = frame

        self._collect(node_id, got, len(ids), timeout, take)
        return [got.get(i) for i in ids]

    def batch(self, node_id: int, requests: list[tuple[str, dict[str, Any]]],
              timeout: float = 10.0) -> tuple[list[ClientReply | None], int]:
        """Send the requests as one ClientBatch frame, unchecked (a test may slip in a
        bad one); (replies in request order, None for one that did not come back in
        time; how many ClientReplies frames brought them)."""
        s = self._socket(node_id)
        ids = [next(self._req_ids) for _ in requests]
        items = [[i, op, args] for i, (op, args) in zip(ids, requests)]
        s.send(bytes((1, KIND_OF[ClientBatch])) + msgpack.packb([items], use_bin_type=True))
        got: dict[int, ClientReply] = {}
        frames = [0]

        def take(frame: Any) -> None:
            assert isinstance(frame, ClientReplies), f"a batch must be answered in ClientReplies, got {frame}"
            frames[0] += 1
            for reply in frame.replies:
                assert reply.req_id not in got, f"req_id {reply.req_id} answered twice"
                got[reply.req_id] = reply

        self._collect(node_id, got, len(ids), timeout, take)
        return [got.get(i) for i in ids], frames[0]

    def _collect(self, node_id: int, got: dict[int, ClientReply], want: int, timeout: float,
                 take: Callable[[Any], None]) -> None:
        """Feed decoded frames from the node to `take` until `got` holds `want` replies or time is up."""
        s = self._socket(node_id)
        deadline = time.monotonic() + timeout
        while len(got) < want:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not s.poll(left_ms):
                self._drop_socket(node_id)  # nothing stale may answer a later request
                return
            take(decode(s.recv()))

    # ---------------------------------------------------------------- a tiny client

    def send(self, client: str, seq: int, to: str, body: bytes, *, sender: str = "", timeout: float = 20.0,
             attempt_timeout: float = 2.0, first: int | None = None, ack: str = "majority") -> dict[str, Any]:
        """Send one message with retries (same client and seq on every attempt) until
        acknowledged; the OK result. Follows NOT_LEADER hints, rotates on silence."""
        args = {"client": client, "seq": seq, "low": seq, "ack": ack, "sender": sender, "to": to, "body": body}
        return self._retry("send", args, timeout, attempt_timeout, first)

    def read(self, mailbox: str, *, node: int | None = None, stale: bool = False, limit: int = 10_000,
             timeout: float = 10.0) -> list[tuple[int, str, bytes, int]]:
        """All messages of `mailbox` as (offset, sender, body, index), linearizable unless stale."""
        op = "stale_read" if stale else "read"
        args = {"mailbox": mailbox, "after": -1, "limit": limit}
        result = self._retry(op, args, timeout, 2.0, node, stick=node is not None)
        return [tuple(row) for row in result["messages"]]  # type: ignore[misc]

    def _retry(self, op: str, args: dict[str, Any], timeout: float, attempt_timeout: float,
               first: int | None, stick: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        order = itertools.cycle(self.ids)
        target = first or next(order)
        last: Any = None
        while time.monotonic() < deadline:
            if stick or (self.running(target) and target not in self.paused):
                reply = self.try_request(target, op, args, attempt_timeout)
                last = reply
                if reply is not None and reply.ok:
                    return reply.result
                if reply is not None and reply.code == Code.NOT_LEADER and not stick:
                    target = reply.result["leader"]
                    continue
                if reply is not None and reply.code not in RETRYABLE:
                    raise ClusterError(f"{op} {args.get('seq', '')} refused: {reply}")
            if not stick:
                target = next(order)
            time.sleep(0.05)  # backoff between attempts, inside the deadline
        raise ClusterError(f"{op} not answered OK within {timeout}s (last reply: {last})")
