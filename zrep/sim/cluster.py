"""`SimCluster`: a whole zrep cluster, its clients and a nemesis, in one thread.

Each node is the real `Service` (replica + store + pending clients) over a
`SimDisk`; messages cross a `SimNetwork`; time is a global tick counter and
each node turns global ticks into its own at its own speed. Every random
decision comes from generators seeded by the plan's seed, so a run replays
exactly. The `Checker` judges every step; after the faults heal, the cluster
must elect a leader, finish every client operation and converge.

Snapshots as the real node takes them: after a turn a node may snapshot its
store (the SimDisk's snapshot file), then compact its log (keep_entries
below it), maybe dying just before or after the rewrite; a follower behind a
leader's log start receives the snapshot through the real Shipper and
Receiver (zrep.sim.snapshots). A dead node's disk may be wiped, but only
while the other live nodes, a majority without it, hold every committed
entry (else wiping loses committed entries, whatever the protocol does), and
every other disk holds its epoch or a later one (else a later candidate may
reuse an epoch it promised in, and get a second promise for it); it stays
down for two election timeouts, so no candidacy of that epoch is still open.
Disconnect hints (zrep.sim.hints: true, lost, late, false and stall ones) go
to the replica as the real node's socket monitor gives them; a paused node
reads its hints when it resumes.
Must not import os, time or zmq.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from zrep.core.log import LogView
from zrep.core.membership import Config, provisional_config
from zrep.core.messages import Entry, Role
from zrep.core.replica import Replica
from zrep.errors import DecodeError, InvariantError
from zrep.service.pending import Done
from zrep.service.service import Service, snapshot_config
from zrep.sim.checker import Ack, Checker, Violation
from zrep.sim.disk import SimCrash, SimDisk
from zrep.sim.hints import Hint, SimHints
from zrep.sim.network import LinkFaults, SimNetwork
from zrep.sim.operator import SimOperator
from zrep.sim.plan import SimPlan
from zrep.sim.snapshots import SimSnapshots
from zrep.store.commands import encode_send
from zrep.store.snapshot import (
    Snapshot,
    decode_header,
    decode_snapshot,
    encode_snapshot,
    snapshot_fits,
)
from zrep.store.store import Store

CLIENT_BASE = 1000
MAILBOXES = ("a", "b", "c")


class CheckedDisk(SimDisk):
    """A SimDisk that tells the checker what its node writes to its log."""

    def __init__(self, node: int, checker: Checker) -> None:
        super().__init__()
        self._node = node
        self._checker = checker

    def truncate(self, from_index: int) -> None:
        super().truncate(from_index)
        self.truncated = True
        self._checker.truncated(self._node, from_index)

    def append_entries(self, entries: Any) -> None:
        entries = tuple(entries)
        super().append_entries(entries)
        self._checker.appended(self._node, entries)


@dataclass
class SimNode:
    id: int
    disk: CheckedDisk
    speed: float
    service: Service | None = None
    paused_until: int = 0
    restart_at: int = 0
    lives: int = 0
    acc: float = 0.0
    inbox: list[Any] = field(default_factory=list)  # held while paused


@dataclass
class Op:
    kind: str  # "send" | "read"
    mailbox: str
    start: int
    seq: int = 0
    body: bytes = b""
    command: bytes = b""
    token: int = 0
    deadline: int = 0


@dataclass
class SimClient:
    index: int
    seq: int = 0
    op: Op | None = None
    leader_hint: int = 0
    tokens: int = 0

    @property
    def name(self) -> str:
        return f"c{self.index}"

    @property
    def addr(self) -> int:
        return CLIENT_BASE + self.index


@dataclass
class SimResult:
    seed: int
    nodes: int
    ticks: int
    faults: dict[str, int]
    elections: int
    commit: int
    acked_writes: int
    reads: int
    failover_ticks: list[int]
    converge_ticks: int
    election_ticks: int


class SimCluster:
    def __init__(self, plan: SimPlan, trace: bool = False) -> None:
        self.plan = plan
        self.trace_on = trace
        self.trace: list[str] = []
        self.rng = random.Random(f"run-{plan.seed}-{plan.nodes}")
        self.snap_rng = random.Random(f"snap-{plan.seed}-{plan.nodes}")  # snapshot decisions: the rest replays as before
        self.checker = Checker()
        self.net = SimNetwork(random.Random(f"net-{plan.seed}"), LinkFaults(**vars(plan.link)))
        self.ids = tuple(range(1, plan.nodes + 1))
        self.nodes = {i: SimNode(i, CheckedDisk(i, self.checker), plan.speeds[i - 1]) for i in self.ids}
        # Membership draws come from a generator of their own: the other draws replay as before.
        self.operator = SimOperator(self, random.Random(f"admin-{plan.seed}-{plan.nodes}"))
        self.admin_addr = CLIENT_BASE + 999
        for node in self.nodes.values():
            node.disk.incarnation = self.operator.new_incarnation()  # every node founds the cluster (--init)
        self.clients = [SimClient(k) for k in range(plan.clients)]
        self.now = 0
        self.faults: dict[str, int] = {}
        self.partition_until = 0
        self.reads = 0
        self._leader_killed_at: int | None = None
        self._leader_killed_epoch = 0
        self.failovers: list[int] = []
        self._leader_commit: dict[int, int] = {}
        # Hints draw from a generator of their own: the other draws replay as before.
        self.hints = SimHints(plan, random.Random(f"hint-{plan.seed}-{plan.nodes}"), self._count)
        for node in self.nodes.values():
            self._boot(node)

    # ------------------------------------------------------------ lifecycle

    def _log(self, text: str) -> None:
        if self.trace_on:
            self.trace.append(f"[{self.now:6d}] {text}")

    def _boot(self, node: SimNode) -> None:
        replay = node.disk.replay()
        snap = self._start_snapshot(node, replay)
        if snap is not None and replay.first_index > 1 and not snapshot_fits(
                snap, replay.first_index, replay.prev_epoch, [e.epoch for e in replay.entries]):
            node.disk.rewrite(snap.index + 1, snap.epoch, [])  # zrep.node.loop: the snapshot wins, the log goes
            replay = node.disk.replay()
        node.lives += 1
        base = snapshot_config(snap.store) if snap is not None else None
        if base is None:  # zrep.node.start: the seeds for a founding member, nothing for a joining one
            base = Config(0, ()) if node.disk.joined else provisional_config(self.ids)
        replica = Replica(
            node.id,
            base,
            incarnation=node.disk.incarnation,
            rng=random.Random(f"replica-{self.plan.seed}-{node.id}-{node.lives}"),
            timing=self.plan.timing,
            hard_state=replay.hard_state,
            log=LogView(replay.entries, replay.first_index, replay.prev_epoch),
            commit=max(replay.commit, snap.index) if snap else replay.commit,
            applied=snap.index if snap else 0,
            bugs=self.plan.bugs,
        )
        ticks = 3 * self.plan.timing.election_ticks
        svc = node.service = Service(replica, snap.store if snap else Store(), request_ticks=ticks)
        svc.on_apply = lambda entry, answer, n=node.id, s=svc: self._applied(n, s, entry)
        p = self.plan
        svc.snapshots = SimSnapshots(node.disk, p.chunk_bytes, p.window_chunks,
                                     lambda: self.snap_rng.random() < p.install_crash_p)
        svc.on_install = lambda got, n=node: self._installed(n, got)
        node.inbox.clear()
        node.paused_until = 0
        self.checker.restarted(node.id, replay.entries, replay.first_index, replay.prev_epoch)
        if snap is not None:
            self.checker.store_at(node.id, snap.index, snap.store.digest())
        self._log(f"node {node.id} starts (life {node.lives}): epoch {replay.hard_state.epoch}, "
                  f"{len(replay.entries)} entries, commit {replay.commit}")

    def _start_snapshot(self, node: SimNode, replay: Any) -> Snapshot | None:
        """zrep.storage.snapshot_files.load_snapshot's rules: required under a compacted log, else a shortcut."""
        snap = None
        if node.disk.snapshot is not None:
            try:
                snap = decode_snapshot(node.disk.snapshot)
            except DecodeError as e:
                raise Violation(f"tick {self.now}: node {node.id}'s snapshot does not decode: {e}") from None
        if replay.first_index > 1:
            if snap is None or snap.index < replay.first_index - 1:
                raise Violation(f"tick {self.now}: node {node.id}'s log starts at {replay.first_index} "
                                f"but its snapshot holds {snap.index if snap else 'nothing'}")
            return snap
        fits = snap is not None and snapshot_fits(snap, 1, 0, [e.epoch for e in replay.entries])
        return snap if fits else None

    def _applied(self, node: int, svc: Service, entry: Entry) -> None:
        self.checker.applied_entry(node, entry)
        self.checker.store_at(node, entry.index, svc.store.digest())

    def _installed(self, node: SimNode, snap: Snapshot) -> None:
        rep = node.service.replica
        self.checker.installed(node.id, snap.index, snap.epoch, kept=rep.log.last_index > snap.index)
        self.checker.store_at(node.id, snap.index, snap.store.digest())
        self._count("snapshot_install")
        self._log(f"node {node.id} installed the snapshot of index {snap.index}")

    def _snapshot_turn(self, node: SimNode) -> None:
        """Maybe snapshot the store, then compact the log below it (as zrep.node.loop does)."""
        p, rng = self.plan, self.snap_rng
        if not p.snapshot_p or rng.random() >= p.snapshot_p:
            return
        svc = node.service
        rep, store, disk = svc.replica, svc.store, node.disk
        applied = store.applied_index
        have = decode_header(disk.snapshot)[0] if disk.snapshot is not None else 0
        if applied <= have:
            return
        disk.snapshot = encode_snapshot(applied, rep.log.epoch_at(applied), store.to_bytes())
        self._count("snapshot")
        upto = applied - p.keep_entries
        if upto < rep.log.first_index or rep.stable != rep.log.last_index:
            return
        crash = rng.random() < p.compact_crash_p
        if crash and rng.random() < 0.5:
            self._crash(node, "compaction")  # the snapshot is in place, the log not yet rewritten
            return
        try:
            disk.rewrite(upto + 1, rep.log.epoch_at(upto), rep.log.slice(upto + 1, rep.log.last_index))
        except SimCrash:  # its flush of what was buffered failed
            self._crash(node, "compaction")
            return
        rep.compact(upto)
        self._count("compaction")
        if crash:
            self._crash(node, "compaction")  # right after the rename

    def _maybe_wipe(self) -> None:
        p, rng = self.plan, self.snap_rng
        dead = [n for n in self.nodes.values() if n.service is None]
        if not dead or not p.wipe_p or rng.random() >= p.wipe_p:
            return
        target = rng.choice(dead)
        if not self.operator.may_wipe(target):
            return  # it would leave a configuration without a quorum of intact disks
        self.operator.forget_disk(target)
        target.restart_at = max(target.restart_at, self.now + 2 * p.timing.election_ticks + p.link.max_delay)
        self._count("wipe")
        self._log(f"node {target.id}'s disk wiped; restarts at {target.restart_at}")

    def _crash(self, node: SimNode, why: str) -> None:
        self._leader_commit.pop(node.id, None)
        claimed = self._claimed_stable(node)
        lost = node.disk.crash(self.rng)
        if claimed:
            self._check_stable_survived(node, claimed)
        self.net.lose_unflushed(node.id, self.plan.unflushed_loss)
        if node.service is not None and node.service.replica.role == Role.LEADER:
            # It may have committed in this very step, unobserved: the wipe rule needs to know.
            self.checker.saw_commit(node.service.replica.hs.epoch, node.service.replica.commit)
            if self._leader_killed_at is None:
                self._leader_killed_at = self.now
                self._leader_killed_epoch = node.service.replica.hs.epoch
        node.service = None
        node.inbox.clear()
        node.disk.crash_on_sync = False
        self.hints.death(self.now, node.id, self._lives())
        lo, hi = self.plan.restart_ticks
        node.restart_at = self.now + self.rng.randint(lo, hi)
        self._count({"fsync": "crash_in_fsync", "compaction": "crash_in_compaction"}.get(why, "crash"))
        self._log(f"node {node.id} crashes ({why}); {lost} unsynced records lost")

    @staticmethod
    def _claimed_stable(node: SimNode) -> list[Entry]:
        """The entries the dying node's core counted as on its disk (`stable`)."""
        if node.service is None:
            return []
        rep = node.service.replica
        return rep.log.slice(rep.log.first_index, rep.stable) if rep.stable >= rep.log.first_index else []

    def _check_stable_survived(self, node: SimNode, claimed: list[Entry]) -> None:
        """What a core counted as durable (for commit, durable_on, applying) must be in the
        log its disk replays after the crash, whichever unsynced records the crash kept."""
        replay = node.disk.replay()
        have = {e.index: e for e in replay.entries}
        for e in claimed:
            if e.index < replay.first_index:
                continue  # compacted into the snapshot
            if have.get(e.index) != e:
                raise Violation(f"tick {self.now}: node {node.id} counted entry {e.index} (epoch {e.epoch}) "
                                f"as durable, but its disk replays {have.get(e.index)} after a crash")

    # ------------------------------------------------------------ disconnect hints

    def _lives(self) -> list[tuple[int, int]]:
        return [(n.id, n.lives) for n in self._alive()]

    def _life_of(self, node_id: int) -> int | None:
        node = self.nodes[node_id]
        return node.lives if node.service is not None else None

    def _deliver_hints(self) -> None:
        for node_id, life, peer in self.hints.due(self.now):
            node = self.nodes[node_id]
            if node.service is None or node.lives != life:
                continue  # that process is gone: its sockets (and their monitor) with it
            self._log(f"node {node_id} hears its connection to node {peer} close")
            if node.paused_until > self.now:
                node.inbox.append(Hint(peer))
            else:
                node.service.replica.peer_disconnected(peer)

    def _count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1

    # ------------------------------------------------------------ one tick

    def step(self, faults_on: bool) -> None:
        self.now += 1
        self.checker.now = self.now
        if faults_on:
            self._nemesis()
            self.hints.flap(self.now, self._lives(), self.ids)
        for node in self.nodes.values():
            if node.service is None and node.restart_at <= self.now:
                self._boot(node)
        self._deliver_hints()
        self._deliver()
        for node in self.nodes.values():
            self._run_node(node)
        self._clients_tick(faults_on)
        self._observe()
        self.operator.check()
        self.operator.tick(faults_on)

    def _deliver(self) -> None:
        for dst, payload in self.net.due(self.now):
            if dst == self.admin_addr:
                self._log(f"operator hears {payload.result}")
                continue
            if dst >= CLIENT_BASE:
                self._client_reply(self.clients[dst - CLIENT_BASE], payload)
                continue
            node = self.nodes[dst]
            if node.service is None:
                continue
            if node.paused_until > self.now:
                node.inbox.append(payload)
            else:
                self._handle(node, payload)

    def _handle(self, node: SimNode, payload: Any) -> None:
        svc = node.service
        if type(payload) is Hint:
            svc.replica.peer_disconnected(payload.peer)
        elif isinstance(payload, tuple):  # a client request
            kind, route, body = payload
            if kind == "write":
                svc.submit_write(route, body)
            else:
                svc.submit_read(route, body)
        else:
            svc.replica.step(payload)

    def _run_node(self, node: SimNode) -> None:
        if node.service is None or node.paused_until > self.now:
            return
        if node.inbox:
            held, node.inbox = node.inbox, []
            for payload in held:
                self._handle(node, payload)
        node.acc += node.speed
        while node.acc >= 1.0:
            node.acc -= 1.0
            node.service.replica.tick()
        try:
            done = node.service.process(node.disk, lambda m: self._send_peer(node.id, m), self._log)
        except SimCrash:
            self._crash(node, "fsync")
            return
        for d in done:
            self.net.send(self.now, node.id, d.route[0], d)
        self._snapshot_turn(node)
        if node.service is not None and node.service.replica.removed:
            self.operator.removed(node)

    def _stop(self, node: SimNode) -> None:
        self._crash(node, "removed")

    def _send_peer(self, src: int, msg: Any) -> None:
        if msg.dst == 0:
            for peer in self.ids:
                if peer != src:
                    self.net.send(self.now, src, peer, msg)
        else:
            self.net.send(self.now, src, msg.dst, msg)

    def _observe(self) -> None:
        for node in self._alive():
            rep = node.service.replica
            if rep.role == Role.LEADER:
                self.checker.saw_commit(rep.hs.epoch, rep.commit)
        for node in self.nodes.values():
            if node.service is None:
                continue
            rep = node.service.replica
            if rep.role == Role.LEADER:
                self.checker.saw_leader(node.id, rep.hs.epoch, rep.log)
                if self._leader_killed_at is not None and rep.hs.epoch > self._leader_killed_epoch:
                    self.failovers.append(self.now - self._leader_killed_at)
                    self._leader_killed_at = None
            self.checker.saw_progress(node.id, rep.commit, rep.applied)

    # ------------------------------------------------------------ nemesis

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.service is not None]

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self._alive() if n.service.replica.role == Role.LEADER]
        return max(leaders, key=lambda n: n.service.replica.hs.epoch) if leaders else None

    def _leader_since(self, node: SimNode) -> int:
        return node.service.replica.leader_since

    def _nemesis(self) -> None:
        p, rng = self.plan, self.rng
        alive = self._alive()
        leader = self._leader()
        if alive and rng.random() < p.crash_p:
            target = leader if leader is not None and rng.random() < 0.5 else rng.choice(alive)
            self._crash(target, "kill")
        elif leader is not None and leader.service.replica.now - self._leader_since(leader) < p.timing.election_ticks:
            if rng.random() < p.churn_p:
                self._crash(leader, "kill")
                self._count("kill_new_leader")
        elif leader is not None and leader.service.replica.commit > self._leader_commit.get(leader.id, 0):
            self._leader_commit[leader.id] = leader.service.replica.commit
            if rng.random() < p.kill_on_commit_p:
                self._crash(leader, "kill")
                self._count("kill_after_commit")
        self._maybe_wipe()
        if alive and rng.random() < p.sync_crash_p:
            rng.choice(alive).disk.crash_on_sync = True
        if alive and rng.random() < p.pause_p:
            target = rng.choice(alive)
            if target.paused_until <= self.now:
                lasts = rng.randint(*p.pause_ticks)
                target.paused_until = self.now + lasts
                self.hints.stall(self.now, [(target.id, i) for i in self.ids if i != target.id], lasts, self._life_of)
                self._count("pause")
                self._log(f"node {target.id} paused until {target.paused_until}")
        if self.partition_until and self.now >= self.partition_until:
            self.net.heal()
            self.partition_until = 0
            self._log("partition healed")
        elif not self.partition_until and rng.random() < p.partition_p:
            self._partition()

    def _partition(self) -> None:
        rng, everyone = self.rng, set(self.ids)
        leader = self._leader()
        shape = rng.choice(("isolate", "leader_minority", "split", "one_way"))
        minority = (len(self.ids) - 1) // 2
        if shape == "isolate" or shape == "one_way":
            group = {leader.id if leader is not None and rng.random() < 0.5 else rng.choice(self.ids)}
        elif shape == "leader_minority" and leader is not None:
            others = [i for i in self.ids if i != leader.id]
            group = {leader.id, *rng.sample(others, max(0, minority - 1))}
        else:
            group = set(rng.sample(self.ids, rng.randint(1, minority)))
        self.net.isolate(group, everyone, one_way=(shape == "one_way"))
        lasts = rng.randint(*self.plan.partition_ticks)
        self.partition_until = self.now + lasts
        self.hints.stall(self.now, [(a, b) for a in group for b in everyone - group], lasts, self._life_of)
        self._count(f"partition_{shape}")
        self._log(f"partition {shape}: {sorted(group)} cut off until {self.partition_until}")

    def heal(self) -> None:
        self.net.heal()
        self.net.faults = LinkFaults(min_delay=1, max_delay=self.plan.link.max_delay)
        self.partition_until = 0
        for node in self.nodes.values():
            node.paused_until = 0
            node.disk.crash_on_sync = False
            if node.service is None:
                node.restart_at = self.now
        self._log("all faults healed")

    # ------------------------------------------------------------ clients

    def _clients_tick(self, faults_on: bool) -> None:
        attempt_ticks = 4 * self.plan.timing.election_ticks
        for c in self.clients:
            if c.op is None:
                if not faults_on or self.rng.random() >= self.plan.op_p:
                    continue
                c.op = self._new_op(c)
                self._attempt(c, attempt_ticks)
            elif self.now >= c.op.deadline:
                self._attempt(c, attempt_ticks)

    def _new_op(self, c: SimClient) -> Op:
        mailbox = self.rng.choice(MAILBOXES)
        if self.rng.random() < 0.3:
            return Op("read", mailbox, self.now)
        c.seq += 1
        body = f"{c.name}-{c.seq}".encode()
        # One operation at a time: the lowest seq still awaited is this one.
        cmd = encode_send(c.name, c.seq, c.seq, c.name, mailbox, body)
        return Op("send", mailbox, self.now, c.seq, body, cmd)

    def _attempt(self, c: SimClient, attempt_ticks: int) -> None:
        op = c.op
        c.tokens += 1
        op.token = c.tokens
        op.deadline = self.now + attempt_ticks
        node = c.leader_hint if c.leader_hint and self.rng.random() < 0.7 else self.rng.choice(self.ids)
        route = (c.addr, op.token)
        if op.kind == "send":
            self.net.send(self.now, c.addr, node, ("write", route, op.command))
        else:
            self.net.send(self.now, c.addr, node, ("read", route, {"op": "read", "mailbox": op.mailbox, "limit": 10_000}))

    def _client_reply(self, c: SimClient, done: Done) -> None:
        op = c.op
        if op is None or done.route[1] != op.token:
            return  # an answer to an attempt we gave up on
        r = done.result
        if not r.get("ok"):
            if r.get("error") in ("NOT_LEADER", "NO_LEADER", "TIMEOUT"):
                c.leader_hint = r.get("leader", 0) or 0
                op.deadline = self.now + 2  # retry soon, same (client, seq)
                return
            raise Violation(f"tick {self.now}: client {c.name} got unexpected answer {r}")
        if op.kind == "send":
            self.checker.acked(Ack(c.name, op.seq, op.mailbox, op.body, r["index"], r["offset"], self.now))
            self._log(f"client {c.name} send {op.seq} acked at index {r['index']} offset {r['offset']}")
        else:
            self.reads += 1
            self.checker.read_returned(op.mailbox, op.start, [row[2] for row in r["messages"]])
        c.op = None

    # ------------------------------------------------------------ the run

    def converged(self) -> bool:
        if any(c.op is not None for c in self.clients):
            return False
        leader = self._leader()
        if leader is None or any(n.service is None for n in self.nodes.values()):
            return False
        lrep = leader.service.replica
        if lrep.commit < lrep.log.last_index:
            return False
        if not self.operator.settled():
            return False
        digests = {n.service.store.digest() for n in self.nodes.values()}
        applied = {n.service.store.applied_index for n in self.nodes.values()}
        return len(digests) == 1 and applied == {lrep.commit}

    def final_check(self) -> None:
        leader = self._leader()
        store = leader.service.store
        for ack in self.checker.acks.values():
            msgs = store.read(ack.mailbox, ack.offset - 1, 1)
            if not msgs or msgs[0].offset != ack.offset or msgs[0].body != ack.body:
                raise Violation(f"acknowledged write {(ack.client, ack.seq)} lost: not at {ack.mailbox}@{ack.offset}")
        for box in MAILBOXES:
            bodies = [m.body for m in store.read(box, -1, 10_000_000)]
            if len(bodies) != len(set(bodies)):
                raise Violation(f"mailbox {box} holds a message twice")

    def run(self) -> SimResult:
        for _ in range(self.plan.fault_ticks):
            self.step(faults_on=True)
        self.heal()
        start = self.now
        while not self.converged():
            if self.now - start > self.plan.heal_ticks:
                raise Violation(
                    f"tick {self.now}: no convergence {self.plan.heal_ticks} ticks after the heal "
                    f"({self.describe()})"
                )
            self.step(faults_on=False)
        self.final_check()
        leader = self._leader().service.replica
        return SimResult(
            seed=self.plan.seed,
            nodes=self.plan.nodes,
            ticks=self.now,
            faults=dict(self.faults),
            elections=len(self.checker.leaders),
            commit=leader.commit,
            acked_writes=len(self.checker.acks),
            reads=self.reads,
            failover_ticks=list(self.failovers),
            converge_ticks=self.now - start,
            election_ticks=self.plan.timing.election_ticks,
        )

    def describe(self) -> str:
        parts = []
        for n in self.nodes.values():
            if n.service is None:
                parts.append(f"{n.id}:down")
                continue
            r = n.service.replica
            parts.append(f"{n.id}:{r.role.name.lower()} e{r.hs.epoch} last {r.log.last_index} "
                         f"commit {r.commit} applied {r.applied}")
        busy = sum(1 for c in self.clients if c.op is not None)
        return "; ".join(parts) + f"; {busy} clients busy"


def run_seed(seed: int, nodes: int = 3, bugs: frozenset[str] = frozenset(), trace: bool = False,
             fault_ticks: int = 600) -> tuple[SimResult | None, str | None, list[str]]:
    """Run one seed. Returns (result, violation message or None, trace lines)."""
    plan = SimPlan.from_seed(seed, nodes, bugs, fault_ticks)
    cluster = SimCluster(plan, trace)
    try:
        return cluster.run(), None, cluster.trace
    except Violation as v:
        return None, str(v), cluster.trace
    except InvariantError as e:  # a replica caught its own broken rule: a finding too
        return None, f"tick {cluster.now}: InvariantError: {e}", cluster.trace


def median(values: list[int]) -> float:
    return statistics.median(values) if values else 0.0
