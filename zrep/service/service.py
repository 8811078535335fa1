"""`Service`: a replica, its message store and its waiting clients — a whole
node except for sockets, files and the clock. Pure; shared by the real node
(zrep.node.loop) and the simulator (zrep.sim), so both run the same glue.

Invariants:
  * Client answers come from the store after the entry is applied, so a
    follower and a leader answer a write identically (the store keeps the
    answer of every (client, seq) it applied: a retry gets the original).
  * Writes proposed in one loop iteration go to the core in one batch (one
    append per follower, one fsync).
  * A linearizable read is answered only once the store has applied the
    read index that the leader confirmed.
  * Linearizable reads submitted between two `process` calls share one read
    index request: the core fixes its index inside `process`, after every one
    of them arrived, so it is as fresh as each needs (one confirmation, one
    ReadIndexRequest from a follower, for them all).
  * A write still waiting when the leader changes is proposed again to the
    new leader (or appended, if this node is it): its first copy may have died
    with the old leader. The store applies a (client, seq) once, so a copy that
    survived costs a log entry, never a second effect; the client is answered
    right after the new leader commits instead of after its own timeout.
  * Snapshot shipping goes through `snapshots` (a SnapshotPort: the files or
    the simulator's bytes). A follower's store is replaced by a received
    snapshot only after the port made it durable (file in place, WAL
    rewritten), and only then does the core ack it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from zrep.core.membership import Config, decode_config, encode_config
from zrep.core.messages import Entry, Message, Role
from zrep.core.ready import ReadState, Ready
from zrep.core.replica import Replica
from zrep.service.apply import Storage, apply_ready
from zrep.service.membership import Refused, members_view, plan_change
from zrep.service.pending import Done, Pending, error
from zrep.service.shipping import Receiver, Shipper
from zrep.store.commands import command_key
from zrep.store.snapshot import Snapshot
from zrep.store.store import Store

ROLE_NAMES = {Role.FOLLOWER: "follower", Role.ELECTING: "electing", Role.CANDIDATE: "candidate", Role.LEADER: "leader"}


class SnapshotPort(Protocol):
    """Snapshot bytes for a Service: what it ships, where it receives, how it installs."""

    shipper: Shipper
    receiver: Receiver

    def install(self, snap: Snapshot, kept: Sequence[Entry]) -> None:
        """Make the received snapshot durable in place, then rewrite the log as
        SNAPSHOT_MARK(snap.index + 1, snap.epoch) followed by `kept`."""
        ...

    def discard(self) -> None:
        """Drop the received snapshot (the store already holds it)."""
        ...


class Service:
    def __init__(self, replica: Replica, store: Store, *, request_ticks: int, all_ticks: int | None = None) -> None:
        self.replica = replica
        self.store = store
        self.pending = Pending()
        self.request_ticks = request_ticks  # deadline of a client request, in ticks
        self.all_ticks = all_ticks if all_ticks is not None else request_ticks
        self._batch: list[tuple[bytes, tuple[str, int], Any, bool]] = []
        self._proposed: dict[tuple[str, int], bytes] = {}  # waiting writes' commands, for a new leader
        self._proposed_under: tuple[int, int] = (0, 0)  # (leader, epoch) they were last proposed to
        self._next_ctx = 0
        self._read_ctx: int | None = None  # the read index request the reads arriving now share
        self._done: list[Done] = []
        self._durable = _DurableRun(replica, 0)
        self.on_apply: Callable[[Entry, dict[str, Any] | None], None] | None = None  # observers (sim checks)
        self.snapshots: SnapshotPort | None = None
        self.on_install: Callable[[Snapshot], None] | None = None  # observers (sim checks, node bookkeeping)
        # Membership changes this leader appended: index -> (route, deadline, the entry's data).
        self._changes: dict[int, tuple[Any, int, bytes]] = {}
        self._transfers: list[tuple[Any, int, int]] = []  # (route, target, deadline) of transfers under way

    # ------------------------------------------------------------ requests

    def submit_write(self, route: Any, command: bytes, ack_all: bool = False,
                     key: tuple[str, int] | None = None) -> None:
        """`key` is the command's (client, seq) when the caller built the command
        from checked fields (saves decoding it again); else it is decoded here."""
        if key is None:
            key = command_key(command)
        if key is None:
            self._done.append(Done(route, error("BAD_REQUEST", "the command does not decode; fix the client")))
            return
        kept = self.store.cached_answer(*key)
        if kept is not None and not ack_all:
            self._done.append(Done(route, kept))  # a retry of an applied command
            return
        if ack_all and self.replica.role != Role.LEADER:
            self._done.append(Done(route, self._not_leader("ack=all is answered by the leader only")))
            return
        self._batch.append((command, key, route, ack_all))

    def submit_read(self, route: Any, query: dict[str, Any], stale: bool = False) -> None:
        if stale:
            self._done.append(Done(route, self.run_query(query)))
            return
        if self._read_ctx is None:
            self._next_ctx += 1
            if not self.replica.read_index(self._next_ctx):
                self._done.append(Done(route, error("NO_LEADER", "no leader known; retry shortly", leader=0)))
                return
            self._read_ctx = self._next_ctx
        self.pending.add_read(self._read_ctx, route, self.replica.now + self.request_ticks, query)

    def submit_admin(self, route: Any, request: dict[str, Any]) -> None:
        """A membership request (zrep.service.membership): `members` is answered here at
        once; a change is answered once its configuration entry is applied (committed)."""
        rep = self.replica
        if request.get("op") == "members":
            self._done.append(Done(route, {"ok": True, **members_view(rep)}))
            return
        if request.get("op") == "transfer":
            self._start_transfer(route, request.get("id", 0))
            return
        try:
            new = plan_change(rep, request)
        except Refused as e:
            extra = {"leader": rep.leader} if e.code == "NOT_LEADER" else {}
            if e.code == "NOT_LEADER" and not rep.leader:
                e = Refused("NO_LEADER", "no leader known; retry shortly")
            self._done.append(Done(route, error(e.code, str(e), **extra)))
            return
        index, why = rep.change_config(new)
        if not index:
            self._done.append(Done(route, error("UNAVAILABLE", why)))
            return
        self._changes[index] = (route, rep.now + self.request_ticks, encode_config(new))

    def _start_transfer(self, route: Any, target: Any) -> None:
        rep = self.replica
        if type(target) is not int or target < 0:
            self._done.append(Done(route, error("BAD_REQUEST", "the node id must be a positive integer (or 0: any)")))
            return
        if target and rep.leader == target:
            # Already so: an attempt that went unanswered did it, or the operator asks twice.
            self._done.append(Done(route, {"ok": True, **members_view(rep), "asked": target}))
            return
        if rep.role != Role.LEADER:
            self._done.append(Done(route, self._not_leader("a leadership transfer starts at the leader")))
            return
        chosen, why = rep.transfer_leadership(target)
        if not chosen:
            self._done.append(Done(route, error("UNAVAILABLE", why)))
            return
        self._transfers.append((route, chosen, rep.now + self.request_ticks))

    def _transfer_progress(self) -> None:
        """Answer transfer requests once leadership moved, or the transfer was abandoned."""
        rep = self.replica
        if rep.role == Role.LEADER and rep.transfer_to:
            return
        waiting = []
        for route, target, deadline in self._transfers:
            if rep.role != Role.LEADER and rep.leader:
                self._done.append(Done(route, {"ok": True, **members_view(rep), "asked": target}))
            elif rep.role == Role.LEADER:
                self._done.append(Done(route, error("UNAVAILABLE", f"node {target} did not take over within "
                                                    "an election timeout; this node leads on")))
            elif rep.now >= deadline:
                self._done.append(Done(route, error("TIMEOUT", "this node stepped down but no new leader is "
                                                    "known yet; see zrep admin members")))
            else:
                waiting.append((route, target, deadline))  # stepped down; the new leader is not known yet
        self._transfers = waiting

    def _change_applied(self, entry: Entry) -> None:
        route, _, data = self._changes.pop(entry.index)
        if entry.data == data:
            self._done.append(Done(route, {"ok": True, "index": entry.index, **members_view(self.replica)}))
        else:
            self._done.append(Done(route, error("UNAVAILABLE", "the change was lost in a leader change; "
                                                "see zrep admin members, then retry")))

    def _expire_changes(self) -> None:
        now = self.replica.now
        for index in [i for i, (_, deadline, _) in self._changes.items() if deadline <= now]:
            route = self._changes.pop(index)[0]
            self._done.append(Done(route, error("TIMEOUT", "the change did not commit in time; outcome "
                                                "unknown: see zrep admin members")))

    def run_query(self, query: dict[str, Any]) -> dict[str, Any]:
        """Answer a read from the local store, saying how fresh it is."""
        applied = self.store.applied_index
        op = query.get("op")
        if op == "read":
            rows = self.store.read_rows(query["mailbox"], query.get("after", -1), query.get("limit", 100))
            return {"ok": True, "messages": rows, "applied": applied}
        if op == "mailboxes":
            return {"ok": True, "mailboxes": self.store.mailbox_rows(query.get("pattern", "*")),
                    "applied": applied}
        return error("BAD_REQUEST", f"unknown query {op!r}")

    def _not_leader(self, why: str) -> dict[str, Any]:
        leader = self.replica.leader
        code = "NOT_LEADER" if leader else "NO_LEADER"
        return error(code, f"{why}; {'the leader is node %d' % leader if leader else 'no leader known, retry shortly'}",
                     leader=leader)

    # ------------------------------------------------------------ the loop body

    def process(self, storage: Storage, send: Callable[[Message], None], note: Callable[[str], None] | None = None) -> list[Done]:
        """Propose the batch, then apply every Ready the core has. Returns the answers to send."""
        # The core fixes the read index of the open ctx below (Replica.ready), after every
        # read that shares it arrived: a read submitted from now on needs a new one.
        self._read_ctx = None
        self._repropose_on_new_leader()
        self._propose_batch()
        rep = self.replica
        while rep.has_ready():
            ready = rep.ready()
            self._durable = _DurableRun(rep, ready.committed[-1].index if ready.committed else 0)
            apply_ready(rep, ready, storage, send, self._apply, self._on_read, note)
            if ready.ship or ready.chunks:
                self._snapshot_work(ready, send)
            if ready.committed:
                for route, query in self.pending.reads_ready(self.store.applied_index):
                    self._done.append(Done(route, self.run_query(query)))
        for route, query in self.pending.reads_ready(self.store.applied_index):
            self._done.append(Done(route, self.run_query(query)))
        self._done += self.pending.check_all(rep.durable_on, rep.voters, rep.now)
        if self._changes:
            self._expire_changes()
        if self._transfers:
            self._transfer_progress()
        expired = self.pending.expire(rep.now)
        if expired:
            self._done += expired
            self._proposed = {k: c for k, c in self._proposed.items() if self.pending.waiting(k)}
        done, self._done = self._done, []
        return done

    def _repropose_on_new_leader(self) -> None:
        rep = self.replica
        under = (rep.leader, rep.hs.epoch)
        if not rep.leader or under == self._proposed_under:
            return
        self._proposed_under = under
        waiting = {k: c for k, c in self._proposed.items() if self.pending.waiting(k)}
        self._proposed = waiting
        if waiting:
            rep.propose(list(waiting.values()))

    def _propose_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        proposal = self.replica.propose([cmd for cmd, _, _, _ in batch])
        if not (proposal.accepted or proposal.forwarded):
            for _, _, route, _ in batch:
                self._done.append(Done(route, self._not_leader("no leader to take the write")))
            return
        self._proposed_under = (self.replica.leader, self.replica.hs.epoch)
        deadline = self.replica.now + self.request_ticks
        for cmd, key, route, ack_all in batch:
            self.pending.add_write(key, route, self.replica.now + self.all_ticks if ack_all else deadline, ack_all)
            self._proposed[key] = cmd

    def _apply(self, entry: Entry) -> None:
        answer = self.store.apply(entry.index, entry.data)
        if self._changes and entry.index in self._changes:
            self._change_applied(entry)
        if self.on_apply is not None:
            self.on_apply(entry, answer)
        if answer is None:
            return
        key = self.store.last_key  # decoded once, by the store
        if key is None or not self.pending.waiting(key):
            return  # nobody here waits for it (most entries on a follower)
        self._answer_write(key, entry.index, answer, entry.epoch, self._durable.at)

    def _answer_write(self, key: tuple[str, int], applied: int, answer: dict[str, Any], epoch_if_gone: int,
                      durable_on: Callable[[int], list[int]]) -> None:
        """Answer the client waiting for write `key` with the store's answer, completed in place
        (the store hands out a fresh dict; it keeps its own packed copy)."""
        index = answer.get("index", applied)  # a duplicate's kept answer names the original entry's index
        answer["epoch"] = self.replica.log.epoch_at(index) or epoch_if_gone
        answer["durable_on"] = durable_on(index)
        answer["leader"] = self.replica.leader
        self._done += self.pending.on_applied(key, applied, answer)
        self._proposed.pop(key, None)

    def _snapshot_work(self, ready: Ready, send: Callable[[Message], None]) -> None:
        port, rep = self.snapshots, self.replica
        if port is None:
            return  # this node keeps every entry, so it never asks; chunks to it are dropped
        for order in ready.ship:
            for chunk in port.shipper.chunks(order, rep.id, rep.hs.epoch):
                send(chunk)
        for chunk in ready.chunks:
            offset, snap = port.receiver.receive(chunk)
            if snap is None:
                rep.snapshot_stored(chunk, offset)
            elif rep.wants_install(chunk):
                port.install(snap, rep.kept_after(snap.index, snap.epoch))
                self.store = snap.store
                rep.snapshot_installed(chunk, True, snapshot_config(snap.store))
                self._answer_from_store()
                if self.on_install is not None:
                    self.on_install(snap)
            else:
                port.discard()
                rep.snapshot_installed(chunk, False)

    def _answer_from_store(self) -> None:
        """Writes waiting here whose entries came inside an installed snapshot: the store
        kept their answers (it keeps every client's, from its lowest awaited seq up)."""
        for key in [k for k in self._proposed if self.pending.waiting(k)]:
            kept = self.store.cached_answer(*key)
            if kept is not None:  # its entry's epoch may be gone with the log: 0 says unknown
                applied = kept.get("index", self.store.applied_index)
                self._answer_write(key, applied, kept, 0, lambda i: list(self.replica.durable_on(i)))

    def _on_read(self, read: ReadState) -> None:
        self._done += self.pending.on_read_index(read.ctx, read.index)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        s = self.replica.status()
        s["role_name"] = ROLE_NAMES[Role(s["role"])]
        s["digest"] = self.store.digest()
        s["store_applied"] = self.store.applied_index
        return s


class _DurableRun:
    """`replica.durable_on` for the entries of one Ready, asked a few times per
    Ready rather than once per entry (a good part of the leader's apply cost).

    Sound because the replica does not change while a Ready is applied, and the
    members holding index i only shrink as i grows: the indexes on the same
    members form one run, whose end a binary search finds.
    """

    __slots__ = ("_durable_on", "_end", "_lo", "_hi", "_members")

    def __init__(self, replica: Replica, end: int) -> None:
        self._durable_on = replica.durable_on
        self._end = end  # the last index of the Ready: runs end there at the latest
        self._lo, self._hi, self._members = 1, 0, ()  # an empty run

    def at(self, index: int) -> list[int]:
        """The members holding `index` on disk, in id order (a new list each time)."""
        if not self._lo <= index <= self._hi:
            self._lo, self._members = index, self._durable_on(index)
            self._hi = self._run_end(index, self._members)
        return list(self._members)

    def _run_end(self, index: int, members: tuple[int, ...]) -> int:
        lo, hi = index, self._end  # durable_on(lo) == members; find the last such index up to hi
        if hi <= lo or self._durable_on(hi) == members:
            return max(lo, hi)
        while hi - lo > 1:  # invariant: durable_on(lo) == members != durable_on(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._durable_on(mid) == members else (lo, mid)
        return lo


def snapshot_config(store: Store) -> Config | None:
    """The configuration a store (a snapshot's) holds; None for a store from before configurations."""
    return decode_config(store.config_entry) if store.config_entry else None
