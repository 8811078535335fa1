"""Cluster membership as the core sees it: who counts, and how a configuration travels in the log.

A configuration (`Config`) is the whole member list, never a delta. It lives in
the log as an ordinary entry whose data starts with CONFIG_MARK (0xc1, a byte
msgpack never produces, so no store command and no no-op can be mistaken for
one; old logs hold none, so they read unchanged). A node uses the latest
configuration in its log, committed or not, and falls back to the one before
when a truncation removes it (the leader allows one uncommitted change at a
time, so the one before is committed). The configuration as of a snapshot's
index travels inside the snapshot (the store keeps the last one it applied).

Invariants:
  * A voter is the pair (id, incarnation): the incarnation is a random number
    a data directory gets when it is created, so it dies with the disk. Only
    a promise or an ack from the incarnation the counting node's
    configuration names counts (`counts`); a wiped node comes back under a new
    incarnation as an observer and counts for nothing until an operator
    replaces it.
  * Successive configurations differ by at most one voter (`voter_change`).
  * A provisional configuration (`provisional`: the seed list of a cluster
    being formed, or of a data directory written before configurations
    existed) knows no incarnations, so it counts any, and needs every member
    for a quorum: a node that lost its disk can then never be part of a
    quorum that forgets, as long as one member that remembers is needed too.
    The first leader replaces it with a formed configuration naming every
    member's incarnation.
Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from zrep.core.quorum import majority
from zrep.errors import DecodeError

CONFIG_MARK = b"\xc1"  # first byte of a configuration entry's data
CONFIG_VERSION = 1
ANY_INCARNATION = 0  # a provisional member: its incarnation is not known yet


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    incarnation: int = ANY_INCARNATION
    voter: bool = True
    rpc: str = ""  # addresses and keys ride along for the shell; the core never reads them
    pub: str = ""
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    cluster_id: int
    members: tuple[Member, ...]
    provisional: bool = False
    _by_id: dict[int, Member] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.members, key=lambda m: m.id))
        object.__setattr__(self, "members", ordered)
        self._by_id.update((m.id, m) for m in ordered)
        if len(self._by_id) != len(ordered):
            raise DecodeError(f"configuration names a node twice: {[m.id for m in ordered]}")

    # ------------------------------------------------------------ queries

    def member(self, node_id: int) -> Member | None:
        return self._by_id.get(node_id)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.members)

    @property
    def voters(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.members if not m.voter)

    def quorum(self) -> int:
        """How many counting voters make a quorum (all of them while provisional)."""
        n = len(self.voters)
        return n if self.provisional else majority(n)

    def counts(self, node_id: int, incarnation: int) -> bool:
        """Whether a promise or an ack from (node_id, incarnation) counts under this configuration."""
        m = self._by_id.get(node_id)
        if m is None or not m.voter:
            return False
        return self.provisional or m.incarnation == incarnation

    def is_member(self, node_id: int, incarnation: int) -> bool:
        """Named by this configuration under this incarnation (voter or learner; a learner
        added with incarnation 0 is whichever disk of that id answers)."""
        m = self._by_id.get(node_id)
        return m is not None and (self.provisional or m.incarnation in (incarnation, ANY_INCARNATION))

    def voter_keys(self) -> frozenset[tuple[int, int]]:
        return frozenset((m.id, m.incarnation) for m in self.members if m.voter)

    # ------------------------------------------------------------ changes

    def with_member(self, member: Member) -> Config:
        """This configuration with `member` added or replacing the one of its id."""
        others = tuple(m for m in self.members if m.id != member.id)
        return Config(self.cluster_id, others + (member,))

    def without(self, node_id: int) -> Config:
        return Config(self.cluster_id, tuple(m for m in self.members if m.id != node_id))


def static_config(ids: Iterable[int], cluster_id: int = 1) -> Config:
    """A formed configuration of voters that all have incarnation 0 (core tests and tools)."""
    return Config(cluster_id, tuple(Member(i, 0) for i in ids))


def provisional_config(ids: Iterable[int]) -> Config:
    """The seed list of a cluster not formed yet: every member a voter, any incarnation, all needed."""
    return Config(0, tuple(Member(i) for i in ids), provisional=True)


def voter_change(old: Config, new: Config) -> int:
    """How many voter keys (id, incarnation) one configuration has that the other has not."""
    return len(old.voter_keys() ^ new.voter_keys()) if not old.provisional else _provisional_change(old, new)


def _provisional_change(old: Config, new: Config) -> int:
    # Forming: the same ids, now with their incarnations, is no change of voters.
    return 0 if set(old.voters) == set(new.voters) else len(set(old.voters) ^ set(new.voters))


# ------------------------------------------------------------ the log entry


def is_config(data: bytes) -> bool:
    return data[:1] == CONFIG_MARK


def encode_config(config: Config) -> bytes:
    if config.provisional:
        raise ValueError("a provisional configuration never goes into the log")
    rows = [[m.id, m.incarnation, m.voter, m.rpc, m.pub, list(m.keys)] for m in config.members]
    # JSON (the core imports only the standard library): configurations are small and rare.
    return CONFIG_MARK + json.dumps([CONFIG_VERSION, config.cluster_id, rows], separators=(",", ":")).encode()


def decode_config(data: bytes) -> Config:
    """The configuration in a CONFIG entry's data; DecodeError if it is not one."""
    if not is_config(data):
        raise DecodeError("not a configuration entry")
    try:
        body: Any = json.loads(data[1:])
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DecodeError(f"configuration entry: {e}") from None
    if not (type(body) is list and len(body) == 3 and body[0] == CONFIG_VERSION and _is_id(body[1], 0)
            and type(body[2]) is list):
        raise DecodeError("configuration entry: bad header")
    members = []
    for row in body[2]:
        if not (type(row) is list and len(row) == 6 and _is_id(row[0], 1) and _is_id(row[1], 0)
                and type(row[2]) is bool and type(row[3]) is str and type(row[4]) is str
                and type(row[5]) is list and all(type(k) is str for k in row[5])):
            raise DecodeError("configuration entry: bad member")
        members.append(Member(row[0], row[1], row[2], row[3], row[4], tuple(row[5])))
    return Config(body[1], tuple(members))


def _is_id(v: Any, low: int) -> bool:
    return type(v) is int and low <= v < 2**63


def set_role(config: Config, node_id: int, voter: bool) -> Config:
    m = config.member(node_id)
    if m is None:
        raise KeyError(node_id)
    return config.with_member(replace(m, voter=voter))
