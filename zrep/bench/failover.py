"""Failover benchmark: `zrep bench failover [--kills N] [--json]`.

Two kinds, each on a fresh local 3-node cluster on free ports with the default
timeouts (LocalCluster's, as in config/cluster.toml):
- crash: the leader is SIGKILLed. Its kernel closes its connections at once,
  the followers' socket monitors see it and start the pre-vote without waiting
  out the election timeout (Replica.peer_disconnected).
- pause: the leader is SIGSTOPped. Its connections stay open: the followers
  notice only the leader's silence (the election timeout path).
Each keeps one client writing through the real client library, and N times:
stops the leader, measures the time from the signal to the next acknowledged
write, restarts (crash) or resumes (pause) the old leader and waits until
it caught up (`LocalCluster.wait_caught_up`: every node applied the commit
index the leader reported when the wait began: one fixed index, so the
writers never make the wait a matter of luck). Reports the median and the
maximum. `bulk_writers` more threads write batches at full speed meanwhile
(a test's load; the figures come without them).

The time includes everything a user waits through: detection (the election
timeout), the election, the new leader's no-op commit, and the client's own
retry (attempt timeout and backoff). Every wait has a deadline.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zrep.bench.report import machine
from zrep.client import Client, ClientError
from zrep.local.cluster import LocalCluster

WRITE_TIMEOUT_S = 10.0
ATTEMPT_TIMEOUT_S = 0.1  # a short attempt timeout, so the client's own patience does not dominate


@dataclass
class _Writer:
    """Writes continuously in a thread and records (invoked, acknowledged) per write."""

    client: Client
    acks: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            invoked = time.monotonic()
            try:
                self.client.send("bench", f"failover-{n}".encode())
            except ClientError:
                self.errors += 1
                continue
            with self.lock:
                self.acks.append((invoked, time.monotonic()))

    def first_ack_after(self, t: float, timeout_s: float) -> float | None:
        """When the first write invoked after `t` was acknowledged. (A write in flight
        at `t` may be answered from a follower's store: it proves no new leader.)"""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                later = [a for i, a in self.acks[-50:] if i > t]
            if later:
                return min(later)
            time.sleep(0.002)
        return None


@dataclass
class _BulkWriter(_Writer):
    """Writes batches of `batch` messages back to back, as fast as the cluster takes them."""

    batch: int = 64

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.client.send_many("bulk", (f"bulk-{n}-{i}".encode() for i in range(self.batch)))
            except ClientError:
                self.errors += 1


KINDS = {"crash": signal.SIGKILL, "pause": signal.SIGSTOP}


def run_failover_bench(kills: int = 10, progress: Any = None, bulk_writers: int = 0,
                       kind: str = "crash") -> dict[str, Any]:
    say = progress or (lambda text: None)
    sig = KINDS[kind]
    with tempfile.TemporaryDirectory(prefix="zrep-bench-failover-") as tmp, LocalCluster(Path(tmp)) as cluster:
        cluster.wait_for_leader(15)
        clients = [Client(cluster.cfg, timeout_s=WRITE_TIMEOUT_S, attempt_timeout_s=ATTEMPT_TIMEOUT_S)
                   for _ in range(1 + bulk_writers)]
        writer = _Writer(clients[0])
        writers = [writer] + [_BulkWriter(c) for c in clients[1:]]
        threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
        for thread in threads:
            thread.start()
        durations: list[float] = []
        try:
            for k in range(kills):
                writer.first_ack_after(time.monotonic(), 10)  # the cluster takes writes again
                leader = cluster.wait_for_leader(15)
                stopped_at = time.monotonic()
                if sig == signal.SIGKILL:
                    cluster.kill(leader, sig)
                else:
                    cluster.pause(leader)
                acked = writer.first_ack_after(stopped_at, 15)
                if acked is None:
                    raise RuntimeError(f"no write was acknowledged within 15 s of stopping leader {leader} ({kind})")
                durations.append((acked - stopped_at) * 1000)
                say(f"failover {kind} {k + 1}/{kills}: leader {leader} {'killed' if sig == signal.SIGKILL else 'paused'}, "
                    f"next write acknowledged after {durations[-1]:.0f} ms")
                if sig == signal.SIGKILL:
                    cluster.restart(leader)
                else:
                    cluster.resume(leader)
                cluster.wait_caught_up(30)
        finally:
            for w in writers:
                w.stop.set()
            for thread in threads:
                thread.join(WRITE_TIMEOUT_S + 5)
            for c in clients:
                c.close()
    return {
        "kind": kind,
        "kills": kills,
        "median_ms": round(statistics.median(durations), 1),
        "max_ms": round(max(durations), 1),
        "all_ms": [round(d, 1) for d in durations],
        "heartbeat_ms": cluster.cfg.heartbeat_ms,
        "election_timeout_ms": cluster.cfg.election_timeout_ms,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def run_failover_kinds(kills: int = 10, progress: Any = None) -> dict[str, Any]:
    """Both kinds, `kills` times each: the crash figures at the top (as before the pause
    kind existed, so history lines compare), the pause figures under "pause"."""
    crash = run_failover_bench(kills, progress, kind="crash")
    pause = run_failover_bench(kills, progress, kind="pause")
    return {**crash, "pause": {k: pause[k] for k in ("kills", "median_ms", "max_ms", "all_ms")}}


def format_report(r: dict[str, Any]) -> str:
    p = r["pause"]
    return (f"failover (3 nodes, heartbeat {r['heartbeat_ms']} ms, election timeout {r['election_timeout_ms']} ms), "
            f"to the next acknowledged write (the first invoked after the signal):\n"
            f"  crash (SIGKILL, {r['kills']} times): median {r['median_ms']:.0f} ms, max {r['max_ms']:.0f} ms; "
            f"each: {', '.join(f'{d:.0f}' for d in r['all_ms'])} ms\n"
            f"  pause (SIGSTOP, {p['kills']} times): median {p['median_ms']:.0f} ms, max {p['max_ms']:.0f} ms; "
            f"each: {', '.join(f'{d:.0f}' for d in p['all_ms'])} ms\n"
            f"  {r['machine']}, {r['date']}")


def main(kills: int = 10, as_json: bool = False) -> int:
    result = run_failover_kinds(kills, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(result) if as_json else format_report(result))
    return 0
