"""The seeded nemesis: one fault after another against a LocalCluster.

Faults (FAULTS.md has the recipes):
  kill         SIGKILL a node (the leader more often than chance), restart it
               after a random delay.
  pause        SIGSTOP a node for longer than the election timeout, then SIGCONT.
  partition    drop traffic between node addresses (netfaults), in a random
               shape: one node isolated, the leader with a minority, a
               majority/minority split, a bridge node that sees two halves
               that cannot see each other, or a one-way cut; then heal.
  torn-tail    SIGKILL a node, leave its WAL ending in the middle of a record,
               restart it: the node must cut the torn tail and rejoin.
  restart-all  SIGKILL every node at once, restart them all.
  power-cut    SIGKILL nodes, cut their disks' power (zrep.chaos.disks: each
               node's data directory is a power-cut file system that drops
               what was not fsynced, sometimes keeping a torn prefix of the
               unsynced appends), remount, restart. Half the time every node
               at once (nothing acknowledged may be lost when the whole
               cluster loses power), else one node or a minority.

The torn tail is a prefix of a copy of the last complete record (or a run of
zeros) appended after it: the file ends mid-record as a crash during a write
leaves it. Bytes already in the file are never cut: they may be fsynced and
acknowledged, and losing them is a disk that lies, outside the fault model
(DESIGN section 1), which would make a correct cluster fail the checks.

Without --nasty every fault hits a minority at a time (restart-all aside,
which is brief and must lose nothing): writes keep flowing. With --nasty a
kill or pause may take down a majority and a partition may leave no side
with a majority: the cluster must then stall without diverging.

Invariants:
  * Every choice comes from the one seeded random generator, drawn in a
    fixed pattern per fault (`Draw`): a seed replays the same fault kinds,
    holds, delays and shapes. Which node leads when a fault begins is up to
    the cluster's timing (real processes), so aims at "the leader" can land
    on other ids from run to run; the rest of the sequence does not shift.
  * One fault at a time, and each fault undoes itself (restart, SIGCONT,
    heal) before the next starts; `heal_all` undoes anything left, and is
    called in the runner's `finally`.
  * A node that exits without our signal is recorded (LocalCluster.lives)
    and restarted, at most MAX_REVIVALS times per node.
  * Every wait is an Event wait with a bound: a stop request ends the run
    within one poll step.

Imports the local cluster, netfaults and the history writer.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zrep.chaos.disks import Disks
from zrep.chaos.history import HistoryWriter
from zrep.chaos.netfaults import NetFaults, Pair
from zrep.core.messages import Entry
from zrep.local.cluster import ClusterError, LocalCluster, wait_until
from zrep.storage.wal_format import (
    HEADER_SIZE,
    Scan,
    StopKind,
    encode_entry,
    zeros_from,
)

FAULTS = ("kill", "pause", "partition", "torn-tail", "restart-all", "power-cut")
# Besides the faults: --membership runs zrep.chaos.membership's operator alongside them.
WEIGHTS = {"kill": 3, "pause": 2, "partition": 3, "torn-tail": 1, "restart-all": 1, "power-cut": 2}
ALL_NODES_CUT = 0.5  # chance that a power cut takes every node (the case that proves durability)
TORN_CUT = 0.3  # chance that a power cut keeps a random prefix of each file's unsynced appends
LEADER_BIAS = 0.6  # chance to aim a single-node fault at the leader (chance alone: 1/n)
MAX_REVIVALS = 3  # restarts of a node that died by itself
STEP_S = 0.1


@dataclass
class FaultRecord:
    kind: str
    detail: str
    nodes: list[int]
    start_ns: int
    end_ns: int | None = None
    leader: int | None = None  # the leader when the fault began, if one was known
    epoch: int | None = None  # its epoch
    leader_hit: bool = False  # the fault took the leader away from the majority
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, origin_ns: int) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "nodes": self.nodes,
                "at_s": round((self.start_ns - origin_ns) / 1e9, 3),
                "lasted_s": None if self.end_ns is None else round((self.end_ns - self.start_ns) / 1e9, 3),
                "leader": self.leader, "epoch": self.epoch, "leader_hit": self.leader_hit, **self.extra}


def majority(n: int) -> int:
    return n // 2 + 1


def tear_tail(path: Path, rng: random.Random) -> str:
    """Write a torn record right after the last complete one (into the WAL's preallocated
    zeros, or past the end of a file without them); what was done, for the report.

    A torn write leaves the first bytes of a record and then zeros (or nothing). The bytes
    kept always reach the record's first non-zero byte: a tear that left only zeros is
    indistinguishable from free space, and the node would have nothing to cut."""
    data = path.read_bytes() if path.exists() else b""
    scan = Scan(data)
    last = None
    for offset, _ in scan:
        last = offset
    stop = scan.stop
    assert stop is not None
    if stop.kind is not StopKind.CLEAN and not zeros_from(data, stop.offset):
        return f"left as it was: it already ends in a {stop.kind.value} record at byte {stop.offset}"
    end = stop.offset
    use_zeros, cut = rng.random() < 0.25, rng.random()
    record = data[last:end] if last is not None else encode_entry(Entry(1, 1, b"torn"))
    first = next(i for i, b in enumerate(record) if b)  # in the length field: a body is >= 2 bytes
    keep = first + 1 + int(cut * (len(record) - 2 - first))  # first + 1 .. len - 1: never the whole record
    if use_zeros:
        torn = record[:min(keep, HEADER_SIZE)]
        what = f"a record header cut after {len(torn)} bytes, its body zeros"
    else:
        torn, what = record[:keep], f"a copy of the last record cut after {keep} of its {len(record)} bytes"
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.seek(end)
        f.write(torn)
    return f"appended {what} after byte {end}"


def power_cut_targets(d: Draw, ids: list[int], leader: int | None) -> tuple[list[int], str, int | None]:
    """(nodes, scope "all"/"one"/"minority", torn seed or None) of one power cut."""
    n = len(ids)
    seed = int(d.u[5] * 1_000_000) if d.u[1] < TORN_CUT else None
    if d.u[0] < ALL_NODES_CUT:
        return list(ids), "all", seed
    count = 1 if n < 5 or d.u[2] < 0.5 else majority(n) - 1
    first = leader if leader in ids and d.u[3] < LEADER_BIAS else d.first(ids)[0]
    nodes = sorted([first, *d.first([i for i in ids if i != first], count - 1)])
    return nodes, "one" if count == 1 else "minority", seed


@dataclass(frozen=True)
class Draw:
    """The random numbers one fault uses, always drawn in full, so the next fault's are the same
    whatever this one's branches took."""

    u: tuple[float, ...]  # uniforms in [0, 1)
    order: tuple[int, ...]  # the node ids, shuffled

    @classmethod
    def of(cls, rng: random.Random, ids: tuple[int, ...], uniforms: int = 6) -> Draw:
        return cls(tuple(rng.random() for _ in range(uniforms)), tuple(rng.sample(ids, len(ids))))

    def pick(self, k: int, options: list[Any]) -> Any:
        return options[int(self.u[k] * len(options))]

    def between(self, k: int, low: float, high: float) -> float:
        return low + self.u[k] * (high - low)

    def count(self, k: int, low: int, high: int) -> int:
        return low + int(self.u[k] * (high - low + 1))

    def first(self, among: list[int] | set[int], k: int | None = None) -> list[int]:
        """`among` in the drawn order (its first `k`)."""
        out = [i for i in self.order if i in among]
        return out if k is None else out[:k]


