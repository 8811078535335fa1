"""`zrep bench`'s membership phase: what a membership change costs a cluster holding the
benchmark's messages.

  * learner: a follower is removed (it stops), its disk wiped, and it restarts with --join (a
    new machine with the same address, that nobody replicates to yet); the time from `add`
    until it is promoted, which needs it caught up: the leader's snapshot and the entries
    after it (target: under 10 s with 1,000,000 messages stored).
  * transfer: one writer at 1 in flight while leadership is handed over, three times; the
    longest time a single write waited (target: under 50 ms), beside its median.
Every wait has a deadline; the cluster is left as it was found: three voters.
"""

from __future__ import annotations

import shutil
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

from zrep.client import Client, ClientError
from zrep.local.cluster import LocalCluster
from zrep.local.writer import BackgroundWriter

PROMOTE_DEADLINE_S = 120.0
TRANSFERS = 3


def _retry(what: str, call: Callable[[], Any], deadline: float) -> Any:
    while True:
        try:
            return call()
        except ClientError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {e}") from None
        time.sleep(0.05)


def learner_time(c: LocalCluster, client: Client, step: Callable[[str], None]) -> dict[str, Any]:
    """Remove a follower (it stops), wipe it, start it with --join, then time add + promote."""
    leader = c.wait_for_leader()
    node = max(i for i in c.ids if i != leader)
    deadline = time.monotonic() + PROMOTE_DEADLINE_S
    c.expect_removal(node)
    _retry("remove", lambda: client.admin("remove", node), deadline)
    while c.running(node) and time.monotonic() < deadline:  # a removed node stops by itself (exit 9)
        time.sleep(0.05)
    c.kill(node, signal.SIGKILL)  # (no-op if it stopped)
    shutil.rmtree(c.cfg.node_data_dir(node))
    c.start(node)  # a fresh directory of a node started before: --join, an observer nobody replicates to
    spec = c.cfg.node(node)
    step(f"membership: node {node} removed, wiped and started with --join; adding it back as a learner")
    t0 = time.monotonic()
    _retry("add", lambda: client.admin("add", node, rpc=spec.rpc, pub=spec.pub), deadline)
    _retry("promote", lambda: client.admin("promote", node), deadline)
    seconds = time.monotonic() - t0
    step(f"membership: node {node} added and promoted in {seconds:.2f} s")
    return {"node": node, "add_to_promoted_s": round(seconds, 3)}


def transfer_stall(c: LocalCluster, client: Client, step: Callable[[str], None]) -> dict[str, Any]:
    writer = BackgroundWriter(c, "bench-transfer", prefix="t")
    try:
        time.sleep(0.5)  # a baseline of writes before the first transfer
        durations = []
        for k in range(TRANSFERS):
            t = time.monotonic()
            view = _retry("transfer", lambda: client.admin("transfer", 0), time.monotonic() + 30)
            durations.append(time.monotonic() - t)
            step(f"membership: transfer {k + 1}: node {view.leader} leads")
            time.sleep(0.5)
    finally:
        writer.stop()
    lat = writer.latencies
    return {"transfers": TRANSFERS, "writes": len(lat), "errors": len(writer.errors),
            "longest_write_ms": round(max(lat) * 1000, 2) if lat else None,
            "median_write_ms": round(statistics.median(lat) * 1000, 3) if lat else None,
            "transfer_ms": [round(d * 1000, 1) for d in durations]}


def run_membership_bench(c: LocalCluster, stored: int, step: Callable[[str], None]) -> dict[str, Any]:
    with Client(c.config_path, timeout_s=10) as client:
        out = {"messages": stored}
        out["learner"] = learner_time(c, client, step)
        c.wait_caught_up(60)
        out["transfer"] = transfer_stall(c, client, step)
    t = out["transfer"]
    step(f"membership: during {t['transfers']} transfers the longest write took {t['longest_write_ms']} ms "
         f"(median {t['median_write_ms']} ms, {t['errors']} errors)")
    return out
