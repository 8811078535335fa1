"""`Replica`: one node's protocol state machine. Pure: inputs in, a `Ready` out.

Rules it keeps (DESIGN section 4), each enforced here and nowhere else:
  * At most one leader per epoch: a node becomes leader only with promises
    from a majority; a promise is persisted before it is sent, and a node
    promises at most one coordinator per epoch.
  * A leader holds every committed entry: nobody promises a coordinator whose
    log (last epoch, last index) is behind its own.
  * Commit is the highest index on a majority whose entry is of the leader's
    own epoch (Raft section 5.4.2); the leader counts itself only after its
    own fsync.
  * A follower truncates only a conflicting suffix above its commit index,
    and advances its commit only up to what it verified to match the current
    leader in this epoch.
  * Acks and promises travel in `Ready.after_persist`, never before the fsync.
  * No election while a healthy leader is heard: an `Election` is a pre-vote;
    a node claims an epoch only when a majority (itself included) answered
    and nobody objected, so an isolated node never inflates its epoch.
  * A disconnect hint (`peer_disconnected`: the shell saw the connection to a
    peer close) only moves a pre-vote earlier and lets an election stop
    waiting for that peer's answer; it never counts as anyone's consent. A
    false, late or repeated hint costs at most one pre-vote round per time
    the node followed a leader.
  * Snapshots (DESIGN 4): the log drops a prefix only when the shell says a
    durable snapshot holds it (`compact`, at most up to `applied`). A follower
    the leader's log cannot serve any more gets the snapshot instead of
    appends (the leader orders it, the shell ships the bytes); the follower
    takes chunks only from the leader of its current epoch, and acks an
    install only once the shell has made it durable, so the leader's match
    index never runs ahead of a follower's disk.

Must not import zmq, os, time, socket, threading, or the global `random`
functions: randomness comes from the injected `random.Random`, time from
`tick()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zrep.core.election import Rank, may_promise, rank
from zrep.core.log import LogView
from zrep.core.membership import (
    CONFIG_MARK,
    Config,
    Member,
    decode_config,
    encode_config,
    is_config,
    static_config,
    voter_change,
)
from zrep.core.messages import (
    Answer,
    AnswerReason,
    Append,
    AppendAck,
    Coordinator,
    Election,
    Entry,
    Forward,
    HardState,
    Heartbeat,
    InstallSnapshot,
    InstallSnapshotAck,
    Message,
    Promise,
    ReadIndexReply,
    ReadIndexRequest,
    Role,
    TimeoutNow,
)
from zrep.core.progress import Progress
from zrep.core.reads import ReadIndex
from zrep.core.ready import Outbox, ReadState, Ready, ShipOrder, Timing
from zrep.core.tracker import Tracker
from zrep.errors import DecodeError, InvariantError

# Test-only planted bugs: each switches one safety rule off, so that tests can
# show the simulator and the chaos checker catch its absence.
BUGS = frozenset(
    {
        "ack_before_persist",  # (a) append acks leave before the fsync
        "commit_old_epoch",  # (b) count an older epoch's entry for commit
        "promise_behind_log",  # (c) promise a coordinator whose log is behind
        "promise_not_persisted",  # (d) promise without persisting it
        "never_truncate",  # keep a conflicting suffix and ack anyway
        "count_self_before_fsync",  # the leader counts its new entries as durable before its fsync
        "config_before_own_commit",  # a leader changes the configuration before its no-op committed
        "two_pending_configs",  # a leader changes the configuration while the previous change is uncommitted
        "no_config_fallback_on_truncate",  # a truncated configuration entry stays in force
        "count_any_incarnation",  # promises and acks count whatever incarnation sends them
        "removed_leader_counts_self",  # a leader its configuration removed still counts its own disk
        "learner_campaigns",  # learners and observers run elections
    }
)


@dataclass(frozen=True, slots=True)
class Proposal:
    """What `propose` did: appended at `first_index..last_index` (leader),
    forwarded to `leader`, or neither (no leader known: the client retries)."""

    accepted: bool
    forwarded: bool
    leader: int
    first_index: int = 0
    last_index: int = 0


class Replica:
    def __init__(
        self,
        node_id: int,
        members: Sequence[int] | Config,
        *,
        rng: random.Random,
        incarnation: int = 0,
        timing: Timing = Timing(),
        hard_state: HardState = HardState(),
        log: LogView | None = None,
        commit: int = 0,
        applied: int = 0,
        bugs: frozenset[str] = frozenset(),
    ) -> None:
        base = members if isinstance(members, Config) else static_config(members)
        unknown = set(bugs) - BUGS
        if unknown:
            raise InvariantError(f"unknown planted bugs {sorted(unknown)}")
        self.id = node_id
        self.inc = incarnation
        self.timing = timing
        self.bugs = bugs
        self._rng = rng
        self.hs = hard_state
        self.log = log if log is not None else LogView()
        # Membership: `base_config` holds as of log.first_index - 1 (the snapshot's, or the
        # seed list); `_configs` the configuration entries in the log, by index, ascending.
        self.base_config = base
        self._configs: dict[int, Config] = {}
        self._scan_configs(self.log.first_index, self.log.last_index)
        self.config, self.config_index = self._latest_config()
        self._named = self._names_us(self.config)  # some formed configuration named us (see `removed`)
        self._caught_up = False  # our commit reached the commit index of the leader's last append
        self.stable = self.log.last_index  # last index known durable on our disk
        self.commit = min(commit, self.log.last_index)
        self.applied = applied
        self.role = Role.FOLLOWER
        self.leader = 0
        self.now = 0  # ticks since this replica started (not wall time)
        self.leader_since = 0  # tick this replica last became leader
        self._elapsed = 0  # ticks in the current wait (leader silence, answers, promises)
        self._hb_elapsed = 0
        self._timeout = 0
        self._max_seen_epoch = hard_state.epoch
        self._peer_rank: dict[int, Rank] = {}
        self._last_heard: dict[int, int] = {}  # peer -> tick of its last message to us
        self._hinted_down: set[int] = set()  # peers whose connection closed since we last heard them
        self._peer_inc: dict[int, int] = {}  # peer -> the incarnation its last message carried
        self._answers: dict[int, int] = {}
        self._insist = False
        self._awaiting_better = False
        self._promises: set[int] = set()
        self._verified = 0  # follower: last index verified to match the leader of _verified_epoch
        self._verified_epoch = 0
        self.tracker = Tracker(node_id, incarnation, self.config, any_incarnation="count_any_incarnation" in bugs)  # leader: each follower's progress
        self._epoch_start = 0  # leader: index of its no-op
        self.transfer_to = 0  # leader: the voter it is handing over to (no new writes meanwhile)
        self._held: list[bytes] = []  # leader: writes that arrived during the transfer
        self._transfer_since = 0
        self._handover = 0  # follower: the leader that asked us to run (TimeoutNow), for this election
        self.reads = ReadIndex()
        self.dropped = 0  # messages ignored as malformed for this cluster
        self.snapshots_started = 0  # leader: transfers begun (status counters)
        self.snapshots_installed = 0  # follower: snapshots installed from a leader
        self.out = Outbox()  # outputs gathered until the next ready()
        self._timeout = self._new_timeout()

    # ----------------------------------------------------------------- API

    def tick(self, unheard: int = 0) -> None:
        """One tick of time. `unheard` more ticks passed in which the shell did not read
        (a long turn) but has since heard from a peer: they are owed to the heartbeat
        schedule, a duty on wall time (a peer waits for our heartbeat however busy we
        were), and to no timeout, which would charge our own delay as a peer's silence."""
        self.now += 1
        self._elapsed += 1
        self._hb_elapsed += 1 + unheard
        if self._hb_elapsed >= self.timing.heartbeat_ticks:
            self._hb_elapsed = 0
            self._heartbeat()
        _TICK[self.role](self)

    def step(self, msg: Message) -> None:
        handler = _STEP.get(type(msg))
        # Any node may write to us (a joining node knows no configuration yet, a new member's
        # first append comes before ours names it): what counts is decided per message.
        if handler is None or msg.src == self.id or msg.src <= 0 or msg.dst not in (0, self.id):
            self.dropped += 1
            return
        self._heard_from(msg.src)
        inc = getattr(msg, "inc", None)
        if inc is not None:
            self._peer_inc[msg.src] = inc  # a new leadership starts its progress with it
        if msg.epoch > self.hs.epoch:
            self._max_seen_epoch = max(self._max_seen_epoch, msg.epoch)
            if self.role in (Role.LEADER, Role.CANDIDATE):
                # A higher epoch exists: whatever we claimed is over.
                # Step down without adopting the epoch: we may still owe the
                # sender (a better coordinator) our promise for it.
                self._note(f"saw epoch {msg.epoch} from node {msg.src} in {type(msg).__name__}; stepping down")
                self._become_follower(0)
        handler(self, msg)

    def propose(self, commands: Sequence[bytes]) -> Proposal:
        """Append client commands (leader), forward them (follower), or refuse (no leader known:
        the client retries shortly). During a leadership transfer the leader holds them: the
        shell proposes them again to the new leader (as any write waiting across a change of
        leader), or, if the transfer is abandoned, they are appended then."""
        if self.transfer_to:
            self._held.extend(commands)
            return Proposal(False, True, self.id)
        if self.role == Role.LEADER:
            first = self.log.last_index + 1
            for data in commands:
                self._append_own(data)
            self._broadcast_append()
            return Proposal(True, False, self.id, first, self.log.last_index)
        if self.leader:
            self._send(Forward(self.id, self.leader, self.hs.epoch, tuple(commands)))
            return Proposal(False, True, self.leader)
        return Proposal(False, False, 0)

    def read_index(self, ctx: int) -> bool:
        """Start a linearizable read; its `ReadState(ctx, index)` comes in a later
        Ready. False when no leader is known (answer the client NO_LEADER)."""
        if self.role == Role.LEADER:
            self.reads.queue(0, ctx)
            return True
        if self.leader:
            self.reads.ask_remote(ctx)
            self._send(ReadIndexRequest(self.id, self.leader, self.hs.epoch, ctx))
            return True
        return False

    def peer_disconnected(self, peer: int) -> None:
        """The shell saw its connection to `peer` close (a crashed process's socket, a
        flapping link): a hint, not proof. A follower that loses its leader this way
        starts the pre-vote round now instead of after the election timeout; peers that
        still hear a healthy leader object, and promises still need a majority."""
        if peer not in self.peers:
            return
        self._hinted_down.add(peer)
        if self.role == Role.FOLLOWER and self.leader == peer and self.can_campaign():
            self._note(f"lost the connection to leader {peer}")
            self._start_election(insist=False)

    def durable_on(self, index: int) -> tuple[int, ...]:
        """Leader only: the members known to hold `index` on disk, in id order."""
        if self.role != Role.LEADER:
            return ()
        return self.tracker.durable_on(index, self.stable)

    def has_ready(self) -> bool:
        return (
            self.out.pending()
            or bool(self.reads.unsent and self.role == Role.LEADER and self.commit >= self._epoch_start)
            or min(self.commit, self.stable) > self.applied
        )

    def ready(self) -> Ready:
        self._flush_reads()
        top = min(self.commit, self.stable)
        committed = self.log.slice(self.applied + 1, top) if top > self.applied else ()
        ready = self.out.take(self.hs, self.commit, committed, ship=self.role == Role.LEADER,
                              chunk_epoch=self.hs.epoch, chunk_leader=self.leader)
        if "count_self_before_fsync" in self.bugs and ready.entries and self.role == Role.LEADER:
            self.stable = max(self.stable, ready.entries[-1].index)
        return ready

    def advance(self, ready: Ready) -> None:
        """The shell has persisted, sent and applied `ready`."""
        if ready.entries:
            self.stable = max(self.stable, ready.entries[-1].index)
        if ready.committed:
            self.applied = ready.committed[-1].index
        if self.role == Role.LEADER:
            self._maybe_commit()  # we count ourselves only now, after our fsync

    def status(self) -> dict[str, int]:
        return {
            "id": self.id,
            "incarnation": self.inc,
            "config_index": self.config_index,
            "voter": int(self.config.counts(self.id, self.inc)),
            "role": int(self.role),
            "epoch": self.hs.epoch,
            "leader": self.leader,
            "first_index": self.log.first_index,
            "last_index": self.log.last_index,
            "last_epoch": self.log.last_epoch,
            "commit": self.commit,
            "applied": self.applied,
        }

    # ------------------------------------------------------------ membership

    @property
    def members(self) -> tuple[int, ...]:
        """Every member of the current configuration (voters and learners)."""
        return self.config.ids

    @property
    def voters(self) -> tuple[int, ...]:
        return self.config.voters

    @property
    def peers(self) -> tuple[int, ...]:
        return tuple(m for m in self.config.ids if m != self.id)

    def _voter_peers(self) -> tuple[int, ...]:
        return tuple(m for m in self.config.voters if m != self.id)

    def _counts(self, src: int, inc: int) -> bool:
        """Whether a promise or answer from (src, inc) counts under our configuration (the
        tracker's rule, which follows every configuration change)."""
        return self.tracker.counts(src, inc)

    def can_campaign(self) -> bool:
        """Only a voter, under our own incarnation, runs elections: a voter of our latest
        configuration, or of our committed one while a later one that drops us is pending.
        That pending change may never commit, and until it does the committed voters may
        need us: we may hold the freshest log, which no one else can win without (the Raft
        thesis, 4.2.2). We count promises by the latest configuration, never our own, and
        step down once it commits, as a leader removed while leading does."""
        if "learner_campaigns" in self.bugs or self.config.counts(self.id, self.inc):
            return True
        return self.config_index > self.commit and self.committed_config().counts(self.id, self.inc)

    @property
    def removed(self) -> bool:
        """A configuration named us and our committed one no longer does: an operator removed
        this node. The shell stops, keeping the data. (A node that was never named, a joining
        or wiped one, is an observer, not removed.)"""
        if not self._named or not self._caught_up:
            return False  # (catching up through old configurations proves nothing about now)
        cfg = self.committed_config()
        return not cfg.provisional and not cfg.is_member(self.id, self.inc)

    def committed_config(self) -> Config:
        """The latest configuration at or below the commit index."""
        for index in sorted(self._configs, reverse=True):
            if index <= self.commit:
                return self._configs[index]
        return self.base_config

    def change_config(self, new: Config) -> tuple[int, str]:
        """Leader: append `new` as the next configuration. Returns (its index, "") or
        (0, why not). Safety rules only; whether the live nodes can carry it is the caller's."""
        if self.role != Role.LEADER:
            return 0, "not the leader"
        if self.config.provisional:
            return 0, "the cluster is still forming; retry shortly"
        if self.commit < self._epoch_start and "config_before_own_commit" not in self.bugs:
            return 0, "the leader's first entry of its epoch has not committed yet; retry shortly"
        if self.config_index > self.commit and "two_pending_configs" not in self.bugs:
            return 0, "the previous configuration change has not committed yet; retry shortly"
        if new.cluster_id != self.config.cluster_id:
            return 0, "a configuration of another cluster"
        if voter_change(self.config, new) > 1:
            return 0, "a change may add or remove one voter at a time"
        if not new.voters:
            return 0, "a configuration needs at least one voter"
        self._append_own(encode_config(new))
        self._note(f"proposes configuration {_describe(new)} at index {self.log.last_index}")
        self._broadcast_append()
        return self.log.last_index, ""

    def transfer_leadership(self, target: int = 0) -> tuple[int, str]:
        """Leader: hand over to voter `target` (0: the most caught-up live voter). New writes
        are refused meanwhile; once the target holds our whole log it is told to run at once
        (TimeoutNow); abandoned after an election timeout. Returns (target, "") or (0, why)."""
        if self.role != Role.LEADER:
            return 0, "not the leader"
        if self.transfer_to:
            return 0, f"a transfer to node {self.transfer_to} is under way"
        window = self.timing.election_ticks
        live = [p for p, pr in self.tracker.items()
                if self.config.counts(p, pr.inc) and self.now - pr.last_contact_tick < window]
        if target == 0:
            if not live:
                return 0, "no other live voter to hand over to"
            target = max(live, key=lambda p: (self.tracker[p].match, -p))
        elif target == self.id:
            return 0, "this node leads already"
        elif target not in live:
            return 0, f"node {target} is not a live voter"
        self.transfer_to, self._transfer_since = target, self.now
        self._note(f"hands leadership over to node {target}")
        self._maybe_timeout_now()
        return target, ""

    def _maybe_timeout_now(self) -> None:
        pr = self.tracker.get(self.transfer_to)
        if pr is None:
            self._end_transfer("the target left the configuration")
        elif pr.match >= self.log.last_index:
            self._send(TimeoutNow(self.id, self.transfer_to, self.hs.epoch))
        else:
            self._send_more(self.transfer_to)

    def _end_transfer(self, why: str, leading: bool = True) -> None:
        if self.transfer_to:
            self._note(f"transfer to node {self.transfer_to} ends: {why}")
            self.transfer_to = 0
        held, self._held = self._held, []
        if held and leading:
            self.propose(held)  # still the leader: take them now
        # else: we stepped down; the shell proposes its waiting writes to the new leader

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if m.epoch != self.hs.epoch or self.leader != m.src or self.role != Role.FOLLOWER:
            return  # only our current leader may ask, and only in its epoch
        if not self.can_campaign():
            return
        self._note(f"leader {m.src} hands over: running now")
        self._handover = m.src
        self._start_election(insist=True)

    def _maybe_form(self) -> None:
        """Leader of a provisional configuration: once our no-op committed (every seed has
        everything) and every seed told us its incarnation, write the first formed one."""
        if not self.config.provisional or self.commit < self._epoch_start or self.config_index > self.commit:
            return
        members = []
        for m in self.config.members:
            inc = self.inc if m.id == self.id else self.tracker[m.id].inc
            if not inc:
                return
            members.append(Member(m.id, inc, m.voter, m.rpc, m.pub, m.keys))
        formed = Config(self._rng.getrandbits(62) + 1, tuple(members))
        self._append_own(encode_config(formed))
        self._note(f"forms the cluster: configuration {_describe(formed)} at index {self.log.last_index}")
        self._broadcast_append()

    def _names_us(self, config: Config) -> bool:
        # Exactly: a learner added as "incarnation 0" names whichever disk answers, not us in particular.
        m = config.member(self.id)
        return not config.provisional and m is not None and m.incarnation == self.inc

    def _scan_configs(self, lo: int, hi: int) -> None:
        for index in self.log.find(lo, hi, CONFIG_MARK):
            config = self._decode_config(index)
            if config is not None:
                self._configs[index] = config

    def _decode_config(self, index: int) -> Config | None:
        try:
            return decode_config(self.log.data_at(index))
        except DecodeError as e:  # the same on every node: a bad entry changes nothing anywhere
            self._note(f"ignores the malformed configuration entry {index}: {e}")
            return None

    def _latest_config(self) -> tuple[Config, int]:
        if self._configs:
            index = max(self._configs)
            return self._configs[index], index
        return self.base_config, self.log.first_index - 1

    def _configs_appended(self, entries: Sequence[Entry]) -> None:
        """New log entries: a configuration among them is in force at once (on append)."""
        for e in entries:
            if is_config(e.data):
                config = self._decode_config(e.index)
                if config is not None:
                    self._configs[e.index] = config
                    self._use_config()

    def _use_config(self) -> None:
        config, index = self._latest_config()
        if index == self.config_index and config is self.config:
            return
        self.config, self.config_index = config, index
        self._named = self._named or self._names_us(config)
        self.tracker.set_config(config, index, self.log.last_index + 1, self.now,
                                self.role == Role.LEADER, self.bugs)
        self._note(f"uses configuration {_describe(config)} of index {index}")

    # ------------------------------------------------------------ snapshots

    def compact(self, index: int) -> None:
        """Drop log entries <= index: the shell has made a snapshot holding them durable."""
        if index > self.applied:
            raise InvariantError(f"compacting to {index} past the applied index {self.applied}")
        if index >= self.log.first_index:
            below = [i for i in self._configs if i <= index]
            if below:
                self.base_config = self._configs[max(below)]
                for i in below:
                    del self._configs[i]
            self.log.compact(index)

    def snapshot_stored(self, chunk: InstallSnapshot, offset: int) -> None:
        """Follower: the shell holds the first `offset` bytes of `chunk`'s snapshot."""
        if chunk.epoch == self.hs.epoch:
            self._send_after_persist(InstallSnapshotAck(self.id, chunk.src, self.hs.epoch, chunk.index, offset, False,
                                                        self.inc))

    def snapshot_installed(self, chunk: InstallSnapshot, installed: bool, config: Config | None = None) -> None:
        """Follower: `chunk` completed snapshot (index, index_epoch), now durable. `installed`:
        the shell replaced store and log with it (as `wants_install` allowed); else the store
        had applied it already and only the ack is due. `config`: the configuration the
        snapshot holds (None: a store from before configurations; ours stays)."""
        if installed:
            self._install(chunk, config)
        if chunk.epoch == self.hs.epoch:
            end = chunk.offset + len(chunk.data)
            self._send_after_persist(InstallSnapshotAck(self.id, chunk.src, self.hs.epoch, chunk.index, end, True,
                                                        self.inc))

    def _install(self, chunk: InstallSnapshot, config: Config | None) -> None:
        index, epoch = chunk.index, chunk.index_epoch
        if not self.wants_install(chunk):
            raise InvariantError(f"snapshot {index} installed at applied {self.applied}, epoch {chunk.epoch}")
        # Raft's rule, as kept_after: keep the suffix if the log holds the snapshot's last entry.
        below = [i for i in self._configs if i <= index]
        if config is None and below:
            config = self._configs[max(below)]  # a store from before configurations: ours as of its index
        if self.log.first_index - 1 <= index <= self.log.last_index and self.log.matches(index, epoch):
            self.log.compact(index)
            self._configs = {i: c for i, c in self._configs.items() if i > index}
        else:
            self.log.reset(index, epoch)
            self._configs = {}
        if config is not None:
            self.base_config = config
        self._use_config()
        self.stable = self.log.last_index  # the shell rewrote the WAL with exactly this log
        self.commit, self.applied = max(self.commit, index), index
        verified = self._verified if self._verified_epoch == self.hs.epoch else 0
        self._verified, self._verified_epoch = max(verified, index), self.hs.epoch
        self.snapshots_installed += 1
        self._note(f"installed the snapshot of index {index} from node {chunk.src}")

    def kept_after(self, index: int, epoch: int) -> list[Entry]:
        """The entries a snapshot of (index, epoch) leaves in the log: the suffix after
        `index` if the log holds that entry, else none (Raft's InstallSnapshot rule)."""
        if self.log.first_index - 1 <= index <= self.log.last_index and self.log.matches(index, epoch):
            return self.log.slice(index + 1, self.log.last_index)
        return []

    def wants_install(self, chunk: InstallSnapshot) -> bool:
        """Follower: would the completed snapshot of `chunk` move the store forward?"""
        return chunk.index > self.applied and chunk.epoch == self.hs.epoch

    def _start_snapshot(self, peer: int, pr: Progress) -> None:
        pr.snapshot, pr.probing, pr.inflight = True, True, 0
        pr.snap_index = pr.snap_offset = 0
        pr.last_ack_tick = self.now
        self.snapshots_started += 1
        self._note(f"node {peer} needs entry {pr.next} below the log start {self.log.first_index}; "
                   "sending the snapshot")
        self.out.ship.append(ShipOrder(peer, 0, 0))

    def _snapshot_retry(self, peer: int, pr: Progress) -> None:
        retry = self.timing.snapshot_retry_ticks or 4 * self.timing.heartbeat_ticks
        if self.now - pr.last_ack_tick >= retry:  # chunks or acks were lost: resend from the last ack
            pr.last_ack_tick = self.now
            self.out.ship.append(ShipOrder(peer, pr.snap_index, pr.snap_offset, resend=True))

    # ------------------------------------------------------------ outputs

    def _send(self, msg: Message) -> None:
        self.out.msgs.append(msg)

    def _send_after_persist(self, msg: Message) -> None:
        self.out.after.append(msg)

    def _note(self, text: str) -> None:
        self.out.notes.append(f"node {self.id} epoch {self.hs.epoch} tick {self.now}: {text}")

    def _set_hard_state(self, hs: HardState, persist: bool = True) -> None:
        if hs.epoch < self.hs.epoch:
            raise InvariantError(f"epoch going back from {self.hs.epoch} to {hs.epoch}")
        if hs != self.hs:
            self.hs = hs
            self.out.hs_dirty = self.out.hs_dirty or persist

    def _set_commit(self, index: int) -> None:
        if index > self.commit:
            if index > self.log.last_index:
                raise InvariantError(f"commit {index} beyond last index {self.log.last_index}")
            self.commit = index
            self.out.commit_dirty = True

    def _append_own(self, data: bytes) -> None:
        entry = Entry(self.hs.epoch, self.log.last_index + 1, data)
        self.log.append(entry)
        self.out.entries.append(entry)
        if data[:1] == CONFIG_MARK:
            self._configs_appended((entry,))

    def _truncate_from(self, index: int) -> None:
        if index <= self.commit:
            raise InvariantError(f"truncating committed entry {index} (commit {self.commit})")
        self.log.truncate_from(index)
        self.out.truncate_from(index)
        if index <= self.stable:
            self.stable = index - 1
            self.out.truncate_durable(index)
        gone = [i for i in self._configs if i >= index]
        if gone and "no_config_fallback_on_truncate" not in self.bugs:
            for i in gone:
                del self._configs[i]
            self._use_config()  # back to the one before: committed, as one change is pending at most

    # ------------------------------------------------------------ timing

    def _rank(self) -> Rank:
        return rank(self.log.last_epoch, self.log.last_index, self.id)

    def _new_timeout(self) -> int:
        """Election timeout, staggered so the best-ranked live node moves first."""
        mine = self._rank()
        voters = self.config.voters
        better = sum(1 for p, r in self._peer_rank.items() if r > mine and p in voters)
        jitter = self._rng.randrange(max(1, self.timing.election_ticks // 4))
        return self.timing.election_ticks + better * self.timing.answer_ticks + jitter

    def _heard_from(self, peer: int) -> None:
        self._last_heard[peer] = self.now
        self._hinted_down.discard(peer)
        self.tracker.contact(peer, self.now)

    def _hears_live_leader(self) -> int:
        """The leader this node currently trusts, 0 if none."""
        if self.role == Role.LEADER:
            return self.id
        if self.role == Role.FOLLOWER and self.leader and self._elapsed < self.timing.election_ticks:
            return self.leader
        return 0

    def _heartbeat(self) -> None:
        self._send(
            Heartbeat(
                self.id, 0, self.hs.epoch, int(self.role), self.leader,
                self.log.last_epoch, self.log.last_index, self.commit, self.inc,
            )
        )
        if self.role == Role.LEADER:
            for peer, pr in self.tracker.items():
                if pr.snapshot:
                    self._snapshot_retry(peer, pr)
                    continue
                if pr.inflight and self.now - pr.last_ack_tick >= 2 * self.timing.heartbeat_ticks:
                    pr.restart_probe()  # appends or acks were lost: resend from match
                if pr.inflight == 0:
                    self._send_append(peer)

    # ------------------------------------------------------------ roles

    def _become_follower(self, leader: int) -> None:
        if self.role == Role.LEADER:
            self._fail_reads()
            self._end_transfer("stepped down", leading=False)
        self._handover = 0
        self.role = Role.FOLLOWER
        self.leader = leader
        self.tracker.reset()
        self._elapsed = 0
        self._timeout = self._new_timeout()

    def _follow(self, leader: int, epoch: int) -> None:
        """Accept `leader` as the leader of `epoch` (>= ours)."""
        if epoch > self.hs.epoch:
            self._set_hard_state(HardState(epoch, leader))
        if self.role != Role.FOLLOWER or self.leader != leader:
            self._note(f"following node {leader}")
            self._become_follower(leader)
            self._remote_reads_fail()
        self._elapsed = 0
        self._awaiting_better = False

    def _start_election(self, insist: bool) -> None:
        self._note(
            f"suspects leader {self.leader or '-'} after {self._elapsed} ticks; asking peers"
            + (" (insisting)" if insist else "")
        )
        self.role = Role.ELECTING
        self.leader = 0
        self._elapsed = 0
        self._insist = insist
        self._awaiting_better = False
        self._answers = {self.id: AnswerReason.OK}
        for peer in self._voter_peers():
            self._send(Election(self.id, peer, self.hs.epoch, self.log.last_epoch, self.log.last_index, insist,
                                self.inc, self._handover))
        self._maybe_decide_election()

    def _silent(self, peer: int) -> bool:
        """Not heard from for a whole election timeout, or its connection closed since we
        last heard it: presumed down (a crashed leader)."""
        return peer in self._hinted_down or self.now - self._last_heard.get(peer, 0) >= self.timing.election_ticks

    def _maybe_decide_election(self, timed_out: bool = False) -> None:
        # Decide once every peer answered, or (saving the answer wait after a
        # crash) once the only ones missing are presumed down (silent for an
        # election timeout, or their connection closed since we last heard them):
        # their answer would not come in time anyway. Being down still never
        # counts as consent: the majority of OKs below is required.
        voters, need = self.config.voters, self.config.quorum()
        if not timed_out and len(self._answers) < len(voters):
            missing = [p for p in voters if p not in self._answers]
            oks = sum(1 for r in self._answers.values() if r == AnswerReason.OK)
            if oks < need or not all(map(self._silent, missing)):
                return
        reasons = list(self._answers.values())
        if AnswerReason.BETTER in reasons and not self._insist:
            self._note("a better-ranked node will run; waiting for its Coordinator")
            self._become_follower(0)
            self._awaiting_better = True
            self._timeout = self.timing.election_ticks
        elif AnswerReason.LEADER_ALIVE in reasons:
            self._note("a peer still hears a healthy leader; not running")
            self._become_follower(0)
        elif reasons.count(AnswerReason.OK) >= need:
            self._become_candidate()
        else:
            self._note(f"only {len(reasons)} of {len(voters)} voters answered; not running")
            self._become_follower(0)

    def _become_candidate(self) -> None:
        epoch = max(self.hs.epoch, self._max_seen_epoch) + 1
        self._set_hard_state(HardState(epoch, self.id))
        self.role = Role.CANDIDATE
        self._elapsed = 0
        self._promises = {self.id} if self._counts(self.id, self.inc) else set()
        self._note(f"claims epoch {epoch} with rank {self._rank()}")
        for peer in self._voter_peers():
            self._send_after_persist(Coordinator(self.id, peer, epoch, self.log.last_epoch, self.log.last_index,
                                                 self.inc, self._handover))
        self._maybe_win()

    def _maybe_win(self) -> None:
        if len(self._promises) >= self.config.quorum():
            self._become_leader()

    def _become_leader(self) -> None:
        self._handover = 0
        self.role = Role.LEADER
        self.leader = self.id
        self.leader_since = self.now
        self._elapsed = 0
        self.tracker.start(self.log.last_index + 1, self.now, self._peer_inc)
        self._append_own(b"")  # the no-op that lets us commit (and serve reads) in our epoch
        self._epoch_start = self.log.last_index
        self._note(f"is leader with promises from {sorted(self._promises)}")
        self._broadcast_append()

    # ------------------------------------------------------------ ticks

    def _tick_follower(self) -> None:
        if self._elapsed >= self._timeout and self.can_campaign():
            self._start_election(insist=self._awaiting_better)

    def _tick_electing(self) -> None:
        if self._elapsed >= self.timing.answer_ticks:
            self._maybe_decide_election(timed_out=True)

    def _tick_candidate(self) -> None:
        if self._elapsed >= self.timing.election_ticks:
            self._note(f"got promises from {sorted(self._promises)} only; giving up the claim")
            self._become_follower(0)

    def _tick_leader(self) -> None:
        # Check-quorum: a leader that no majority has heard from steps down,
        # so a leader cut off with a minority stops taking writes.
        window = self.timing.election_ticks
        heard = self.tracker.heard_within(self.now, window)
        if heard < self.config.quorum():
            self._note(f"heard from {heard} of {len(self.config.voters)} voters in {window} ticks; stepping down")
            self._become_follower(0)
            return
        if self.transfer_to:
            if self.now - self._transfer_since >= self.timing.election_ticks:
                self._end_transfer("not done within an election timeout; taking writes again")
            else:
                self._maybe_timeout_now()
        self._tell_commit()

    def _tell_commit(self) -> None:
        """Idle followers that have not heard our commit index get it now (once a tick)."""
        for peer, pr in self.tracker.items():
            if pr.told_commit < self.commit and pr.inflight == 0 and not pr.probing:
                self._send_append(peer)

    # ------------------------------------------------------------ handlers

    def _on_heartbeat(self, m: Heartbeat) -> None:
        self._peer_rank[m.src] = rank(m.last_epoch, m.last_index, m.src)
        if m.role != Role.LEADER or m.leader != m.src or m.epoch < self.hs.epoch:
            return
        if self.role == Role.LEADER:
            if m.epoch == self.hs.epoch:
                raise InvariantError(f"two leaders in epoch {m.epoch}: {self.id} and {m.src}")
            return
        self._follow(m.src, m.epoch)

    def _on_election(self, m: Election) -> None:
        self._peer_rank[m.src] = rank(m.last_epoch, m.last_index, m.src)
        live = self._hears_live_leader()
        if live and live == m.handover:
            live = 0  # the leader we hear asked it to run
        # Learners and observers never claim to be better: they will not run.
        better = self.can_campaign() and self._rank() > rank(m.last_epoch, m.last_index, m.src)
        if live:
            reason, leader = AnswerReason.LEADER_ALIVE, live
        elif better and not m.insist:
            reason, leader = AnswerReason.BETTER, 0
        else:
            reason, leader = AnswerReason.OK, 0
        self._send(Answer(self.id, m.src, self.hs.epoch, int(reason), leader, self.inc))
        if reason == AnswerReason.BETTER and self.role == Role.FOLLOWER:
            self._start_election(insist=False)
        elif reason == AnswerReason.BETTER and self.role == Role.ELECTING:
            # Its Election says it hears no live leader now, and we outrank it: the answer it
            # would give us if we asked again (an earlier objection of its is stale).
            self._answers[m.src] = AnswerReason.OK
            self._maybe_decide_election()
        elif reason == AnswerReason.OK and not m.insist and self.role == Role.ELECTING:
            # A better node is running: let it, rather than split the promises.
            self._become_follower(0)
            self._awaiting_better = True
            self._timeout = self.timing.election_ticks

    def _on_answer(self, m: Answer) -> None:
        if self.role != Role.ELECTING or m.reason not in AnswerReason._value2member_map_:
            return
        if not self._counts(m.src, m.inc):
            return  # not a voter of ours (any more, or under that incarnation)
        self._answers[m.src] = m.reason
        self._maybe_decide_election()

    def _on_coordinator(self, m: Coordinator) -> None:
        self._peer_rank[m.src] = rank(m.last_epoch, m.last_index, m.src)
        live = self._hears_live_leader()
        grant = (live in (0, m.src, m.handover)) and may_promise(
            self.hs,
            m.src,
            m.epoch,
            (m.last_epoch, m.last_index),
            (self.log.last_epoch, self.log.last_index),
            ignore_log="promise_behind_log" in self.bugs,
        )
        if not grant:
            self._send(Promise(self.id, m.src, self.hs.epoch, False, self.inc))
            return
        unpersisted = "promise_not_persisted" in self.bugs
        self._set_hard_state(HardState(m.epoch, m.src), persist=not unpersisted)
        if self.role != Role.FOLLOWER or self.leader:
            self._become_follower(0)
        self._elapsed = 0
        self._awaiting_better = False
        self._timeout = self.timing.election_ticks
        promise = Promise(self.id, m.src, m.epoch, True, self.inc)
        self._send(promise) if unpersisted else self._send_after_persist(promise)

    def _on_promise(self, m: Promise) -> None:
        if self.role != Role.CANDIDATE or m.epoch != self.hs.epoch or not m.granted:
            return
        if not self._counts(m.src, m.inc):
            return  # a learner, an observer, or a disk that is not the one our configuration names
        self._promises.add(m.src)
        self._maybe_win()

    def _on_append(self, m: Append) -> None:
        if m.epoch < self.hs.epoch:
            self._ack(m, False, self.log.last_index, m.prev_index)  # tells a stale leader our epoch
            return
        if self.role == Role.LEADER:
            raise InvariantError(f"two leaders in epoch {m.epoch}: {self.id} and {m.src}")
        self._follow(m.src, m.epoch)
        prev_index, prev_epoch, entries = m.prev_index, m.prev_epoch, m.entries
        if prev_index < self.log.first_index - 1:
            # Below our first entry everything is committed, hence equal: skip it.
            skip = self.log.first_index - 1 - prev_index
            entries = entries[skip:]
            prev_index, prev_epoch = self.log.first_index - 1, self.log.prev_epoch
        if prev_index > self.log.last_index:
            self._ack(m, False, self.log.last_index, m.prev_index)
            return
        if not self.log.matches(prev_index, prev_epoch):
            self._ack(m, False, self.log.conflict_hint(prev_index, self.commit), m.prev_index)
            return
        self._append_entries(entries)
        match = prev_index + len(entries)
        if self._verified_epoch != m.epoch:
            # What matched an earlier leader proves nothing about this one's log
            # (we may have learned this epoch from a promise, not an append).
            self._verified, self._verified_epoch = 0, m.epoch
        self._verified = max(self._verified, match)
        self._set_commit(min(m.commit, self._verified))
        self._caught_up = self.commit >= m.commit
        self._ack(m, True, match)

    def _append_entries(self, entries: Sequence[Entry]) -> None:
        if entries and entries[0].index == self.log.last_index + 1:
            self.log.extend(entries)  # the common case (and all of a catch-up): nothing to compare
            self.out.entries.extend(entries)
            self._configs_appended(entries)
            return
        for entry in entries:
            have = self.log.epoch_at(entry.index)
            if have == entry.epoch:
                continue  # already there (a duplicate or overlapping append)
            if have is not None:
                if "never_truncate" in self.bugs:
                    continue
                self._note(f"truncates conflicting suffix from {entry.index}")
                self._truncate_from(entry.index)
            self.log.append(entry)
            self.out.entries.append(entry)
            self._configs_appended((entry,))

    def _ack(self, m: Append, success: bool, match: int, rejected: int = 0) -> None:
        ack = AppendAck(self.id, m.src, self.hs.epoch, success, match, m.round, rejected, self.inc)
        if "ack_before_persist" in self.bugs:
            self._send(ack)
        else:
            self._send_after_persist(ack)

    def _on_append_ack(self, m: AppendAck) -> None:
        if self.role != Role.LEADER or m.epoch != self.hs.epoch:
            return
        pr = self.tracker.get(m.src)
        if pr is None:
            return  # not a member we replicate to (any more)
        if m.inc != pr.inc:
            self._new_incarnation(m.src, pr, m.inc)
        pr.last_ack_tick = self.now
        if m.round > pr.round:
            pr.round = m.round
            self._confirm_reads()
        if pr.snapshot:
            return  # an append sent before the transfer began: the snapshot's ack decides
        if m.success:
            if m.match > self.log.last_index:
                return  # cannot be ours: ignore rather than trust it
            pr.match = max(pr.match, m.match)
            pr.next = max(pr.next, pr.match + 1)
            pr.inflight = max(0, pr.inflight - 1)
            pr.probing = False
            self._maybe_commit()
            if self.transfer_to == m.src:
                self._maybe_timeout_now()
        elif not self._rejection_is_current(pr, m.rejected):
            return  # stale or duplicated: acting on it would resend needlessly (and, with
            # duplicating networks, multiply messages without bound)
        else:
            if m.match < pr.match:
                # It acknowledged more than it now has: its disk lost fsynced
                # records (a cut log, a lying disk). Believe it, so it can catch up.
                self._note(f"node {m.src} lost entries {m.match + 1}..{pr.match} it had acknowledged; resending")
                pr.match = m.match
            pr.probing = True
            pr.inflight = 0
            pr.next = max(pr.match + 1, min(m.match + 1, self.log.last_index + 1))
        self._send_more(m.src)

    def _new_incarnation(self, peer: int, pr: Progress, inc: int) -> None:
        """Acks from another incarnation of `peer`: a new disk. What we knew of the old one
        says nothing of it; find its log again (it counts only if the configuration names it)."""
        old, pr.inc = pr.inc, inc
        if not old:
            return  # the first we hear of it: nothing known to forget
        self._note(f"node {peer} answers as incarnation {inc:x}, not {old:x}: its disk is new")
        pr.match, pr.round, pr.inflight, pr.probing = 0, 0, 0, True
        pr.snapshot, pr.snap_index, pr.snap_offset = False, 0, 0
        pr.next = self.log.last_index + 1  # probe from our end: its refusal says where its log ends

    @staticmethod
    def _rejection_is_current(pr: Progress, rejected: int) -> bool:
        """etcd-raft's maybeDecrTo: a probe's refusal must be of the probe in flight;
        while pipelining, any refusal above what we know matches is current."""
        if pr.probing:
            return rejected == pr.next - 1
        return rejected > pr.match

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if m.epoch < self.hs.epoch:
            self._send(InstallSnapshotAck(self.id, m.src, self.hs.epoch, m.index, 0, False, self.inc))  # our epoch fences it
            return
        if self.role == Role.LEADER:
            raise InvariantError(f"two leaders in epoch {m.epoch}: {self.id} and {m.src}")
        self._follow(m.src, m.epoch)  # a long transfer is a sign of life: no election meanwhile
        if m.index <= self.commit:
            # Everything up to a committed index is equal on every node: we hold it already.
            self._send_after_persist(InstallSnapshotAck(self.id, m.src, self.hs.epoch, m.index, 0, True, self.inc))
            return
        self.out.chunks.append(m)

    def _on_install_snapshot_ack(self, m: InstallSnapshotAck) -> None:
        if self.role != Role.LEADER or m.epoch != self.hs.epoch:
            return
        pr = self.tracker.get(m.src)
        if pr is None:
            return  # not a member we replicate to (any more)
        if m.inc != pr.inc:
            self._new_incarnation(m.src, pr, m.inc)  # another disk than the one the transfer was for
            if pr.snapshot is False and pr.probing:
                self._send_more(m.src)
            return
        if not pr.snapshot:
            return  # a late ack of a finished transfer
        pr.last_ack_tick = self.now
        if m.done:
            if m.index > self.commit:
                return  # cannot be a snapshot of ours: ignore rather than trust it
            pr.snapshot, pr.snap_index, pr.snap_offset = False, 0, 0
            pr.match = max(pr.match, m.index)
            pr.next, pr.inflight = pr.match + 1, 0  # probing: the entries after it go one append at a time first
            self._note(f"node {m.src} holds the snapshot of index {m.index}; appending from {pr.next}")
            self._send_more(m.src)
            return
        # Another index than the one under way, or less than it had: it lost what it had, go back.
        resend = pr.snap_index != 0 and (m.index != pr.snap_index or m.offset < pr.snap_offset)
        pr.snap_index, pr.snap_offset = m.index, m.offset
        self.out.ship.append(ShipOrder(m.src, m.index, m.offset, resend))

    def _on_forward(self, m: Forward) -> None:
        if self.role == Role.LEADER and m.commands:
            commands = [c for c in m.commands if c[:1] != CONFIG_MARK]
            if len(commands) != len(m.commands):
                self.dropped += 1  # only the leader writes configurations, never a forwarded "command"
                if not commands:
                    return
            self.propose(commands)
            pr = self.tracker.get(m.src)
            if pr is not None:
                pr.forwarded = self.log.last_index

    def _on_read_index_request(self, m: ReadIndexRequest) -> None:
        if self.role == Role.LEADER:
            self.reads.queue(m.src, m.ctx)
        else:
            self._send(ReadIndexReply(self.id, m.src, self.hs.epoch, m.ctx, False, 0))

    def _on_read_index_reply(self, m: ReadIndexReply) -> None:
        if self.reads.remote_answered(m.ctx):
            self.out.reads.append(ReadState(m.ctx, m.index if m.ok else -1))

    # ------------------------------------------------------------ leader work

    def _broadcast_append(self) -> None:
        for peer in self.tracker.progress:
            self._send_more(peer)
        if not self.tracker.progress:
            self._maybe_commit()

    def _send_more(self, peer: int) -> None:
        pr = self.tracker.get(peer)
        if pr is None or pr.snapshot:
            return  # (None: removed and pruned, or we stepped down, while handling its ack)
        # Bounded by appends and by entries past `match`: a follower far behind
        # gets a window it can persist and ack within the resend timeout, not a
        # flood it is still chewing on when the leader gives up and resends it all.
        last = min(self.log.last_index, pr.match + self.timing.max_inflight_entries)
        while not pr.snapshot and pr.can_send(self.timing.max_inflight) and pr.next <= last:
            self._send_append(peer)

    def _send_append(self, peer: int) -> None:
        pr = self.tracker[peer]
        if pr.snapshot:
            return
        prev = pr.next - 1
        prev_epoch = self.log.epoch_at(prev)
        if prev_epoch is None and prev < self.log.first_index - 1:
            self._start_snapshot(peer, pr)  # the entries it needs live only in our snapshot now
            return
        if prev_epoch is None:
            raise InvariantError(f"no entry {prev} to send to node {peer} (log starts at {self.log.first_index})")
        entries = self.log.slice(
            pr.next, pr.next + self.timing.max_batch_entries - 1, self.timing.max_batch_bytes
        )
        self._send(Append(self.id, peer, self.hs.epoch, prev, prev_epoch, tuple(entries), self.commit, self.reads.round))
        pr.told_commit = self.commit
        if entries and not pr.probing:
            pr.next = entries[-1].index + 1  # a probe keeps `next` until its answer comes
        if pr.inflight == 0:
            pr.last_ack_tick = self.now
        pr.inflight += 1

    def _maybe_commit(self) -> None:
        index = self.tracker.committed(self.stable)
        if index <= self.commit:
            return
        if self.log.epoch_at(index) != self.hs.epoch and "commit_old_epoch" not in self.bugs:
            return  # Raft 5.4.2: older epochs commit only under an entry of ours
        self._set_commit(index)
        if self.tracker.linger:
            for peer in self.tracker.prune(self.commit):
                self._note(f"node {peer} holds its removal; no longer replicating to it")
        if not self.tracker.self_counts and self.commit >= self.config_index:
            # Removed (or demoted) while leading: we led until the configuration without us
            # committed; the voters elect the next leader among themselves.
            self._note(f"configuration {self.config_index} without this node committed; stepping down")
            self._caught_up = True  # we committed it ourselves: `removed` may judge by it
            self._become_follower(0)
            return
        self._maybe_form()
        for peer, pr in self.tracker.items():
            # A follower that forwarded writes answers its clients once it applies them:
            # tell it now. The others hear at the next tick (_tell_commit) or with the next
            # append, whichever is first: a message per commit to every idle follower costs
            # each of them a wake-up, an fsync-less turn and an ack, on the path of the answer.
            if pr.forwarded > pr.told_commit and pr.inflight == 0 and not pr.probing:
                self._send_append(peer)
        if self.reads.waiting or self.reads.unsent:
            self._confirm_reads()

    # ------------------------------------------------------------ reads

    def _flush_reads(self) -> None:
        """Start one confirmation round for every read that arrived since the last."""
        if not self.reads.unsent or self.role != Role.LEADER:
            return
        if self.commit < self._epoch_start:
            return  # until our no-op commits we do not know the true commit index
        round_ = self.reads.start_round(self.commit)
        for peer, pr in self.tracker.items():
            prev = pr.next - 1 if pr.probing else pr.match
            prev_epoch = self.log.epoch_at(prev)
            if prev_epoch is not None:
                self._send(Append(self.id, peer, self.hs.epoch, prev, prev_epoch, (), self.commit, round_))
                pr.told_commit = self.commit
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        if not self.reads.waiting:
            return
        for index, requester, ctx in self.reads.confirm(self.tracker.confirmed_round(self.reads.round)):
            if requester == 0:
                self.out.reads.append(ReadState(ctx, index))
            else:
                self._send(ReadIndexReply(self.id, requester, self.hs.epoch, ctx, True, index))

    def _fail_reads(self) -> None:
        for requester, ctx in self.reads.fail():
            if requester == 0:
                self.out.reads.append(ReadState(ctx, -1))
            else:
                self._send(ReadIndexReply(self.id, requester, self.hs.epoch, ctx, False, 0))

    def _remote_reads_fail(self) -> None:
        for ctx in self.reads.fail_remote():
            self.out.reads.append(ReadState(ctx, -1))


_STEP: dict[type, Callable[[Replica, Message], None]] = {
    Heartbeat: Replica._on_heartbeat,
    Election: Replica._on_election,
    Answer: Replica._on_answer,
    Coordinator: Replica._on_coordinator,
    Promise: Replica._on_promise,
    Append: Replica._on_append,
    AppendAck: Replica._on_append_ack,
    Forward: Replica._on_forward,
    ReadIndexRequest: Replica._on_read_index_request,
    ReadIndexReply: Replica._on_read_index_reply,
    InstallSnapshot: Replica._on_install_snapshot,
    InstallSnapshotAck: Replica._on_install_snapshot_ack,
    TimeoutNow: Replica._on_timeout_now,
}

_TICK: dict[Role, Callable[[Replica], None]] = {
    Role.FOLLOWER: Replica._tick_follower,
    Role.ELECTING: Replica._tick_electing,
    Role.CANDIDATE: Replica._tick_candidate,
    Role.LEADER: Replica._tick_leader,
}


def _describe(config: Config) -> str:
    """`{1, 2, 3+4}`-style: voters, then learners after a plus sign; incarnations left out."""
    voters = ", ".join(map(str, config.voters))
    learners = "+".join(map(str, config.learners))
    return "{" + voters + (" +" + learners if learners else "") + "}" + (" (forming)" if config.provisional else "")
