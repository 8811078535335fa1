"""The floor under one request's latency on this machine: `zrep bench floor`.

A send with 1 request in flight crosses two round trips between processes
(client <-> leader, leader <-> follower) and waits for one fsync (the
leader's runs while the follower's does, so only one counts). Whatever the
node does, it cannot answer faster than

    floor = 2 x (ZeroMQ round trip between two processes) + 1 / (raw fsyncs per second)

This module measures both parts with zrep out of the way:
- rtt: a DEALER in this process sends 100 bytes to a ROUTER in a child
  process that echoes them back, polling the way a node does (Poller, then
  non-blocking reads), one message in flight; p50 and p99 of the round trip;
- fsync: the WAL benchmark's raw case (os.write of 100 bytes + the WAL's
  flush call, one at a time) on the disk of `--dir`; then the same on 3
  files at once, the rate each of them gets (a local cluster's 3 nodes share
  one disk, and a majority's fsyncs run at the same time: each is slower than
  one alone, which the floor's sum leaves out).

On a virtual machine whose idle CPUs halt, each hop wakes a sleeping thread
(pyzmq hands every message to libzmq's I/O thread and back), so the round
trip costs far more than the network stack itself; the floor shows how much
of the 1-in-flight latency is the machine's and how much is zrep's.

Then the ceiling (zrep.bench.ceiling): the same parts run together by bare
processes, a leader and two followers with 1 send in flight, giving the most
sends/s and the least p50 any node could reach at 1 in flight here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import zmq

from zrep.bench.ceiling import (
    SENDS,
    dealer_to,
    measure_ceiling,
    p50_p99_ms,
    stop_children,
)
from zrep.bench.report import format_floor
from zrep.bench.wal import ENTRY_BYTES, RawCase
from zrep.local.cluster import free_ports
from zrep.local.processes import spawn

ROUND_TRIPS = 3000
WARMUP_TRIPS = 200
FSYNC_SECONDS = 2.0
NODES = 3  # the files flushed at once by measure_fsync_together: a local cluster's nodes
ECHO_START_S = 10.0  # the echo child must answer its first message within this


def _echo(port: int) -> None:
    """The child: echo every message back to its sender until stdin closes."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"tcp://127.0.0.1:{port}")
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    while True:
        ready = dict(poller.poll(1000))
        if sys.stdin.fileno() in ready:
            return  # the parent closed our stdin (or died): stop
        while True:
            try:
                ident = router.recv(zmq.NOBLOCK)
                payload = router.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            router.send(ident, zmq.SNDMORE)
            router.send(payload)


def measure_rtt(trips: int = ROUND_TRIPS) -> dict[str, Any]:
    """Round trips of 100 bytes between this process and an echo child on 127.0.0.1."""
    port = free_ports("127.0.0.1", 1, set())[0]
    child = spawn([sys.executable, "-m", "zrep.bench.floor", "--echo", str(port)], stdin=subprocess.PIPE)
    try:
        with dealer_to(port) as dealer:
            payload = b"x" * ENTRY_BYTES
            deadline = time.monotonic() + ECHO_START_S
            dealer.send(payload)
            while not dealer.poll(100):
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the echo process did not answer; is 127.0.0.1 usable?")
            dealer.recv()
            samples = []
            for i in range(WARMUP_TRIPS + trips):
                start = time.perf_counter()
                dealer.send(payload)
                if not dealer.poll(int(ECHO_START_S * 1000)):
                    raise RuntimeError("the echo process stopped answering")
                dealer.recv()
                if i >= WARMUP_TRIPS:
                    samples.append(time.perf_counter() - start)
    finally:
        stop_children([child])
    return {"round_trips": trips, **p50_p99_ms(samples)}


def measure_fsync(directory: str, seconds: float = FSYNC_SECONDS) -> float:
    """Raw durable 100-byte appends per second on the disk of `directory`."""
    return measure_fsync_together(directory, 1, seconds)


def measure_fsync_together(directory: str, writers: int = NODES, seconds: float = FSYNC_SECONDS) -> float:
    """Raw durable appends per second of each of `writers` files flushed at the same
    time (threads: fdatasync releases the GIL), as a local cluster's nodes share a disk."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zrep-bench-floor-", dir=directory) as work:
        cases = []
        for i in range(writers):
            os.mkdir(os.path.join(work, str(i)))
            cases.append(RawCase(os.path.join(work, str(i))))
        counts = [0] * writers
        start = threading.Barrier(writers + 1)

        def run(i: int) -> None:
            start.wait()
            counts[i] = cases[i].run(seconds)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
        try:
            for t in threads:
                t.start()
            start.wait()
            began = time.perf_counter()
            for t in threads:
                t.join()
            return sum(counts) / writers / (time.perf_counter() - began)
        finally:
            for case in cases:
                case.close()


def run_floor_bench(directory: str, ceiling_sends: int = SENDS) -> dict[str, Any]:
    rtt = measure_rtt()
    fsync_per_s = measure_fsync(directory)
    floor_ms = 2 * rtt["p50_ms"] + 1000 / fsync_per_s
    return {"rtt": rtt, "fsync_per_s": round(fsync_per_s), "send_floor_ms": round(floor_ms, 3),
            "fsync_each_of_3_per_s": round(measure_fsync_together(directory)),
            "ceiling": measure_ceiling(directory, ceiling_sends)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="a directory on the disk to measure (default: .)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--echo", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.echo is not None:
        _echo(args.echo)
        return 0
    result = run_floor_bench(args.dir)
    print(json.dumps(result) if args.json else format_floor(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
