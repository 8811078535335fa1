"""`Node`: the one event loop of a zrep node (DESIGN section 3).

Each turn of the loop:
  1. poll the sockets for at most the time left to the next tick;
  2. decode and feed what arrived (at most DRAIN_BUDGET frames per socket, so
     a flood cannot starve the ticks): peer messages to `replica.step`,
     client requests to the op table (zrep.node.requests: writes are batched,
     reads registered);
  3. run `replica.tick()` once per tick that has elapsed (capped after a
     long pause, which only ever makes timeouts longer; one tick only if a
     peer's message was read in this turn: the time the loop did not read
     is not that peer's silence, though it still counts toward the next
     heartbeat, which peers wait for on wall time), and the snapshot
     schedule's turn (zrep.node.compaction);
  4. `service.process(wal, send, note)`: the shared driver sends, persists
     with one fsync (group commit), sends acks, applies; then every answer
     becomes a ClientReply; then the log is compacted if a snapshot allows it;
  5. `transport.flush()`: the replies to requests that came in a ClientBatch
     leave, coalesced per client into ClientReplies frames. The requests of
     a batch take the same path as single ones (its writes are proposed
     together, its reads share a read index round); nothing waits past the
     end of the turn that produced it.

Invariants:
  * Nothing touches the network or the disk except through `apply_ready`
    (via Service.process), the Transport, the Wal and the compaction between
    turns: an ack can never leave before its fsync.
  * Bad frames from clients or peers never raise: the transport answers or
    drops and counts them.
  * Only the loop thread touches sockets.
  * No per-message logging: one line per role change, election note from the
    core, and leader found (with how long the cluster was without one).
  * Membership: whenever the commit index or the configuration moves, the
    transport follows `replica.config` (links new members, unlinks removed
    ones) and a node the core calls removed (Replica.removed) leaves the
    loop; zrep.node.start then exits EXIT_REMOVED, keeping the data. Status
    says observer or learner for a follower that is not a voter, and what to
    run when the configuration names this id under another incarnation.

Start-up, exit codes and signals are in zrep.node.start; the core stays
unaware of this module.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from zrep.config import ClusterConfig, load_config
from zrep.core.log import LogView
from zrep.core.membership import Config
from zrep.core.messages import Forward, Message, Role
from zrep.core.ready import Timing
from zrep.core.replica import Replica
from zrep.errors import ConfigError, InvariantError
from zrep.node.compaction import Compaction
from zrep.node.file_snapshots import CHUNK_BYTES, FileSnapshots
from zrep.node.journal import Journal, note_kind
from zrep.node.requests import COMMAND_HEADROOM_BYTES, Requests
from zrep.node.stats import MeteredWal, NodeStats
from zrep.node.transport import Transport
from zrep.service.service import ROLE_NAMES, Service
from zrep.storage.snapshot_files import Snapshot
from zrep.storage.wal import Replay, Wal
from zrep.store.store import Store, StoreLimits
from zrep.wire.codec import encode

LATE_POLL_MS = 2  # how long a late loop waits for what arrived while it was not reading
REQUEST_MS = 10_000  # a client request waits at most this long for its entry (then TIMEOUT)
ACK_ALL_MS = 3_000  # an ack=all write waits this long for every member, then answers with who has it
NOT_RUNNING_EVERY_S = 10.0  # an election note "...; not running" that repeats is logged at most this often
DRAIN_BUDGET = 1000  # frames read per socket per turn, so a flood cannot starve ticks
HOUSEKEEPING_S = 1.0  # how often the loop refreshes its slow gauges and looks for timeline events
BEHIND_ENTRIES = 1000  # a follower this far behind the leader's log is "behind" on the timeline
SLOW_FSYNC_S = 0.1  # a WAL flush slower than this is an event on the timeline
REFUSED_EVENT_S = 10.0  # refused frames are told on the timeline at most this often
SLOW_FSYNC_EVENT_S = 5.0  # and slow flushes (a slow disk must not flood the log)
_ELECTION_COUNTERS = {"election_started": "elections_started", "election_won": "elections_won",
                      "election_lost": "elections_lost", "stood_aside": "elections_stood_aside"}
_PEER_REFUSALS = ("peer_undecodable", "peer_spoofed", "peer_bad_parts", "sub_refused")
_CLIENT_REFUSALS = ("client_bad", "client_too_large")

Log = Callable[[str], None]


class Node:
    """A running node: its WAL, Service, Transport, and the loop that joins them.

    `store` is already rebuilt up to `commit` (zrep.node.start.rebuild_store)."""

    def __init__(self, cfg: ClusterConfig, node_id: int, wal: Wal, replay: Replay, transport: Transport,
                 store: Store, commit: int, *, bugs: frozenset[str], log: Log,
                 snapshot: Snapshot | None = None, log_format: str = "text", base: Config | None = None,
                 incarnation: int = 0) -> None:
        self.cfg = cfg
        self.id = node_id
        self.wal = wal
        self.transport = transport
        self.journal = Journal(node_id, log, log_format)
        self.stats = NodeStats()
        if isinstance(wal, MeteredWal):
            wal.stats, wal.slow_s, wal.on_slow = self.stats, SLOW_FSYNC_S, self._slow_fsync
        self._tick_s = cfg.tick_ms / 1000
        timing = Timing.from_ms(cfg.heartbeat_ms, cfg.election_timeout_ms, cfg.tick_ms)
        # An Append batch must fit in one frame, or replication would stall on it.
        timing = replace(timing, max_batch_bytes=min(timing.max_batch_bytes, cfg.max_frame_bytes // 2))
        self._max_catchup_ticks = 2 * timing.election_ticks
        replica = Replica(
            node_id,
            base if base is not None else cfg.node_ids,
            rng=random.Random(),
            incarnation=incarnation,
            timing=timing,
            hard_state=replay.hard_state,
            log=LogView(replay.entries, replay.first_index, replay.prev_epoch),
            commit=commit,
            applied=store.applied_index,
            bugs=bugs,
        )
        # The log view now holds the entries (as columns): free the replay's Entry
        # objects, which would otherwise double a long log's memory for the node's life.
        replay.entries.clear()
        self.replica = replica
        # Stop (EXIT_REMOVED) once the core says a configuration that named this disk no longer
        # does; a wiped disk (a new incarnation no configuration named) waits as an observer instead.
        self.removed = False
        self._handover_until: float | None = None  # SIGTERM while leading: when the handover gives up
        self._commit_seen = -1
        self._config_seen: tuple[int, Config | None] = (-1, None)
        self.service = Service(
            replica,
            store,
            request_ticks=max(1, REQUEST_MS // cfg.tick_ms),
            all_ticks=max(1, ACK_ALL_MS // cfg.tick_ms),
        )
        self.requests = Requests(cfg, self.service, transport, self.status, self.stats)
        self.compaction = Compaction(cfg, node_id, replica, self.service, wal, self.journal, self.stats, snapshot)
        self._refused_seen = 0
        limits = StoreLimits(max_body_bytes=cfg.max_body_bytes)
        self.port = FileSnapshots(cfg.node_data_dir(node_id), wal, limits,
                                  min(CHUNK_BYTES, cfg.max_frame_bytes - COMMAND_HEADROOM_BYTES),
                                  self.compaction.before_install)
        self.service.snapshots = self.port
        self.service.on_install = self.compaction.installed
        self.started = self.turned_at = time.monotonic()
        self._seen = (replica.role, replica.leader)
        self._leaderless_since: float | None = self.started
        self._not_running: dict[str, tuple[float, int]] = {}  # reason -> (last logged, repeats since)
        self._last_suspicion = ""  # the core's last "suspects leader" or "stepping down" note: why a leader was lost
        self._housekeeping_at = 0.0
        self._behind: set[int] = set()
        self._refusals_told = (0, 0, 0.0)  # (peer, client) refusals already on the timeline, when told
        self._slow_flushes = (0, 0.0, -SLOW_FSYNC_EVENT_S)  # (untold count, slowest, when last told)
        self._membership()  # connect to the configuration's members; a removed disk stops at once

    # ---------------------------------------------------------------- the loop

    reload_asked: Callable[[], bool] = staticmethod(lambda: False)  # start.py hands it SIGHUP's flag

    def _reload_security(self) -> None:
        """SIGHUP: read the cluster file again and take its keys and grants; a bad file keeps the old ones."""
        path = self.cfg.path
        try:
            if path is None:
                raise ConfigError("this node's config did not come from a file")
            fresh = load_config(path)
            told = self.transport.reload_security(fresh.security)
        except ConfigError as e:
            self.say(f"reload: kept the previous keys and grants: {e}")
            return
        self.say(f"reload: {told}")

    def run(self, stopping: Callable[[], bool]) -> None:
        tick_s = self._tick_s
        next_tick = time.monotonic() + tick_s
        poll, take, compaction = self.transport.poll, self._take, self.compaction
        while not self.removed:
            if stopping() and not self._handing_over():
                break
            timeout_ms = max(0, math.ceil((next_tick - time.monotonic()) * 1000))
            ready = poll(timeout_ms)
            busy = heard = False
            if ready:
                busy, heard = take(ready)
            now = time.monotonic()
            if now >= next_tick:
                elapsed = int((now - next_tick) / tick_s) + 1
                if elapsed > 1 and not heard:
                    # Late (a long turn, a pause): read what waited first. A moment's wait:
                    # after a pause, libzmq's I/O thread has to move it from TCP first.
                    late = poll(LATE_POLL_MS)
                    if late:
                        took, heard = take(late)
                        busy = busy or took
                # The ticks missed while the loop did not read count only if no peer spoke
                # since: run after messages that waited, they would charge that time as the
                # silence of a peer just heard (a false suspicion, a needless pre-vote).
                # Heartbeats are still owed on wall time: a busy leader must not starve them.
                if heard:
                    self.replica.tick(unheard=elapsed - 1)
                else:
                    for _ in range(min(elapsed, self._max_catchup_ticks)):
                        self.replica.tick()
                next_tick += elapsed * tick_s
                busy = True
                compaction.turn()
                self.turned_at = now
                if now >= self._housekeeping_at:
                    self._housekeeping(now)
            if busy:
                self._process()
                if compaction.due():
                    compaction.compact()
            self.transport.flush()

    def _handing_over(self) -> bool:
        """Asked to stop while leading: hand leadership over first, so a rolling restart costs
        no election timeout (the voters would otherwise wait one out). True while under way;
        bounded by an election timeout, after which the node stops anyway."""
        rep = self.replica
        if self._handover_until is None:
            self._handover_until = 0.0  # decided once
            if rep.role != Role.LEADER:
                return False
            target, why = rep.transfer_leadership(0)
            if not target:
                self.say(f"stopping: no leadership handover ({why})")
                return False
            self.say(f"stopping: handing leadership over to node {target} first")
            self._handover_until = time.monotonic() + (rep.timing.election_ticks + 2) * self._tick_s
            self._process()  # its catch-up appends or TimeoutNow leave now
            return True
        return rep.role == Role.LEADER and time.monotonic() < self._handover_until

    def _take(self, ready: list[Any]) -> tuple[bool, bool]:
        """Read and feed what the ready sockets hold: (anything taken, a peer's message among it)."""
        peer, clients = self.transport.drain(ready, DRAIN_BUDGET)
        step = self.replica.step
        for msg in peer:
            step(msg)
        if self.transport.notes:
            for line in self.transport.take_notes():
                self.say(line)
        lost = self.transport.disconnects()
        for peer_id in lost:  # after its messages: a dead leader's last Append must not undo the hint
            self.replica.peer_disconnected(peer_id)
        if clients:
            on_request = self.requests.on_request
            for ident, req, batched in clients:
                on_request(ident, req, batched)
            self.stats.turn_requests.observe(len(clients))
        return bool(peer or clients or lost), bool(peer)

    def close(self) -> None:
        self.compaction.close()
        self.port.close()

    def _process(self) -> None:
        answer = self.requests.answer
        for done in self.service.process(self.wal, self._send, self.note):
            answer(done)
        receiver = self.port.receiver
        if receiver.refused != self._refused_seen:  # a received snapshot failed its checks: say so once
            self._refused_seen = receiver.refused
            self.say(f"warning: {receiver.last_error}; asking the leader for it again")
        if (self.replica.role, self.replica.leader) != self._seen:
            self._role_changed()
            if self.replica.role != Role.LEADER:
                self.port.shipper.forget_all()
        if self.replica.commit != self._commit_seen or self.replica.config_index != self._config_seen[0]:
            self._membership()

    def _membership(self) -> None:
        """After the commit index or the configuration moved: follow the configuration with the
        transport, and notice this node's removal (Replica.removed)."""
        rep = self.replica
        self._commit_seen = rep.commit
        if rep.config_index != self._config_seen[0] or rep.config is not self._config_seen[1]:
            self._config_seen = (rep.config_index, rep.config)
            self.transport.follow(rep.config)
        if rep.removed:
            self.removed = True

    def _send(self, msg: Message) -> None:
        try:
            data = encode(msg, self.cfg.max_frame_bytes)
        except ValueError as e:
            if type(msg) is Forward and len(msg.commands) > 1:
                half = len(msg.commands) // 2  # a big batch of writes: forward it in pieces
                self._send(replace(msg, commands=msg.commands[:half]))
                self._send(replace(msg, commands=msg.commands[half:]))
                return
            raise InvariantError(f"cannot encode {type(msg).__name__} for node {msg.dst}: {e}") from None
        self.transport.send(msg, data)

    # ---------------------------------------------------------------- logging

    def say(self, text: str) -> None:
        self.journal.say(text)

    def note(self, text: str) -> None:
        # The core's notes already start "node N epoch E tick T: ...".
        prefix = f"node {self.id} "
        text = text[len(prefix):] if text.startswith(prefix) else text
        kind = note_kind(text.split(": ", 1)[-1])
        counter = _ELECTION_COUNTERS.get(kind)
        if counter is not None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if kind in ("election_started", "stepped_down"):  # why the leader may be about to be lost
            self._last_suspicion = text.split(": ", 1)[-1]
        if text.endswith("; not running"):  # without quorum this repeats every election round
            reason, now = text.split(": ", 1)[-1], time.monotonic()
            last, repeats = self._not_running.get(reason, (-NOT_RUNNING_EVERY_S, 0))
            if now - last < NOT_RUNNING_EVERY_S:
                self._not_running[reason] = (last, repeats + 1)
                return
            self._not_running[reason] = (now, 0)
            text += f" ({repeats} times more in the last {now - last:.0f} s)" if repeats else ""
        self.journal.event(kind, text)

    def _role_changed(self) -> None:
        rep = self.replica
        old_role, old_leader = self._seen
        self._seen = (rep.role, rep.leader)
        now = time.monotonic()
        where = f"epoch {rep.hs.epoch}"
        event = self.journal.event
        if rep.role != old_role:
            event("role", f"role {ROLE_NAMES[old_role]} -> {ROLE_NAMES[rep.role]} ({where}, leader {rep.leader or '-'})",
                  role=ROLE_NAMES[rep.role], was=ROLE_NAMES[old_role], epoch=rep.hs.epoch, leader=rep.leader)
        if rep.leader != old_leader:
            self.stats.leader_changes += 1
        if rep.leader and self._leaderless_since is not None:
            took_ms = int((now - self._leaderless_since) * 1000)
            event("leader", f"leader is node {rep.leader} in {where}, after {took_ms} ms without a known leader",
                  leader=rep.leader, epoch=rep.hs.epoch, leaderless_ms=took_ms)
            self._leaderless_since = None
        elif not rep.leader and old_leader:
            self._leaderless_since = now
            why = self._last_suspicion or "it stepped down or a higher epoch was seen"
            event("leader_lost", f"lost leader {old_leader}: {why}", level="warning", leader=old_leader,
                  epoch=rep.hs.epoch)
        self._last_suspicion = ""

    def _slow_fsync(self, seconds: float, flushed: int) -> None:
        """Tell a slow flush at once, then at most one summary per SLOW_FSYNC_EVENT_S."""
        now = time.monotonic()
        count, worst, told_at = self._slow_flushes
        count, worst = count + 1, max(worst, seconds)
        if now - told_at < SLOW_FSYNC_EVENT_S:
            self._slow_flushes = (count, worst, told_at)
            return
        more = f" (the slowest of {count} over {SLOW_FSYNC_S * 1000:.0f} ms since the last report)" if count > 1 else ""
        self.journal.event("slow_fsync", f"warning: slow WAL flush: {worst * 1000:.0f} ms{more}; "
                           f"the last one wrote {flushed:,} bytes", level="warning", ms=round(worst * 1000, 1),
                           count=count, bytes=flushed)
        self._slow_flushes = (0, 0.0, now)

    def _housekeeping(self, now: float) -> None:
        """Once a second: the store's gauges, followers behind or caught up, refused frames,
        and a reload of keys and grants if SIGHUP asked for one."""
        self._housekeeping_at = now + HOUSEKEEPING_S
        if self.reload_asked():
            self._reload_security()
        store, stats = self.service.store, self.stats
        stats.store_messages = store.message_count()
        stats.store_mailboxes = store.mailbox_count()
        stats.store_bytes = store.body_bytes()
        self._followers()
        counters = self.transport.counters
        peer = sum(getattr(counters, name) for name in _PEER_REFUSALS)
        client = sum(getattr(counters, name) for name in _CLIENT_REFUSALS)
        told_peer, told_client, told_at = self._refusals_told
        if (peer != told_peer or client != told_client) and now - told_at >= REFUSED_EVENT_S:
            if peer != told_peer:
                self.journal.event("refused_peer", f"refused {peer - told_peer} bad peer frame(s) "
                                   f"({peer} in all)", level="warning", count=peer - told_peer)
            if client != told_client:
                self.journal.event("refused_client", f"refused {client - told_client} bad client request(s) "
                                   f"({client} in all)", level="warning", count=client - told_client)
            self._refusals_told = (peer, client, now)

    def _followers(self) -> None:
        rep = self.replica
        if rep.role != Role.LEADER:
            self._behind.clear()
            return
        last = rep.log.last_index
        for peer, pr in rep.tracker.items():
            lag = last - pr.match
            if lag > BEHIND_ENTRIES and peer not in self._behind:
                self._behind.add(peer)
                self.journal.event("follower_behind", f"node {peer} is {lag:,} entries behind", level="warning",
                                   follower=peer, lag=lag)
            elif lag == 0 and peer in self._behind:
                self._behind.discard(peer)
                self.journal.event("follower_caught_up", f"node {peer} caught up", follower=peer)

    # ---------------------------------------------------------------- status

    def _membership_status(self) -> dict[str, Any]:
        """Who this disk is in the configuration: its incarnation, voter or not, and what to run
        if its id is a member under another incarnation (the disk it replaced was lost)."""
        rep = self.replica
        cfg, me = rep.config, rep.config.member(self.id)
        out: dict[str, Any] = {"incarnation": rep.inc, "voter": bool(cfg.counts(self.id, rep.inc)),
                               "config_index": rep.config_index, "forming": cfg.provisional,
                               "cluster_id": cfg.cluster_id}
        if me is not None and not cfg.is_member(self.id, rep.inc):
            out["lost_state"] = (f"node {self.id} lost its state: run `zrep admin replace {self.id}` "
                                 f"(the configuration names incarnation {me.incarnation:x}, this disk is "
                                 f"{rep.inc:x})")
        if rep.role == Role.FOLLOWER:  # a leader or a candidate says so (a removed leader leads until it commits)
            if me is None or not cfg.is_member(self.id, rep.inc):
                out["role_name"] = "observer"  # follows a leader's appends; never runs, never counts
            elif not me.voter:
                out["role_name"] = "learner"
        return out

    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = self.service.status()
        heard = self.transport.heard_ms_ago()
        rpc_of = self.requests.rpc_of
        s["node"] = self.id
        s.update(self._membership_status())
        s["pid"] = os.getpid()  # so an operator (or the README's tour) can kill -9 the leader
        s["rpc"] = rpc_of(self.id)
        s["peers"] = [{"id": p, "heard_ms_ago": ms, "rpc": rpc_of(p)} for p, ms in heard.items()]
        s["pending"] = len(self.service.pending)
        s["uptime_ms"] = int((time.monotonic() - self.started) * 1000)
        s["counters"] = dict(self.transport.counters.as_dict(), core_dropped=self.replica.dropped)
        s["bugs"] = sorted(self.replica.bugs)
        s["snapshot_index"] = self.compaction.index
        s["snapshot_writing"] = self.compaction.writing
        s["log_first_index"] = self.replica.log.first_index
        s["compactions"] = self.compaction.compactions
        shipper, receiver = self.port.shipper, self.port.receiver
        s["snapshot_shipping"] = {
            "sending_to": shipper.sending,
            "transfers_started": shipper.transfers_started,
            "chunks_sent": shipper.chunks_sent,
            "receiving": receiver.receiving,
            "chunks_stored": receiver.chunks_stored,
            "installed": self.replica.snapshots_installed,
            "refused": receiver.refused,
        }
        return s
