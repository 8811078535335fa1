"""Load worker of `zrep bench`: `python -m zrep.bench.load --rpc ENDPOINT ...`.

One process, one DEALER to one node's rpc endpoint, `--in-flight` requests
pipelined: new requests leave as soon as some are answered. It speaks the
wire protocol itself (zrep.wire.codec) rather than through zrep.client, whose
calls wait for their answers.

Wire mode: by default the requests issued in one loop iteration (as many as
were answered since the last) leave as one ClientBatch frame, and the node
answers in ClientReplies frames; one request alone still goes as a plain
ClientRequest. `--no-batch` sends every request as its own ClientRequest
frame (the node then answers each in its own ClientReply): the figure of a
client that does not batch. Either way `--in-flight` counts requests, not
frames, and each latency runs from when its request left to its own reply.

The worker shares the machine with the nodes it measures, so it spends as
little as it can: batched reads, alike but for their ids, are packed with
codec.pack_same_requests (op and args checked and packed once), and answers
are read with codec.reply_outcomes (each reply's id, ok and code; the nodes'
results are not checked again). That halved its CPU per read (13-19 to
6-11 µs in `zrep bench`, docs/figures.md).

Protocol with the parent (zrep.bench.workers), one line each on stdout:
  ready                  warm-up done, nothing in flight; waits for "go" on stdin
  progress ACKED ERRORS  every PROGRESS_S while measuring
  result {json}          count, errors {code: n}, start, end (time.monotonic(),
                         system-wide on Linux, so the parent can merge windows
                         of several workers), cpu_s (this process's CPU time
                         in that window), latencies_ms (sorted) or []

Writes are proper client writes: one client id per worker, seq from 1 and
`low` = the lowest seq still waiting for its answer, so the store keeps few
answers and applies each (client, seq) once. A non-OK answer is counted by
its most specific code (the store's reason if any), never retried: the bench
judges them. A request unanswered for NO_ANSWER_S ends the run; the requests still in
flight then count as NO_ANSWER.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

import zmq

from zrep.errors import DecodeError
from zrep.security.keys import load_secret
from zrep.security.zap import curve_client
from zrep.wire.client_messages import MAX_BATCH_REQUESTS, ClientBatch, ClientRequest, Op
from zrep.wire.codec import encode, pack_same_requests, reply_outcomes

PROGRESS_S = 0.5
NO_ANSWER_S = 15.0  # past the node's own request deadline (10 s): its TIMEOUT answer should come first
_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: pyzmq's flag enum costs microseconds per call
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
READ_LIMIT = 1  # a read returns one message: the cost of a read, not of a big page


class _Load:
    """The pipeline: send, receive, count. Single-threaded (zmq)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.body = b"x" * args.body_bytes
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if args.key is not None:  # a CURVE cluster: this worker's key, the node's public key
            pair = load_secret(args.key)
            curve_client(self.sock, pair.public, pair.secret, args.server_key.encode())
        self.sock.connect(args.rpc)
        self.next_id = 1  # req_id, and for writes also seq: one connection, one client id
        self.waiting: dict[int, float] = {}  # req_id -> sent at; insertion order = ascending
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.acked = 0
        self.cpu_start = 0.0  # process_time() when the current run began
        self._read_args: dict[str, Any] = {"mailbox": args.mailbox, "after": -1, "limit": READ_LIMIT}

    def _request(self) -> ClientRequest:
        a, req_id = self.a, self.next_id
        if a.op == Op.SEND:
            low = next(iter(self.waiting), req_id)  # the oldest unanswered seq, else this one
            args: dict[str, Any] = {"client": a.client, "seq": req_id, "low": low, "ack": "majority",
                                    "sender": "", "to": a.mailbox, "body": self.body}
        else:
            args = self._read_args
        return ClientRequest(req_id, a.op, args)

    def _send(self, n: int) -> None:
        """Issue `n` requests: one frame each, or (batching) ClientBatch frames of up to MAX_BATCH_REQUESTS."""
        if self.a.batch and n > 1 and self.a.op != Op.SEND:
            self._send_reads(n)
            return
        now, reqs = time.monotonic(), []
        for _ in range(n):
            self.waiting[self.next_id] = now  # before _request: low counts this one too
            reqs.append(self._request())
            self.next_id += 1
        if not self.a.batch or n == 1:
            for req in reqs:
                self.sock.send(encode(req))
            return
        for at in range(0, n, MAX_BATCH_REQUESTS):
            self.sock.send(encode(ClientBatch(tuple(reqs[at:at + MAX_BATCH_REQUESTS]))))

    def _send_reads(self, n: int) -> None:
        """Reads are all alike but for their ids: their frames are packed without a
        ClientRequest each (this process shares the machine with the nodes it measures)."""
        now, args, first = time.monotonic(), self._read_args, self.next_id
        for req_id in range(first, first + n):
            self.waiting[req_id] = now
        self.next_id += n
        for at in range(0, n, MAX_BATCH_REQUESTS):
            self.sock.send(pack_same_requests(first + at, min(MAX_BATCH_REQUESTS, n - at), self.a.op, args))

    def _receive(self, timeout_ms: int, record: bool) -> None:
        sock = self.sock
        if not sock.poll(timeout_ms):
            return
        # After a lone first frame (every reply at 1 in flight), ZMQ_EVENTS says whether another
        # waits at half the cost of a recv failing with Again (pyzmq builds an exception); past
        # it, reading on until Again is cheaper than asking before each frame.
        frames = 0
        while True:
            if frames == 1 and not sock.get(_EVENTS) & _POLLIN:
                return
            frames += 1
            try:
                payload = sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            try:
                outcomes = reply_outcomes(payload)
            except DecodeError:
                self.errors["UNDECODABLE_REPLY"] += 1
                continue
            for req_id, ok, code in outcomes:
                self._count(req_id, ok, code, now, record)

    def _count(self, req_id: int, ok: bool, code: str, now: float, record: bool) -> None:
        sent = self.waiting.pop(req_id, None)
        if sent is None:
            self.errors["UNMATCHED_REPLY"] += 1
        elif ok:
            if record:
                self.acked += 1
                if self.a.latencies:
                    self.latencies.append((now - sent) * 1000)
        else:  # counted in the warm-up too: no failure goes unreported
            self.errors[code] += 1

    def run(self, count: int, seconds: float, record: bool, progress: bool = False) -> tuple[float, float]:
        """Issue `count` requests (or until `seconds`), `in_flight` at a time; wait for the answers."""
        start, self.cpu_start = time.monotonic(), time.process_time()
        stop_issuing, issued, next_report = start + seconds, 0, start + PROGRESS_S
        while issued < count or self.waiting:
            now = time.monotonic()
            if now >= stop_issuing:
                count = issued  # time is up: issue no more, drain what is in flight
            n = min(count - issued, self.a.in_flight - len(self.waiting))
            if n > 0:
                self._send(n)
                issued += n
            if self.waiting and now - self.waiting[next(iter(self.waiting))] > NO_ANSWER_S:
                self.errors["NO_ANSWER"] += len(self.waiting)  # the node is gone or stuck: stop here
                self.waiting.clear()
                break
            self._receive(100, record)
            if progress and now >= next_report:
                _say(f"progress {self.acked} {sum(self.errors.values())}")
                next_report = now + PROGRESS_S
        return start, time.monotonic()

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zrep.bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--rpc", required=True, help="the node's rpc endpoint, tcp://HOST:PORT")
    p.add_argument("--op", choices=[Op.SEND, Op.READ, Op.STALE_READ], default=Op.SEND)
    p.add_argument("--client", default="bench", help="client id of the writes (unique per worker)")
    p.add_argument("--mailbox", default="bench")
    p.add_argument("--in-flight", type=int, default=1)
    p.add_argument("--count", type=int, default=1000, help="requests to measure at most")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds to issue requests at most")
    p.add_argument("--warmup", type=int, default=0, help="requests before the measured window")
    p.add_argument("--body-bytes", type=int, default=100)
    p.add_argument("--no-latencies", dest="latencies", action="store_false",
                   help="report counts only (big runs: the samples would be megabytes)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="start measuring at once, no 'go'")
    p.add_argument("--key", default=None, help="secret key file, for a cluster with security.mode = curve")
    p.add_argument("--server-key", default=None, help="the node's public key (z85), with --key")
    p.add_argument("--no-batch", dest="batch", action="store_false",
                   help="one ClientRequest frame per request (default: a ClientBatch of what one iteration issues)")
    a = p.parse_args(argv)
    load = _Load(a)
    try:
        load.run(a.warmup, a.seconds, record=False)
        if a.wait:
            _say("ready")
            if sys.stdin.readline().strip() != "go":
                return 1  # the parent went away: measure nothing
        start, end = load.run(a.count, a.seconds, record=True, progress=True)
        cpu_s = time.process_time() - load.cpu_start
        _say("result " + json.dumps({"count": load.acked, "errors": dict(load.errors), "start": start,
                                     "end": end, "cpu_s": round(cpu_s, 4),
                                     "latencies_ms": sorted(round(x, 3) for x in load.latencies)}))
    finally:
        load.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