class Nemesis:
    """Runs faults until a deadline. `counts` and `records` say what happened."""

    def __init__(self, cluster: LocalCluster, faults: list[str], rng: random.Random, *, nasty: bool,
                 net: NetFaults | None, history: HistoryWriter, stop: threading.Event,
                 election_timeout_s: float, disks: Disks | None = None) -> None:
        self.c = cluster
        self.disks = disks
        self.faults = [f for f in FAULTS if f in faults]
        self.rng = rng
        self.nasty = nasty
        self.net = net
        self.history = history
        self.stop = stop
        self.et_s = election_timeout_s
        self.counts: Counter[str] = Counter()
        self.records: list[FaultRecord] = []
        self.revivals: Counter[int] = Counter()
        self.errors: list[str] = []
        self.down: set[int] = set()  # nodes we killed and have not restarted yet
        self._crashes_seen: set[int] = set()  # id() of the lives already noted
        self._majority_hit = False  # --nasty: a kill or pause has taken a majority down
        # Held while a fault or a heal acts on processes: the membership operator
        # (zrep.chaos.membership) kills, wipes and restarts a node under it too.
        self.lock = threading.RLock()
        self._do: dict[str, Callable[[Draw], None]] = {
            "kill": self._kill, "pause": self._pause, "partition": self._partition,
            "torn-tail": self._torn_tail, "restart-all": self._restart_all, "power-cut": self._power_cut}

    # ------------------------------------------------------------ the loop

    def run(self, until: float) -> None:
        """Fault after fault until the monotonic deadline `until` (or stop)."""
        # Every fault asked for first (in a seeded order), so a short run still has each kind.
        plan = self.rng.sample(self.faults, len(self.faults))
        while not self.stop.is_set():
            gap, weighted = self.rng.uniform(0.5, 2.0), self.rng.choices(
                self.faults, weights=[WEIGHTS[f] for f in self.faults])[0]
            draw = Draw.of(self.rng, self.c.ids)
            if not self._sleep(gap, until):
                return
            if until - time.monotonic() < 1.5:
                return
            kind = plan.pop(0) if plan else weighted
            try:
                with self.lock:
                    self._do[kind](draw)
            except (ClusterError, OSError, RuntimeError) as e:
                self.errors.append(f"{kind}: {type(e).__name__}: {e}")
                self.heal_all()

    def _sleep(self, seconds: float, until: float | None = None) -> bool:
        """Wait, watching for nodes that died by themselves; False if stopped or past `until`."""
        end = time.monotonic() + seconds
        if until is not None:
            end = min(end, until)
        while True:
            self.watch()
            left = end - time.monotonic()
            if left <= 0:
                return not self.stop.is_set() and (until is None or time.monotonic() < until)
            if self.stop.wait(min(STEP_S, left)):
                return False

    def watch(self) -> None:
        """Note every node that exited without our signal, and restart it (a bounded number of times)."""
        with self.lock:
            self._watch()

    def _watch(self) -> None:
        self.c.reap()
        for life in self.c.lives:
            if not life.unexpected or id(life) in self._crashes_seen:
                continue
            self._crashes_seen.add(id(life))
            self._note("crash", life.node, life.describe())
            if life.node not in self.down and self.revivals[life.node] < MAX_REVIVALS:
                self.revivals[life.node] += 1
                self.c.start(life.node)

    def heal_all(self) -> None:
        """Undo everything: heal the network, resume paused nodes, start the stopped ones."""
        with self.lock:
            self._heal_all()

    def _heal_all(self) -> None:
        if self.net is not None and self.net.cut_pairs:
            self.net.heal()
        for i in sorted(self.c.paused):
            self.c.resume(i)
        self.down.clear()
        if self.disks is not None:
            self.disks.ensure_mounted([i for i in self.c.ids if not self.c.running(i)])
        for i in self.c.ids:
            if not self.c.running(i) and self.revivals[i] <= MAX_REVIVALS:
                self.c.start(i)
        self._note("heal-all", None, "network healed, paused nodes resumed, stopped nodes started")

    # ------------------------------------------------------------ helpers

    def note(self, f: str, nodes: Any, detail: str) -> None:
        """An annotation in the history (the membership operator's changes)."""
        self.counts[f] += 1
        self._note(f, nodes, detail)

    def _note(self, f: str, nodes: Any, detail: str, **extra: Any) -> None:
        self.history.note(f, {"nodes": nodes, "detail": detail}, **extra)

    def _leader(self) -> tuple[int | None, int | None]:
        st = self.c.statuses(timeout=0.3)
        leaders = [(s["epoch"], i) for i, s in st.items() if s["role_name"] == "leader"]
        if not leaders:
            return None, None
        epoch, lead = max(leaders)
        return lead, epoch

    def _begin(self, kind: str, nodes: list[int], detail: str, leader: int | None, epoch: int | None,
               leader_hit: bool, **extra: Any) -> FaultRecord:
        rec = FaultRecord(kind, detail, sorted(nodes), time.monotonic_ns(), leader=leader, epoch=epoch,
                          leader_hit=leader_hit, extra=extra)
        self.records.append(rec)
        self.counts[kind] += 1
        self._note(kind, sorted(nodes), detail, leader=leader, epoch=epoch)
        return rec

    def _end(self, rec: FaultRecord, what: str) -> None:
        rec.end_ns = time.monotonic_ns()
        self._note(f"{rec.kind}-end", rec.nodes, what)

    def _targets(self, d: Draw, leader: int | None) -> list[int]:
        """Nodes for a kill or pause: one (the leader more often than chance); with --nasty, half
        the time a majority or more (always the first time, so a nasty run surely has one)."""
        ids = [i for i in self.c.ids if self.c.running(i) and i not in self.c.paused]
        if not ids:
            return []
        n = len(self.c.ids)
        if self.nasty and (d.u[0] < 0.5 or not self._majority_hit):
            self._majority_hit = True
            return sorted(d.first(ids, d.count(1, majority(n), n)))
        count = 1 if n < 5 or d.u[2] < 0.7 else majority(n) - 1
        first = leader if leader in ids and d.u[3] < LEADER_BIAS else d.first(ids)[0]
        return sorted([first, *d.first([i for i in ids if i != first], count - 1)])

    # ------------------------------------------------------------ faults

    def _kill(self, d: Draw) -> None:
        leader, epoch = self._leader()
        nodes = self._targets(d, leader)
        if not nodes:
            return
        rec = self._begin("kill", nodes, f"SIGKILL node{'s' * (len(nodes) > 1)} {nodes}", leader, epoch,
                          leader in nodes)
        for i in nodes:
            self.c.kill(i, signal.SIGKILL)
            self.down.add(i)
        self._sleep(d.between(4, 0.3, 3.0))
        self._restart(nodes)
        self._end(rec, f"restarted {nodes}")

    def _restart(self, nodes: list[int]) -> None:
        for i in nodes:
            self.down.discard(i)
            self.c.start(i)

    def _pause(self, d: Draw) -> None:
        leader, epoch = self._leader()
        nodes = self._targets(d, leader)
        if not nodes:
            return
        hold = d.between(4, 1.2, 4.0) * self.et_s  # always past the election timeout
        rec = self._begin("pause", nodes, f"SIGSTOP {nodes} for {hold:.2f}s", leader, epoch, leader in nodes)
        for i in nodes:
            self.c.pause(i)
        self._sleep(hold)
        for i in nodes:
            self.c.resume(i)
        self._end(rec, f"SIGCONT {nodes}")

    def _torn_tail(self, d: Draw) -> None:
        leader, epoch = self._leader()
        ids = [i for i in self.c.ids if self.c.running(i) and i not in self.c.paused]
        if not ids:
            return
        node = leader if leader in ids and d.u[0] < 0.5 else d.first(ids)[0]
        rec = self._begin("torn-tail", [node], f"SIGKILL node {node}, tear its WAL tail", leader, epoch,
                          node == leader)
        self.c.kill(node, signal.SIGKILL)
        self.down.add(node)
        what = tear_tail(self.c.wal_path(node), random.Random(d.u[1]))
        rec.detail += f": {what}"
        self._sleep(d.between(4, 0.2, 2.0))
        self._restart([node])
        if what.startswith("appended"):
            try:
                wait_until("the torn tail cut", lambda: "torn tail" in self.c.node_log(node, last_life=True),
                           5.0, interval=0.1)
                rec.extra["repaired"] = True
            except ClusterError:
                rec.extra["repaired"] = False
        self._end(rec, f"restarted {node}; {what}")

    def _restart_all(self, d: Draw) -> None:
        leader, epoch = self._leader()
        nodes = list(self.c.ids)
        rec = self._begin("restart-all", nodes, "SIGKILL every node at once", leader, epoch, leader is not None)
        self.c.signal_nodes(nodes, signal.SIGKILL)  # all first: they go down together
        self.down.update(nodes)
        for i in nodes:
            self.c.kill(i, signal.SIGKILL)
        self._sleep(d.between(4, 0.2, 1.5))
        for k, i in enumerate(d.order):
            self._restart([i])
            if k + 1 < len(d.order):
                self._sleep(d.between(k % 4, 0.0, 0.3))
        self._end(rec, "restarted every node")

    def _power_cut(self, d: Draw) -> None:
        if self.disks is None:
            return
        leader, epoch = self._leader()
        nodes, scope, seed = power_cut_targets(d, list(self.c.ids), leader)
        how = "torn" if seed is not None else "plain"
        rec = self._begin("power-cut", nodes, f"{how} power cut to {'every node' if scope == 'all' else nodes}",
                          leader, epoch, leader in nodes, scope=scope, torn_seed=seed)
        self.c.signal_nodes(nodes, signal.SIGKILL)  # all first: they lose power together
        self.down.update(nodes)
        for i in nodes:
            self.c.kill(i, signal.SIGKILL)
        outcomes = self.disks.power_cut(nodes, seed)
        rec.extra["dropped_bytes"] = {o.node: o.dropped_bytes for o in outcomes}
        rec.extra["kept_torn_bytes"] = {o.node: o.kept_torn_bytes for o in outcomes}
        rec.extra["names_removed"] = {o.node: o.names_removed for o in outcomes}
        odd = [f"node {o.node}: {o.unmount}" for o in outcomes if o.unmount != "clean"]
        if odd:
            rec.extra["unmount"] = odd
        self._sleep(d.between(4, 0.2, 1.5))
        order = [i for i in d.order if i in nodes]
        for k, i in enumerate(order):
            self._restart([i])
            if k + 1 < len(order):
                self._sleep(d.between(k % 4, 0.0, 0.3))
        dropped = sum(o.dropped_bytes for o in outcomes)
        self._end(rec, f"remounted and restarted {nodes}; {dropped} unsynced bytes dropped")

    # ------------------------------------------------------------ partitions

    def _partition(self, d: Draw) -> None:
        if self.net is None:
            return
        leader, epoch = self._leader()
        shape, pairs, desc, hit = self._shape(d, leader)
        hold = d.between(5, max(1.5, 3 * self.et_s), max(4.0, 8 * self.et_s))
        rec = self._begin("partition", sorted({a for a, _ in pairs} | {b for _, b in pairs}),
                          f"{shape}: {desc} for {hold:.1f}s", leader, epoch, hit, shape=shape)
        self.net.cut(pairs)
        self._sleep(hold)
        self.net.heal()
        self._end(rec, "healed")

    def _shape(self, d: Draw, leader: int | None) -> tuple[str, set[Pair], str, bool]:
        """(shape, dropped pairs, description, whether it surely takes the leader from the majority)."""
        ids = list(self.c.ids)
        n = len(ids)
        shapes = ["isolate", "leader-minority", "split", "bridge", "one-way"]
        if self.nasty:
            shapes += ["no-majority", "no-majority"]
        shape = d.pick(0, shapes)
        lead = leader if leader is not None else d.order[0]
        if shape == "one-way":
            src = lead if d.u[1] < 0.5 else d.order[1]
            dsts = d.first([i for i in ids if i != src], d.count(2, 1, n - 1))
            inbound = d.u[3] < 0.5
            pairs = {(x, src) for x in dsts} if inbound else {(src, x) for x in dsts}
            arrow = f"{sorted(dsts)} -> {src}" if inbound else f"{src} -> {sorted(dsts)}"
            return shape, pairs, f"drop {arrow} only", False  # the leader may well keep its majority
        if shape == "bridge":
            b, rest = d.order[0], list(d.order[1:])
            k = d.count(2, 1, len(rest) - 1)
            left, right = rest[:k], rest[k:]
            pairs = {(x, y) for x in left for y in right} | {(y, x) for x in left for y in right}
            return shape, pairs, f"{sorted(left)} | {sorted(right)}, {b} sees both", False
        groups = self._groups(d, shape, ids, lead)
        pairs = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}
        big = max(groups, key=len)
        hit = leader is not None and (len(big) < majority(n) or leader not in big)
        return shape, pairs, " | ".join(str(sorted(g)) for g in groups), hit

    def _groups(self, d: Draw, shape: str, ids: list[int], lead: int) -> list[list[int]]:
        n = len(ids)
        minority = (n - 1) // 2
        if shape == "isolate":
            x = lead if d.u[1] < 0.5 else d.order[0]
            return [[x], [i for i in ids if i != x]]
        if shape == "leader-minority":
            small = [lead, *d.first([i for i in ids if i != lead], minority - 1)]
            return [small, [i for i in ids if i not in small]]
        if shape == "split":
            small = list(d.order[:d.count(2, 1, minority)])
            return [small, [i for i in ids if i not in small]]
        # no-majority: every group below a majority
        size = max(1, majority(n) - 1)
        return [list(d.order[i:i + size]) for i in range(0, n, size)]
