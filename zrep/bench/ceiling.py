"""The ceiling of a replicated send on this machine: part of `zrep bench floor`.

The floor adds up the parts of one send (round trips, one fsync). The
ceiling runs them together, with zrep out of the way: three bare processes
play a leader and two followers, and this process is a client with 1
request in flight, the way `zrep bench` measures sends at 1 in flight.

- the client sends 100 bytes to the leader (DEALER -> ROUTER, 127.0.0.1);
- the leader forwards them to both followers first, then writes them to its
  own file and flushes it (os.write + the WAL's flush call);
- a follower writes, flushes, and answers the leader;
- the leader answers the client once its own flush and one follower's answer
  are in (a majority of 3).

No encoding, no log, no store, no checks: only the messages and the fsyncs
every replicated write with fsync on needs, on the same sockets and poll loop
a node uses. Whatever zrep does on top, a send at 1 in flight cannot beat this
figure on this machine; the gap between the two is zrep's own work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import zmq

from zrep.bench.report import cpu_seconds
from zrep.bench.wal import ENTRY_BYTES
from zrep.bench.workers import percentile
from zrep.local.cluster import free_ports
from zrep.local.processes import spawn
from zrep.storage.wal import sync_data

SENDS = 3000
WARMUP_SENDS = 200
START_S = 10.0  # the three processes must answer a first send within this
ANSWER_S = 10.0  # then each send within this


class _Bare:
    """A bare process's ROUTER on 127.0.0.1:`port`, its file, and a poller that also sees stdin close."""

    def __init__(self, port: int, path: str) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(f"tcp://127.0.0.1:{port}")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(sys.stdin.fileno(), zmq.POLLIN)

    def wait(self) -> bool:
        """Block until something arrives; False once the parent closed our stdin (or died)."""
        return sys.stdin.fileno() not in dict(self.poller.poll(1000))

    def received(self) -> list[tuple[bytes, bytes]]:
        """(sender, payload) of every message waiting on the ROUTER."""
        out = []
        while True:
            try:
                ident, payload = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            out.append((ident, payload))


def _follower(port: int, path: str) -> None:
    """Write and flush what the leader sends; answer with its first 8 bytes (the send's number)."""
    me = _Bare(port, path)
    while me.wait():
        answers = []
        for ident, payload in me.received():
            os.write(me.fd, payload)
            answers.append((ident, payload[:8]))
        if answers:
            sync_data(me.fd)  # one flush for all that arrived together, as a node does
            for ident, number in answers:
                me.router.send_multipart([ident, number])


def _leader(port: int, path: str, follower_ports: list[int]) -> None:
    """Forward each send to the followers, write and flush it, answer on self + one follower."""
    me = _Bare(port, path)
    dealers = []
    for p in follower_ports:
        dealer = me.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{p}")
        me.poller.register(dealer, zmq.POLLIN)
        dealers.append(dealer)
    votes: dict[bytes, list[Any]] = {}  # send number -> [durable copies, client identity]
    while me.wait():
        written = []
        for ident, payload in me.received():
            for dealer in dealers:  # before our own flush: theirs and ours overlap
                dealer.send(payload)
            os.write(me.fd, payload)
            votes[payload[:8]] = [0, ident]
            written.append(payload[:8])
        if written:
            sync_data(me.fd)
            for number in written:
                votes[number][0] += 1
        for dealer in dealers:
            while True:
                try:
                    number = dealer.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if number in votes:
                    votes[number][0] += 1
        for number in [n for n, v in votes.items() if v[0] >= 2]:
            me.router.send_multipart([votes.pop(number)[1], number])


def _start(args: list[str]) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "zrep.bench.ceiling", *args], stdin=subprocess.PIPE)


def stop_children(children: list[subprocess.Popen]) -> None:
    """Close the stdin of each bare child (it stops at that), then reap it; kill one that hangs."""
    for child in children:
        if child.stdin is not None:
            child.stdin.close()
    for child in children:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextlib.contextmanager
def dealer_to(port: int) -> Iterator[zmq.Socket]:
    """A DEALER connected to 127.0.0.1:`port`, in a context of its own, closed at the end."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        yield dealer
    finally:
        dealer.close(linger=0)
        ctx.term()


def p50_p99_ms(samples: list[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank, as the load levels report them) of latencies in seconds, in ms."""
    ordered = sorted(samples)
    return {"p50_ms": round(percentile(ordered, 50) * 1000, 3), "p99_ms": round(percentile(ordered, 99) * 1000, 3)}


def _wait_answer(client: zmq.Socket, children: list[subprocess.Popen], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not client.poll(100):
        if any(c.poll() is not None for c in children):
            raise RuntimeError("a process of the bare cluster exited (its error is above); is 127.0.0.1 usable?")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bare leader did not answer within {seconds:g} s")


def measure_ceiling(directory: str, sends: int = SENDS, warmup: int = WARMUP_SENDS) -> dict[str, Any]:
    """Sends/s and latency of the bare pattern at 1 in flight, its files in `directory`."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zrep-bench-ceiling-", dir=directory) as work:
        leader, f1, f2 = free_ports("127.0.0.1", 3, set())
        children = [_start(["--follower", str(f1), os.path.join(work, "f1")]),
                    _start(["--follower", str(f2), os.path.join(work, "f2")]),
                    _start(["--leader", str(leader), os.path.join(work, "leader"), str(f1), str(f2)])]
        try:
            with dealer_to(leader) as client:
                body = b"x" * ENTRY_BYTES
                samples: list[float] = []
                start = time.perf_counter()
                cpu_before: list[float] = []
                for i in range(warmup + sends + 1):  # send 0 waits for the three processes to start
                    if i == warmup + 1:
                        start = time.perf_counter()
                        cpu_before = [cpu_seconds(c.pid) for c in children] + [time.process_time()]
                    sent = time.perf_counter()
                    client.send(i.to_bytes(8, "big") + body)
                    _wait_answer(client, children, START_S if i == 0 else ANSWER_S)
                    client.recv()
                    if i > warmup:
                        samples.append(time.perf_counter() - sent)
                elapsed = time.perf_counter() - start
                cpu_after = [cpu_seconds(c.pid) for c in children] + [time.process_time()]
        finally:
            stop_children(children)
    f1_us, f2_us, leader_us, client_us = (round((b - a) / sends * 1e6, 1) for a, b in zip(cpu_before, cpu_after))
    return {"sends": sends, "per_s": round(sends / elapsed, 1), **p50_p99_ms(samples),
            # as zrep bench's cpu_us_per_req (node CPU in clock ticks: few sends may show 0)
            "cpu_us_per_send": {"leader": leader_us, "followers": [f1_us, f2_us], "client": client_us}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.bench.ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="a directory on the disk to measure (default: .)")
    parser.add_argument("--follower", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--leader", nargs=4, metavar=("PORT", "FILE", "F1", "F2"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.follower is None and args.leader is None:
        print(json.dumps(measure_ceiling(args.dir)))
        return 0
    try:  # one of the bare cluster's processes
        if args.follower:
            _follower(int(args.follower[0]), args.follower[1])
        else:
            _leader(int(args.leader[0]), args.leader[1], [int(args.leader[2]), int(args.leader[3])])
    except (zmq.ZMQError, OSError) as e:
        print(f"zrep bench ceiling: {'follower' if args.follower else 'leader'}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
