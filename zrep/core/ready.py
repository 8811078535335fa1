"""`Ready`: everything one step of the core asks the world to do, in order.

The shell (real node or simulator) applies a Ready through
`zrep.service.apply.apply_ready`, and only there:
  1. send `messages` (safe before the persist: a leader's appends, elections);
  2. persist `hard_state`, `truncate_from`, `entries`, `commit`, then one fsync;
  3. send `after_persist` (acks and promises: they state durable facts);
  4. apply `committed` to the store, answer `reads`;
  5. call `replica.advance(ready)`;
  6. (zrep.service.service) turn `ship` orders into InstallSnapshot chunks read from
     the snapshot file, and store the `chunks` received, reporting each back
     (`replica.snapshot_stored` / `snapshot_installed`): the bytes are the
     shell's business, the decisions the core's.
Splitting the two message lists in the type makes "an ack before its fsync"
impossible to write by accident.

`Outbox` gathers a replica's outputs between two `ready()` calls and builds the
Ready from them; it owns no protocol state (the replica decides, the outbox
only remembers what was decided, in order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zrep.core.messages import Entry, HardState, InstallSnapshot, Message


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be answered once the store has applied `index`.
    `index` is -1 when the read failed (leadership lost: retry elsewhere)."""

    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class ShipOrder:
    """Leader: send `peer` the snapshot from byte `offset`. `index` 0 starts a
    transfer of the snapshot the shell holds now; otherwise it continues the
    transfer of snapshot `index` (an order for another index is stale).
    `resend`: forget what was sent past `offset` (chunks or acks were lost) and
    probe with one chunk."""

    peer: int
    index: int
    offset: int
    resend: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    truncate_from: int | None
    entries: tuple[Entry, ...]
    commit: int | None
    messages: tuple[Message, ...]
    after_persist: tuple[Message, ...]
    committed: tuple[Entry, ...]
    reads: tuple[ReadState, ...]
    notes: tuple[str, ...]
    ship: tuple[ShipOrder, ...] = ()
    chunks: tuple[InstallSnapshot, ...] = ()  # follower: snapshot chunks to store, in order

    @property
    def must_persist(self) -> bool:
        return self.hard_state is not None or self.truncate_from is not None or bool(self.entries)

    @property
    def empty(self) -> bool:
        return not (
            self.must_persist
            or self.commit is not None
            or self.messages
            or self.after_persist
            or self.committed
            or self.reads
            or self.notes
            or self.ship
            or self.chunks
        )


class Outbox:
    """A replica's outputs since the last Ready: messages, entries to persist, the
    hard state and commit marks, reads, notes and snapshot work."""

    __slots__ = ("msgs", "after", "entries", "truncate", "hs_dirty", "commit_dirty", "reads", "notes",
                 "ship", "chunks")

    def __init__(self) -> None:
        self.msgs: list[Message] = []
        self.after: list[Message] = []
        self.entries: list[Entry] = []
        self.truncate: int | None = None
        self.hs_dirty = False
        self.commit_dirty = False
        self.reads: list[ReadState] = []
        self.notes: list[str] = []
        self.ship: list[ShipOrder] = []
        self.chunks: list[InstallSnapshot] = []

    def send(self, msg: Message) -> None:
        self.msgs.append(msg)

    def send_after_persist(self, msg: Message) -> None:
        self.after.append(msg)

    def truncate_from(self, index: int) -> None:
        """Entries from `index` leave the log: drop the unpersisted ones; a persisted
        one needs a TRUNCATE record (`durable`)."""
        self.entries = [e for e in self.entries if e.index < index]

    def truncate_durable(self, index: int) -> None:
        self.truncate = index if self.truncate is None else min(self.truncate, index)

    def pending(self) -> bool:
        return bool(
            self.msgs
            or self.after
            or self.entries
            or self.hs_dirty
            or self.truncate is not None
            or self.commit_dirty
            or self.reads
            or self.notes
            or self.ship
            or self.chunks
        )

    def take(self, hard_state: HardState, commit: int, committed: Sequence[Entry], ship: bool,
             chunk_epoch: int, chunk_leader: int) -> Ready:
        """The Ready of everything gathered, and an empty outbox. `ship`: snapshot orders
        go out (a leader's only); chunks only of `chunk_leader` in `chunk_epoch` (an
        older leader's may not be installed)."""
        ready = Ready(
            hard_state=hard_state if self.hs_dirty else None,
            truncate_from=self.truncate,
            entries=tuple(self.entries),
            commit=commit if self.commit_dirty else None,
            messages=tuple(self.msgs),
            after_persist=tuple(self.after),
            committed=tuple(committed),
            reads=tuple(self.reads),
            notes=tuple(self.notes),
            ship=tuple(self.ship) if ship else (),
            chunks=tuple(c for c in self.chunks if c.epoch == chunk_epoch and c.src == chunk_leader),
        )
        self.msgs, self.after, self.entries, self.reads, self.notes = [], [], [], [], []
        self.ship, self.chunks = [], []
        self.truncate = None
        self.hs_dirty = self.commit_dirty = False
        return ready


@dataclass(frozen=True, slots=True)
class Timing:
    """Protocol timing in abstract ticks (the shell decides how long a tick is)."""

    heartbeat_ticks: int = 5
    election_ticks: int = 50
    answer_ticks: int = 5
    max_inflight: int = 64  # appends in flight per follower
    max_inflight_entries: int = 8192  # entries in flight past a follower's match
    max_batch_entries: int = 512
    max_batch_bytes: int = 1 << 20
    snapshot_retry_ticks: int = 0  # no ack of a snapshot chunk for this long: resend (0: 4 heartbeats)

    @classmethod
    def from_ms(cls, heartbeat_ms: int, election_timeout_ms: int, tick_ms: int) -> "Timing":
        hb = max(1, heartbeat_ms // tick_ms)
        return cls(
            heartbeat_ticks=hb,
            election_ticks=max(3 * hb, election_timeout_ms // tick_ms),
            answer_ticks=max(2, hb),
        )
