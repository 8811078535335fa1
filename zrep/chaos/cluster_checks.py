"""The checks a chaos run makes on the live cluster after the heal, and the
final state it reads for zrep.chaos.verify.

  (c) replicas_identical: every node reaches the same applied index with the
      same digest (a hash chain over the applied entries: equal index and
      equal digest = the same log). Two nodes at one index with different
      digests applied different logs: that never heals, so the wait ends at
      once, with each node's numbers and the first differing message per
      mailbox as evidence.
  (e) writes_resume_after_heal: a send invoked after the heal is
      acknowledged within the bound.
  (f) no_unexpected_exits: every node process that ended was ended by us
      (LocalCluster's record of lives), with the tail of its log otherwise.

Invariants: every wait has a deadline and returns early (Interrupted) when
the run is asked to stop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence

from zrep.chaos.report import EXITS, RECOVERY, REPLICAS, Check
from zrep.chaos.workload import Stats, client_config
from zrep.client import Client
from zrep.local.cluster import LocalCluster
from zrep.wire.client_messages import MAX_READ_LIMIT

Final = dict[str, list[tuple[int, str]]]


class Interrupted(Exception):
    """The run was asked to stop (a signal) while waiting."""


def writes_resume(stats: Stats, heal_ns: int, bound_s: float, stop: threading.Event,
                  watch: Callable[[], None]) -> Check:
    """(e) The first acknowledged send invoked after the heal, within `bound_s`."""
    desc = f"after the heal the cluster acknowledged a new write within {bound_s:g}s"
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        ack = stats.first_ack_after(heal_ns)
        if ack is not None:
            took = (ack.ok_ns - heal_ns) / 1e9
            return Check(RECOVERY, True, desc, [f"first send invoked after the heal acknowledged "
                                                 f"{took:.2f}s after it (epoch {ack.epoch})"])
        if stop.wait(0.05):
            raise Interrupted()
        watch()
    return Check(RECOVERY, False, desc, [f"no send invoked after the heal was acknowledged within {bound_s:g}s"])


def replicas_identical(c: LocalCluster, boxes: Sequence[str], timeout_s: float, stop: threading.Event) -> Check:
    """(c) Wait until every node applied the same log, at least up to the highest commit seen now."""
    desc = "every node applied the same log (equal applied index and digest, hash chains)"
    top = max((s["commit"] for s in c.statuses(timeout=2.0).values()), default=0)
    started = time.monotonic()
    while True:
        d = c.digests()
        by_index: dict[int, set[str]] = {}
        for digest, index in d.values():
            by_index.setdefault(index, set()).add(digest)
        if any(len(digests) > 1 for digests in by_index.values()):  # any two nodes, not only all
            return Check(REPLICAS, False, desc, _divergence(c, boxes, top, None))
        if len(d) == len(c.ids) and len(by_index) == 1:
            index, digests = by_index.popitem()
            if index >= top:
                return Check(REPLICAS, True, desc, [
                    f"all {len(c.ids)} nodes applied index {index}, digest {digests.pop()[:16]} "
                    f"({time.monotonic() - started:.2f}s after the clients stopped)"])
        if time.monotonic() - started >= timeout_s:
            return Check(REPLICAS, False, desc, _divergence(c, boxes, top, timeout_s))
        if stop.wait(0.05):
            raise Interrupted()


def _divergence(c: LocalCluster, boxes: Sequence[str], top: int, timed_out_s: float | None) -> list[str]:
    st = c.statuses(timeout=2.0)
    ev = [] if timed_out_s is None else [f"did not converge within {timed_out_s:g}s (highest commit seen {top})"]
    for i in c.ids:
        s = st.get(i)
        ev.append(f"node {i}: " + ("no status" if s is None else
                  f"role {s['role_name']}, epoch {s['epoch']}, commit {s['commit']}, "
                  f"applied {s['store_applied']}, digest {s['digest'][:16]}"))
    by_index: dict[int, set[str]] = {}
    for s in st.values():
        by_index.setdefault(s["store_applied"], set()).add(s["digest"])
    for index, digests in sorted(by_index.items()):
        if len(digests) > 1:
            ev.insert(0, f"same applied index {index}, different digests: the nodes applied different logs")
    return ev + _first_difference(c, boxes, list(st))


def _first_difference(c: LocalCluster, boxes: Sequence[str], nodes: list[int]) -> list[str]:
    """Where the nodes' stores differ first, per mailbox (each node's own stale read)."""
    out = []
    for box in boxes:
        views = {}
        for i in nodes:
            r = c.try_request(i, "stale_read", {"mailbox": box, "after": -1, "limit": MAX_READ_LIMIT}, 5.0)
            if r is not None and r.ok:
                views[i] = {int(m[0]): bytes(m[2]).decode("utf-8", "replace") for m in r.result["messages"]}
        if len(views) < 2:
            continue
        ref_node, ref = next(iter(views.items()))
        for i, v in views.items():
            diff = sorted(o for o in set(ref) | set(v) if ref.get(o) != v.get(o))
            if diff:
                o = diff[0]
                out.append(f"{box} offset {o}: node {ref_node} has {ref.get(o)!r}, node {i} has {v.get(o)!r}")
                break
    return out


def final_state(c: LocalCluster, boxes: Sequence[str], timeout_s: float) -> Final:
    """Every mailbox's live messages, by linearizable reads: {box: [(offset, body), ...]}."""
    with Client(client_config(c.cfg, c.client_host), timeout_s=timeout_s, key=c.client_key) as client:
        final: Final = {}
        for box in boxes:
            rows: list[tuple[int, str]] = []
            after = -1
            while True:
                r = client.read(box, after=after, limit=MAX_READ_LIMIT)
                rows += [(m.offset, m.body.decode("utf-8", "replace")) for m in r.messages]
                if len(r.messages) < MAX_READ_LIMIT:
                    break
                after = r.messages[-1].offset
            final[box] = rows
        return final


def no_unexpected_exits(c: LocalCluster) -> Check:
    """(f) Every node process that ended was ended by us."""
    bad = c.unexpected_exits()
    desc = "no node process ended other than by the nemesis (SIGKILL) or our final SIGTERM (exit 0)"
    if bad:
        ev = [life.describe() for life in bad]
        for life in bad[:3]:
            tail = [ln for ln in c.life_log(life).splitlines() if ln.strip()][-3:]
            ev += [f"  node {life.node} log: {ln}" for ln in tail]
        return Check(EXITS, False, desc, ev)
    killed = sum(1 for life in c.lives if life.signal == signal.SIGKILL)
    return Check(EXITS, True, desc, [f"{len(c.lives)} node lives: {killed} ended by our SIGKILL, "
                                     f"the rest by our SIGTERM with exit 0"])
