"""`run_node`: the one event loop of a zrep node (DESIGN section 3).

Each turn of the loop:
  1. poll the sockets for at most the time left to the next tick;
  2. decode and feed what arrived (at most DRAIN_BUDGET frames per socket, so
     a flood cannot starve the ticks): peer messages to `replica.step`,
     client requests to the `Service` (writes are batched, reads registered);
  3. run `replica.tick()` once per tick that has elapsed (capped after a
     long pause, which only ever makes timeouts longer; one tick only if a
     peer's message was read in this turn: the time the loop did not read
     is not that peer's silence);
  4. `service.process(wal, send, note)`: the shared driver sends, persists
     with one fsync (group commit), sends acks, applies; then every answer
     becomes a ClientReply;
  5. `transport.flush()`: the replies to requests that came in a ClientBatch
     leave, coalesced per client into ClientReplies frames. The requests of
     a batch take the same path as single ones (its writes are proposed
     together, its reads share a read index round); nothing waits past the
     end of the turn that produced it.

Invariants:
  * Nothing touches the network or the disk except through `apply_ready`
    (via Service.process), the Transport and the Wal: an ack can never leave
    before its fsync.
  * A failed fsync (StorageError) or a broken invariant (InvariantError)
    stops the node at once with one line and a distinct exit code; a failed
    fsync is never retried. A corrupt log refuses to start (EXIT_CORRUPT_LOG).
  * Bad frames from clients or peers never raise: the transport answers or
    drops and counts them.
  * Only the loop thread touches sockets; signals only set a flag, so a stop
    never lands in the middle of a persist.
  * No per-message logging: one line per role change, election note from the
    core, and leader found (with how long the cluster was without one).
  * Compaction (DESIGN 4): once a snapshot of index S is durable, the log
    keeps only the entries after S - snapshot_entries (a follower a little
    behind is still served from the log); the WAL is rewritten to match
    (zrep.storage.wal.Wal.rewrite), between loop turns, when every entry is on disk.
    Nodes snapshot and compact in turn (`snapshot_phase`), not at one index.
  * A compacted WAL needs its snapshot: without a usable one the node refuses
    to start (EXIT_NO_SNAPSHOT) and says to wipe its data directory.
  * Start order: bind the sockets, replay the WAL (its fsyncs and checks),
    load the snapshot, apply the committed entries after it (rebuild_store),
    then loop. Peers and clients can connect from the first step; what they
    send waits in the sockets until the loop reads it.

Imports the shell pieces (transport, wal, config, service); the core stays
unaware of this module.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from zrep.config import ClusterConfig, load_config
from zrep.core.log import LogView
from zrep.core.messages import Forward, Message, Role
from zrep.core.ready import Timing
from zrep.core.replica import BUGS, Replica
from zrep.errors import ConfigError, CorruptLogError, InvariantError, StorageError
from zrep.node.file_snapshots import CHUNK_BYTES, FileSnapshots
from zrep.node.transport import Transport
from zrep.service.pending import Done
from zrep.service.service import ROLE_NAMES, Service
from zrep.storage.snapshot_files import (
    Snapshot,
    fits_log,
    load_snapshot,
    remove_stale_tmp,
    write_snapshot,
)
from zrep.storage.snapshot_writer import SnapshotWriter
from zrep.storage.wal import Replay, Wal
from zrep.store.commands import encode_delete, pack_send
from zrep.store.store import Store, StoreLimits
from zrep.wire.client_messages import (
    MAX_MESSAGE_CHARS,
    ClientReply,
    ClientRequest,
    Code,
    error_reply,
    not_leader_reply,
    ok_reply,
)
from zrep.wire.codec import encode

LATE_POLL_MS = 2  # how long a late loop waits for what arrived while it was not reading

EXIT_OK = 0  # stopped by SIGTERM/SIGINT
EXIT_USAGE = 2  # bad config file, unknown node id, unknown planted bug
EXIT_CORRUPT_LOG = 3  # a record in the middle of the WAL is corrupt: refuse to start
EXIT_STORAGE = 4  # the WAL cannot be opened, locked, written or fsynced: stop, never retry
EXIT_INVARIANT = 5  # an internal safety rule broke (a bug): stop at once
EXIT_NETWORK = 6  # a socket cannot be bound (address in use or not local)
EXIT_NO_SNAPSHOT = 7  # the WAL is compacted and the snapshot it needs is missing or unusable

REQUEST_MS = 10_000  # a client request waits at most this long for its entry (then TIMEOUT)
ACK_ALL_MS = 3_000  # an ack=all write waits this long for every member, then answers with who has it
DRAIN_BUDGET = 1000  # frames read per socket per turn, so a flood cannot starve ticks
COMMAND_HEADROOM_BYTES = 4096  # room around one command in an Append frame
WAL_NAME = "wal"
SNAPSHOT_STORE_FRACTION = 4  # between snapshots, at least (messages held) / this applied entries

Log = Callable[[str], None]
Route = tuple[bytes, int, bool]  # (client routing id, req_id, the request came in a ClientBatch)

# Wire codes the node passes through as they are; any other refusal (the
# store's BAD_MAILBOX, NO_SUCH_MESSAGE, CLIENT_EXPIRED, ...) is BAD_REQUEST with
# the store's code in result["reason"].
_PASS_THROUGH = frozenset({Code.NO_LEADER, Code.TIMEOUT, Code.BAD_REQUEST, Code.TOO_LARGE, Code.UNAVAILABLE})
_HEADER_KEYS = ("ok", "error", "message")


def snapshot_phase(node_id: int, member_ids: Sequence[int], every: int) -> int:
    """How many entries after the first node's this node takes its snapshots: the nodes
    snapshot (fork, pack, then compact and rewrite their WAL) in turn, not all at the
    same index, so the CPU spike and the loop's pause of a compaction hit one node at a
    time and never a whole majority at once."""
    ids = sorted(member_ids)
    return ids.index(node_id) * every // len(ids)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ok_result(result: dict[str, Any]) -> dict[str, Any] | None:
    """The result of the OK reply to a Service answer, None if the answer is an error."""
    if not result.get("ok"):
        return None
    extra = result.copy()  # the hot path: a store answer has no error or message
    del extra["ok"]
    if "error" in extra or "message" in extra:
        extra = {k: v for k, v in extra.items() if k not in _HEADER_KEYS}
    return extra


def reply_for(req_id: int, result: dict[str, Any], rpc_of: Callable[[int], str]) -> ClientReply:
    """The wire reply for a Service answer (a store answer or an error dict)."""
    ok = ok_result(result)
    if ok is not None:
        return ok_reply(req_id, ok)
    extra = {k: v for k, v in result.items() if k not in _HEADER_KEYS}
    code = result.get("error")
    message = str(result.get("message", ""))[:MAX_MESSAGE_CHARS]
    if code == Code.NOT_LEADER and result.get("leader"):
        return not_leader_reply(req_id, result["leader"], rpc_of(result["leader"]))
    if code == Code.NOT_LEADER:
        code = Code.NO_LEADER
    if code not in _PASS_THROUGH:
        extra["reason"] = code
        code = Code.BAD_REQUEST
    return error_reply(req_id, code, message, extra)


def rebuild_store(store: Store, replay: Replay, commit: int) -> None:
    """Apply the replayed entries up to `commit` (and the log's end) that `store` (empty, or
    a snapshot's) lacks: what the loop's first turn would apply, in the same order, but
    before the loop starts, where nobody waits for an answer yet. Applied as one run
    (Store.apply_run), without a committed Entry sliced out of the log and driven
    through the Service for each, and without a first turn so long that the election
    timer runs out while the leader's appends wait."""
    first, applied = replay.first_index, store.applied_index
    if applied < first - 1:
        raise InvariantError(f"the store applied {applied}, the log starts at {first}: entries are missing")
    top = min(commit, first - 1 + len(replay.entries))
    if top > applied:
        store.apply_run(replay.entries[applied + 1 - first : top + 1 - first])


class Node:
    """A running node: its WAL, Service, Transport, and the loop that joins them."""

    def __init__(self, cfg: ClusterConfig, node_id: int, wal: Wal, replay: Replay, transport: Transport,
                 *, bugs: frozenset[str], log: Log, snapshot: Snapshot | None = None) -> None:
        self.cfg = cfg
        self.id = node_id
        self.wal = wal
        self.transport = transport
        self._log = log
        self._tick_s = cfg.tick_ms / 1000
        timing = Timing.from_ms(cfg.heartbeat_ms, cfg.election_timeout_ms, cfg.tick_ms)
        # An Append batch must fit in one frame, or replication would stall on it.
        timing = replace(timing, max_batch_bytes=min(timing.max_batch_bytes, cfg.max_frame_bytes // 2))
        self._max_catchup_ticks = 2 * timing.election_ticks
        self._max_command_bytes = cfg.max_frame_bytes - COMMAND_HEADROOM_BYTES
        store = snapshot.store if snapshot else Store(max_body_bytes=cfg.max_body_bytes)
        # A snapshot holds only committed entries; the WAL's commit hint may lag it.
        commit = max(replay.commit, snapshot.index) if snapshot else replay.commit
        rebuild_store(store, replay, commit)
        replica = Replica(
            node_id,
            cfg.node_ids,
            rng=random.Random(),
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
        self.service = Service(
            replica,
            store,
            request_ticks=max(1, REQUEST_MS // cfg.tick_ms),
            all_ticks=max(1, ACK_ALL_MS // cfg.tick_ms),
        )
        self._rpc = {n.id: n.rpc for n in cfg.nodes}
        self._snapshots = SnapshotWriter(cfg.node_data_dir(node_id)) if cfg.snapshot_entries else None
        self._snapshot_index = snapshot.index if snapshot else 0
        # A node that has none yet takes its first one at its own phase; later ones keep it.
        phase = 0 if snapshot else snapshot_phase(node_id, [n.id for n in cfg.nodes], cfg.snapshot_entries)
        self._snapshot_due = self._snapshot_index + cfg.snapshot_entries + phase
        self._compactions = 0
        self._refused_seen = 0
        limits = StoreLimits(max_body_bytes=cfg.max_body_bytes)
        self.port = FileSnapshots(cfg.node_data_dir(node_id), wal, limits,
                                  min(CHUNK_BYTES, cfg.max_frame_bytes - COMMAND_HEADROOM_BYTES),
                                  self._before_install)
        self.service.snapshots = self.port
        self.service.on_install = self._installed
        self._started = time.monotonic()
        self._seen = (replica.role, replica.leader)
        self._leaderless_since: float | None = self._started

    # ---------------------------------------------------------------- the loop

    def run(self, stopping: Callable[[], bool]) -> None:
        tick_s = self._tick_s
        next_tick = time.monotonic() + tick_s
        poll, take = self.transport.poll, self._take
        while not stopping():
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
                for _ in range(1 if heard else min(elapsed, self._max_catchup_ticks)):
                    self.replica.tick()
                next_tick += elapsed * tick_s
                busy = True
                if self._snapshots is not None:
                    self._snapshot_turn(self._snapshots)
            if busy:
                self._process()
                if self._compaction_due():
                    self._compact()
            self.transport.flush()

    def _take(self, ready: list[Any]) -> tuple[bool, bool]:
        """Read and feed what the ready sockets hold: (anything taken, a peer's message among it)."""
        peer, clients = self.transport.drain(ready, DRAIN_BUDGET)
        step = self.replica.step
        for msg in peer:
            step(msg)
        lost = self.transport.disconnects()
        for peer_id in lost:  # after its messages: a dead leader's last Append must not undo the hint
            self.replica.peer_disconnected(peer_id)
        for ident, req, batched in clients:
            self._on_request(ident, req, batched)
        return bool(peer or clients or lost), bool(peer)

    def close(self) -> None:
        if self._snapshots is not None:
            self._snapshots.stop()
        self.port.close()

    def snapshot_on_stop(self) -> None:
        """A clean stop writes the store as it stands (here, not in a child: nothing is
        left to serve), so the next start applies nothing. Failing only costs that."""
        store = self.service.store
        if self._snapshots is None or store.applied_index <= self._snapshot_index:
            return
        self._snapshots.stop()
        started = time.monotonic()
        epoch = self.replica.log.epoch_at(store.applied_index)
        try:
            if epoch is None:
                raise InvariantError(f"applied index {store.applied_index} is not in the log")
            write_snapshot(self.cfg.node_data_dir(self.id), store.applied_index, epoch, store.to_bytes())
        except (OSError, InvariantError) as e:
            self.say(f"warning: snapshot at stop failed: {e}; the next start applies the log after "
                     f"index {self._snapshot_index}")
            return
        self._snapshot_index = store.applied_index
        self.say(f"snapshot of index {store.applied_index} written at stop in {time.monotonic() - started:.2f} s")

    # ---------------------------------------------------------------- snapshots

    def _snapshot_turn(self, writer: SnapshotWriter) -> None:
        """Once a tick: note a finished snapshot, start one when due."""
        done = writer.poll()
        if done is not None:
            if done.error:
                self.say(f"warning: snapshot of index {done.index} failed: {done.error}; "
                         f"the log still holds every entry since the last one, next try after {self.cfg.snapshot_entries:,} more")
            else:
                self._snapshot_index = done.index
                self.say(f"snapshot of index {done.index} written in {done.seconds:.2f} s")
        store = self.service.store
        if writer.running or store.applied_index < self._snapshot_due:
            return
        # A snapshot rewrites every stored message: waiting for a quarter as many new entries
        # bounds the bytes written to ~4x the log's, and a restart to a quarter of the store.
        gap = max(self.cfg.snapshot_entries, store.message_count() // SNAPSHOT_STORE_FRACTION)
        due = self._snapshot_index + gap
        if store.applied_index < due:
            self._snapshot_due = due
            return
        self._snapshot_due = store.applied_index + self.cfg.snapshot_entries
        epoch = self.replica.log.epoch_at(store.applied_index)
        if epoch is None:
            raise InvariantError(f"applied index {store.applied_index} is not in the log")
        try:
            writer.start(store, epoch)
        except OSError as e:  # no memory or processes left for a child: the log still has it all
            self.say(f"warning: cannot start a snapshot ({e}); next try after {self.cfg.snapshot_entries:,} "
                     "more entries")

    def _compaction_due(self) -> bool:
        keep = self.cfg.snapshot_entries
        return keep > 0 and self._snapshot_index - keep >= self.replica.log.first_index - 1 + keep

    def _compact(self) -> None:
        """Drop the log up to S - snapshot_entries, S the durable snapshot (at least
        snapshot_entries entries at once, so the WAL is rewritten once per snapshot)."""
        rep, wal = self.replica, self.wal
        if rep.log.last_index != wal.last_index:
            return  # entries not yet on disk (cannot happen right after _process): next turn
        upto = self._snapshot_index - self.cfg.snapshot_entries
        started = time.monotonic()
        epoch = rep.log.epoch_at(upto)
        if epoch is None:
            raise InvariantError(f"compaction point {upto} is not in the log {rep.log.first_index}..")
        size = wal.rewrite(upto + 1, epoch)  # keeps its own records after upto, byte for byte
        rep.compact(upto)
        self._compactions += 1
        self.say(f"log compacted up to {upto} (snapshot {self._snapshot_index}): the WAL holds "
                 f"{rep.log.first_index}..{rep.log.last_index}, {size:,} bytes, rewritten in "
                 f"{(time.monotonic() - started) * 1000:.1f} ms")

    def _before_install(self) -> None:
        if self._snapshots is not None:
            self._snapshots.stop()  # its older snapshot must not land over the one being installed

    def _installed(self, snap: Snapshot) -> None:
        self._snapshot_index = snap.index
        self._snapshot_due = snap.index + self.cfg.snapshot_entries  # (the core's note says it happened)

    def _process(self) -> None:
        for done in self.service.process(self.wal, self._send, self.note):
            self._answer(done)
        receiver = self.port.receiver
        if receiver.refused != self._refused_seen:  # a received snapshot failed its checks: say so once
            self._refused_seen = receiver.refused
            self.say(f"warning: {receiver.last_error}; asking the leader for it again")
        if (self.replica.role, self.replica.leader) != self._seen:
            self._role_changed()
            if self.replica.role != Role.LEADER:
                self.port.shipper.forget_all()

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

    def _answer(self, done: Done) -> None:
        ident, req_id, batched = done.route
        try:
            ok = ok_result(done.result)
            if ok is not None:
                self.transport.reply_ok(ident, req_id, ok, batched)
                return
            reply = reply_for(req_id, done.result, self._rpc_of)
        except ValueError as e:  # an answer the wire schema refuses: tell the client, keep serving
            reply = error_reply(req_id, Code.BAD_REQUEST, f"the answer cannot be sent: {e}"[:MAX_MESSAGE_CHARS])
        self.transport.reply(ident, reply, batched)

    def _rpc_of(self, node_id: int) -> str:
        return self._rpc.get(node_id, "")

    # ---------------------------------------------------------------- logging

    def say(self, text: str) -> None:
        t = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        self._log(f"{stamp} node {self.id}: {text}")

    def note(self, text: str) -> None:
        # The core's notes already start "node N epoch E tick T: ...".
        prefix = f"node {self.id} "
        self.say(text[len(prefix):] if text.startswith(prefix) else text)

    def _role_changed(self) -> None:
        rep = self.replica
        old_role, old_leader = self._seen
        self._seen = (rep.role, rep.leader)
        now = time.monotonic()
        where = f"epoch {rep.hs.epoch}"
        if rep.role != old_role:
            self.say(f"role {ROLE_NAMES[old_role]} -> {ROLE_NAMES[rep.role]} ({where}, leader {rep.leader or '-'})")
        if rep.leader and self._leaderless_since is not None:
            took_ms = int((now - self._leaderless_since) * 1000)
            self.say(f"leader is node {rep.leader} in {where}, after {took_ms} ms without a known leader")
            self._leaderless_since = None
        elif not rep.leader and old_leader:
            self._leaderless_since = now

    # ---------------------------------------------------------------- clients

    def _on_request(self, ident: bytes, req: ClientRequest, batched: bool = False) -> None:
        _OPS[req.op](self, (ident, req.req_id, batched), req.args)

    def _refuse(self, route: Route, code: str, why: str) -> None:
        self.transport.reply(route[0], error_reply(route[1], code, why[:MAX_MESSAGE_CHARS]), route[2])

    def _write(self, route: Route, encode_command: Callable[[], bytes], ack: str, key: tuple[str, int]) -> None:
        try:
            cmd = encode_command()
        except (ValueError, TypeError, OverflowError) as e:
            self._refuse(route, Code.BAD_REQUEST, str(e))
            return
        if len(cmd) > self._max_command_bytes:
            # Refused before the log: an entry too big for an Append frame would stall replication.
            self._refuse(route, Code.TOO_LARGE, f"the command is {len(cmd)} bytes, over the "
                         f"{self._max_command_bytes} that fit in a frame; shorten names or body")
            return
        self.service.submit_write(route, cmd, ack_all=(ack == "all"), key=key)

    def _op_send(self, route: Route, a: dict[str, Any]) -> None:
        limit = self.cfg.max_body_bytes
        if len(a["body"]) > limit:
            self._refuse(route, Code.TOO_LARGE, f"body is {len(a['body'])} bytes, the limit is {limit}")
            return
        # The codec checked the args against the send schema (the command's rules).
        self._write(route, lambda: pack_send(a["client"], a["seq"], a["low"], a["sender"], a["to"], a["body"]),
                    a["ack"], (a["client"], a["seq"]))

    def _op_delete(self, route: Route, a: dict[str, Any]) -> None:
        self._write(route, lambda: encode_delete(a["client"], a["seq"], a["low"], a["mailbox"], list(a["offsets"])),
                    a["ack"], (a["client"], a["seq"]))

    def _op_read(self, route: Route, a: dict[str, Any]) -> None:
        query = {"op": "read", "mailbox": a["mailbox"], "after": a["after"], "limit": a["limit"]}
        self.service.submit_read(route, query)

    def _op_stale_read(self, route: Route, a: dict[str, Any]) -> None:
        query = {"op": "read", "mailbox": a["mailbox"], "after": a["after"], "limit": a["limit"]}
        self.service.submit_read(route, query, stale=True)

    def _op_mailboxes(self, route: Route, a: dict[str, Any]) -> None:
        self.service.submit_read(route, {"op": "mailboxes", "pattern": a["pattern"]})

    def _op_status(self, route: Route, a: dict[str, Any]) -> None:
        self.transport.reply(route[0], ok_reply(route[1], self.status()), route[2])

    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = self.service.status()
        heard = self.transport.heard_ms_ago()
        s["node"] = self.id
        s["pid"] = os.getpid()  # so an operator (or the README's tour) can kill -9 the leader
        s["rpc"] = self._rpc_of(self.id)
        s["peers"] = [{"id": p, "heard_ms_ago": ms, "rpc": self._rpc_of(p)} for p, ms in heard.items()]
        s["pending"] = len(self.service.pending)
        s["uptime_ms"] = int((time.monotonic() - self._started) * 1000)
        s["counters"] = dict(self.transport.counters.as_dict(), core_dropped=self.replica.dropped)
        s["bugs"] = sorted(self.replica.bugs)
        s["snapshot_index"] = self._snapshot_index
        s["snapshot_writing"] = self._snapshots is not None and self._snapshots.running
        s["log_first_index"] = self.replica.log.first_index
        s["compactions"] = self._compactions
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


_OPS: dict[str, Callable[[Node, Route, dict[str, Any]], None]] = {
    "send": Node._op_send,
    "delete": Node._op_delete,
    "read": Node._op_read,
    "stale_read": Node._op_stale_read,
    "mailboxes": Node._op_mailboxes,
    "status": Node._op_status,
}


# -------------------------------------------------------------------- entry point


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks each turn (never mid-persist)."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.stop

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread; the caller stops us otherwise
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.stop = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _check_bugs(bugs: Iterable[str]) -> frozenset[str]:
    bugs = frozenset(bugs)
    unknown = bugs - BUGS
    if unknown:
        raise ConfigError(f"unknown planted bug(s) {sorted(unknown)}; known: {', '.join(sorted(BUGS))}")
    return bugs


def run_node(config: str | os.PathLike[str] | ClusterConfig, node_id: int, *,
             bugs: Iterable[str] = frozenset(), log: Log = _stderr,
             stopping: Callable[[], bool] | None = None) -> int:
    """Run node `node_id` of the cluster until SIGTERM/SIGINT (or `stopping()`); the exit code.

    `bugs` plants test-only safety bugs in the core (zrep.core.replica.BUGS);
    never use it outside tests. `log` receives one finished line at a time.
    """
    prefix = f"zrep node {node_id}"
    try:
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        cfg.node(node_id)
        bugs = _check_bugs(bugs)
    except ConfigError as e:
        log(f"{prefix}: {e}")
        return EXIT_USAGE
    # Bound before the log is replayed: a leader's connection to this node, retried at up to
    # RECONNECT_IVL_MAX_MS while the node was down, comes up while the store is rebuilt (its
    # first messages wait in the sockets, as during any long turn) instead of after it.
    try:
        transport = Transport(cfg, node_id)
    except zmq.ZMQError as e:
        me = cfg.node(node_id)
        log(f"{prefix}: cannot open sockets (bind {me.bind_rpc} and {me.bind_pub}, connect to peers): {e}; "
            "is another process using the port, or is the address not local?")
        return EXIT_NETWORK
    try:
        return _open(cfg, node_id, transport, bugs, log, stopping)
    finally:
        transport.close()


def _open(cfg: ClusterConfig, node_id: int, transport: Transport, bugs: frozenset[str], log: Log,
          stopping: Callable[[], bool] | None) -> int:
    """Replay the WAL, load the snapshot, then serve; the exit code."""
    prefix = f"zrep node {node_id}"
    data_dir = Path(cfg.node_data_dir(node_id))
    try:
        wal, replay = Wal.open(data_dir / WAL_NAME)
    except CorruptLogError as e:
        log(f"{prefix}: {e}")
        return EXIT_CORRUPT_LOG
    except StorageError as e:
        log(f"{prefix}: {e}")
        return EXIT_STORAGE
    try:
        remove_stale_tmp(data_dir)
        snapshot, why = load_snapshot(data_dir, replay, StoreLimits(max_body_bytes=cfg.max_body_bytes))
        if replay.first_index > 1 and snapshot is None:
            log(f"{prefix}: cannot start: the WAL {wal.path} is compacted (it starts at index "
                f"{replay.first_index}) and {why}, so the store cannot be rebuilt. Do not edit the files: "
                f"once the other nodes are up with a leader (zrep client status), wipe its data directory "
                f"{data_dir} and start it again; it re-syncs everything from the leader.")
            return EXIT_NO_SNAPSHOT
        warnings = [why] if why else []
        if snapshot is not None and replay.first_index > 1 and not fits_log(snapshot, replay):
            replay = _drop_log_for(snapshot, wal, replay)
            warnings.append(f"the snapshot of index {snapshot.index} is past or beside the compacted log "
                            "(an install that stopped before its WAL rewrite); the log was dropped for it")
        return _serve(cfg, node_id, wal, replay, transport, bugs, log, stopping, snapshot, warnings)
    except StorageError as e:
        log(f"{prefix}: {e}")
        return EXIT_STORAGE
    finally:
        wal.close()


def _drop_log_for(snapshot: Snapshot, wal: Wal, replay: Replay) -> Replay:
    """Raft's install rule at start: no entry that disagrees with a (committed) snapshot is committed."""
    wal.rewrite(snapshot.index + 1, snapshot.epoch, keep=False)
    return replace(replay, entries=[], first_index=snapshot.index + 1, prev_epoch=snapshot.epoch,
                   commit=snapshot.index)


def _serve(cfg: ClusterConfig, node_id: int, wal: Wal, replay: Replay, transport: Transport, bugs: frozenset[str],
           log: Log, stopping: Callable[[], bool] | None, snapshot: Snapshot | None = None,
           warnings: list[str] | None = None) -> int:
    prefix = f"zrep node {node_id}"
    flag = _StopFlag()
    flag.install()
    node: Node | None = None
    try:
        node = Node(cfg, node_id, wal, replay, transport, bugs=bugs, log=log, snapshot=snapshot)
        for line in replay.warnings + (warnings or []) + list(cfg.warnings):
            node.say(f"warning: {line}")
        if bugs:
            node.say(f"UNSAFE: planted bugs {sorted(bugs)} are on; this node may lose acknowledged writes")
        node.say(f"started: rpc {node.status()['rpc']}, epoch {replay.hard_state.epoch}, "
                 f"log {replay.first_index}..{node.replica.log.last_index}, commit {node.replica.commit}"
                 + (f", store from the snapshot of index {snapshot.index}" if snapshot else ""))
        node.run((lambda: flag.stop or stopping()) if stopping is not None else flag)
        node.snapshot_on_stop()
        node.say("stopped")
        return EXIT_OK
    except StorageError as e:
        log(f"{prefix}: stopping: {e}")
        return EXIT_STORAGE
    except InvariantError as e:
        log(f"{prefix}: stopping: invariant broken (a bug, please report): {e}")
        return EXIT_INVARIANT
    finally:
        if node is not None:
            node.close()
        flag.restore()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.node", description="Run one zrep node.")
    parser.add_argument("--config", required=True, help="cluster file (TOML)")
    parser.add_argument("--id", type=int, required=True, help="this node's id in the cluster file")
    parser.add_argument("--unsafe-bug", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return run_node(args.config, args.id, bugs=args.unsafe_bug)


if __name__ == "__main__":
    sys.exit(main())
