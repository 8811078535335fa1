"""Frozen dataclasses for every protocol message and hard state; log entries are NamedTuples.

Invariants: every message carries its sender (`src`), its destination (`dst`,
0 for a broadcast heartbeat) and the sender's epoch, so that a receiver can
judge any message, however late, by its epoch. Indexes are 1-based; 0 means
"before the first entry". Must not import anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import NamedTuple


class Entry(NamedTuple):
    """One log entry. `data` is an encoded store command; b"" is a leader's no-op.

    A NamedTuple (immutable like the dataclasses here) because entries are made
    by the hundred thousand on catch-up: it is made several times faster, and
    it is already the wire's [epoch, index, data] array."""

    epoch: int
    index: int
    data: bytes


# Entry from an (epoch, index, data) tuple known to hold three items: one C call,
# where Entry(...) and Entry._make run Python code per entry.
entry_of = partial(tuple.__new__, Entry)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a promise or an ack leaves the node.

    `epoch` is the highest epoch this node has joined; `vote` is the node it
    promised (or followed) in that epoch, 0 if none. One promise per epoch.
    """

    epoch: int = 0
    vote: int = 0


class Role(IntEnum):
    FOLLOWER = 0
    ELECTING = 1  # suspects the leader, asked its peers, waits for answers
    CANDIDATE = 2  # sent Coordinator, collects promises
    LEADER = 3


class AnswerReason(IntEnum):
    OK = 0  # no objection: I hear no leader and I am not better than you
    LEADER_ALIVE = 1  # I still hear a healthy leader: do not disrupt it
    BETTER = 2  # my rank is higher: I run the election myself


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness and gossip over PUB/SUB. Confirms nothing: it is never acknowledged."""

    src: int
    dst: int
    epoch: int
    role: int
    leader: int
    last_epoch: int
    last_index: int
    commit: int
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts


@dataclass(frozen=True, slots=True)
class Election:
    """'I suspect the leader; may I run?' `insist` is set after a better node failed to claim."""

    src: int
    dst: int
    epoch: int
    last_epoch: int
    last_index: int
    insist: bool
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts
    handover: int = 0  # the leader that asked the sender to run (TimeoutNow): not a reason to object


@dataclass(frozen=True, slots=True)
class Answer:
    src: int
    dst: int
    epoch: int
    reason: int  # AnswerReason
    leader: int  # with LEADER_ALIVE: the leader this node hears
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts


@dataclass(frozen=True, slots=True)
class Coordinator:
    """'I claim `epoch`; my log ends at (last_epoch, last_index).'"""

    src: int
    dst: int
    epoch: int
    last_epoch: int
    last_index: int
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts
    handover: int = 0  # as Election.handover


@dataclass(frozen=True, slots=True)
class Promise:
    """A persisted promise (granted) or a refusal, with the refuser's epoch."""

    src: int
    dst: int
    epoch: int
    granted: bool
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts


@dataclass(frozen=True, slots=True)
class Append:
    """Leader to follower: entries after (prev_index, prev_epoch), and the commit index.

    `round` numbers the leader's confirmation rounds: an ack that echoes it
    proves the follower still accepted this leader after the round began
    (read index).
    """

    src: int
    dst: int
    epoch: int
    prev_index: int
    prev_epoch: int
    entries: tuple[Entry, ...]
    commit: int
    round: int


@dataclass(frozen=True, slots=True)
class AppendAck:
    """Follower to leader. On success `match` is the last index known to equal the
    leader's log; on failure `match` is a hint (retry from match + 1) and
    `rejected` the prev_index of the refused append, so that the leader can
    tell a stale or duplicated refusal from the answer to its current probe."""

    src: int
    dst: int
    epoch: int
    success: bool
    match: int
    round: int
    rejected: int
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts


@dataclass(frozen=True, slots=True)
class Forward:
    """Follower to leader: client commands to propose. Answers flow back through
    the log: the follower answers its client when it applies the entry."""

    src: int
    dst: int
    epoch: int
    commands: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """Follower to leader: confirm leadership and tell me the commit index to wait for."""

    src: int
    dst: int
    epoch: int
    ctx: int


@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    """Leader to follower: `index` (0 with ok=False: I am not the leader)."""

    src: int
    dst: int
    epoch: int
    ctx: int
    ok: bool
    index: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Leader to follower: bytes [offset, offset + len(data)) of the leader's store
    snapshot file of log index `index` (whose entry has epoch `index_epoch`);
    `done` marks the last chunk. A follower takes only the chunk at the offset it
    expects, so a transfer is a sequence the follower can check end to end."""

    src: int
    dst: int
    epoch: int
    index: int
    index_epoch: int
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotAck:
    """Follower to leader: it holds the first `offset` bytes of snapshot `index`
    (0: start over). With `done` it has installed the snapshot (file, log and
    store durable and replaced), or already held everything up to `index`."""

    src: int
    dst: int
    epoch: int
    index: int
    offset: int
    done: bool
    inc: int = 0  # the sender's incarnation: only the one its configuration names counts


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader to a caught-up voter: 'run an election now; I hand over to you' (leadership
    transfer). Peers that still hear this leader do not object to that election."""

    src: int
    dst: int
    epoch: int


Message = (
    Heartbeat
    | Election
    | Answer
    | Coordinator
    | Promise
    | Append
    | AppendAck
    | Forward
    | ReadIndexRequest
    | ReadIndexReply
    | InstallSnapshot
    | InstallSnapshotAck
    | TimeoutNow
)

PEER_MESSAGE_TYPES: tuple[type, ...] = (
    Heartbeat,
    Election,
    Answer,
    Coordinator,
    Promise,
    Append,
    AppendAck,
    Forward,
    ReadIndexRequest,
    ReadIndexReply,
    InstallSnapshot,
    InstallSnapshotAck,
    TimeoutNow,
)
