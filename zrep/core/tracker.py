"""`Tracker`: what a leader knows of its followers (etcd-raft's tracker/): one
`Progress` per peer, and the majority maths over them under the leader's
current configuration.

Invariants:
  * The leader counts itself with `stable` (its own fsynced index), never with
    what it merely appended: commit and `durable_on` speak of disks; and only
    while its configuration names it as a voter under its own incarnation.
  * A peer counts only if the configuration names it as a voter under the
    incarnation its acks carry (`Progress.inc`); acks from another incarnation
    (a wiped disk) reset what the leader knew of it.
  * A member with no progress (not a leader, or a peer never heard) counts as 0.
  * Progress is kept for every member of the configuration (voters and
    learners, which are replicated to but never counted) and for members the
    latest configuration removed, until they hold the removal and know it
    committed (`linger`): that is how a removed node learns it.
  * Empty outside leadership: `reset` on stepping down, `start` on winning.
"""

from __future__ import annotations

from collections.abc import ItemsView

from zrep.core.membership import Config
from zrep.core.progress import Progress
from zrep.core.quorum import quorum_index


class Tracker:
    def __init__(self, node_id: int, incarnation: int, config: Config, any_incarnation: bool = False) -> None:
        self.id = node_id
        self.any_inc = any_incarnation  # planted bug count_any_incarnation
        self.inc = incarnation
        self.config = config
        self.progress: dict[int, Progress] = {}
        self.self_counts = config.counts(node_id, incarnation)
        self.linger: dict[int, int] = {}  # removed peer -> index of the configuration that removed it

    def start(self, next_index: int, now: int, incarnations: dict[int, int] | None = None) -> None:
        """A new leadership: every member probed from `next_index`, under the incarnation its
        last message carried (its promise, its heartbeat): nothing is known of its log yet."""
        incs = incarnations or {}
        self.linger = {}
        self.progress = {p: Progress(next=next_index, last_ack_tick=now, last_contact_tick=now, inc=incs.get(p, 0))
                         for p in self.config.ids if p != self.id}

    def reset(self) -> None:
        self.progress = {}
        self.linger = {}

    def set_config(self, config: Config, index: int, next_index: int, now: int, leading: bool,
                   bugs: frozenset[str] = frozenset()) -> None:
        """Count by `config` from now on (the latest in the log, at `index`). A leader
        starts probing new members and keeps removed ones until they learned it."""
        self.config = config
        # Planted bug: a leader its configuration removed still counts its own disk.
        self.self_counts = config.counts(self.id, self.inc) or ("removed_leader_counts_self" in bugs and leading)
        if not leading:
            return
        for p in config.ids:
            if p != self.id and (p not in self.progress or p in self.linger):
                # New, or added back after a removal: nothing known of its disk (the removed
                # incarnation's progress must not be what a promotion pins).
                self.progress[p] = Progress(next=next_index, last_ack_tick=now, last_contact_tick=now)
            self.linger.pop(p, None)
        for p in list(self.progress):
            if config.member(p) is None and p not in self.linger:
                self.linger[p] = index

    def prune(self, commit: int) -> list[int]:
        """Drop removed peers that hold their removal and were told it committed; returns them."""
        gone = [p for p, at in self.linger.items()
                if commit >= at and self.progress[p].match >= at and self.progress[p].told_commit >= at]
        for p in gone:
            del self.linger[p], self.progress[p]
        return gone

    def __getitem__(self, peer: int) -> Progress:
        return self.progress[peer]

    def get(self, peer: int) -> Progress | None:
        return self.progress.get(peer)

    def items(self) -> ItemsView[int, Progress]:
        return self.progress.items()

    def contact(self, peer: int, now: int) -> None:
        pr = self.progress.get(peer)
        if pr is not None:
            pr.last_contact_tick = now

    def counts(self, peer: int, inc: int) -> bool:
        """Whether (peer, inc) is a voter of the configuration in force (with the planted bug: any incarnation)."""
        if self.any_inc:
            m = self.config.member(peer)
            return m is not None and m.voter
        return self.config.counts(peer, inc)

    def _counting(self) -> list[Progress]:
        counts = self.counts
        return [pr for p, pr in self.progress.items() if counts(p, pr.inc)]

    def committed(self, stable: int) -> int:
        """The highest index on the disks of a quorum (ours counted at `stable`)."""
        values = [pr.match for pr in self._counting()]
        if self.self_counts:
            values.append(stable)
        return self._quorum_value(values)

    def confirmed_round(self, own_round: int) -> int:
        """The highest read-index round a quorum (ourselves included) acknowledged."""
        values = [pr.round for pr in self._counting()]
        if self.self_counts:
            values.append(own_round)
        return self._quorum_value(values)

    def _quorum_value(self, values: list[int]) -> int:
        need = self.config.quorum()
        if need == 0:
            return 0
        # quorum_index takes a majority of its `voters`; pass the size whose majority is `need`.
        return quorum_index(values, 2 * need - 1)

    def heard_within(self, now: int, window: int) -> int:
        """Counting voters heard from in the last `window` ticks, ourselves included (check-quorum)."""
        heard = sum(1 for pr in self._counting() if now - pr.last_contact_tick < window)
        return heard + (1 if self.self_counts else 0)

    def durable_on(self, index: int, stable: int) -> tuple[int, ...]:
        """The counting voters known to hold `index` on disk, in id order."""
        have = [self.id] if self.self_counts and stable >= index else []
        counts = self.counts
        have += [p for p, pr in self.progress.items() if pr.match >= index and counts(p, pr.inc)]
        return tuple(sorted(have))
