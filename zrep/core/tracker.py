"""`Tracker`: what a leader knows of its followers (etcd-raft's tracker/): one
`Progress` per peer, and the majority maths over them.

Invariants:
  * The leader counts itself with `stable` (its own fsynced index), never with
    what it merely appended: commit and `durable_on` speak of disks.
  * A member with no progress (not a leader, or a peer never heard) counts as 0.
  * Empty outside leadership: `reset` on stepping down, `start` on winning.
"""

from __future__ import annotations

from collections.abc import ItemsView, Sequence

from zrep.core.progress import Progress
from zrep.core.quorum import quorum_index


class Tracker:
    def __init__(self, node_id: int, members: Sequence[int]) -> None:
        self.id = node_id
        self.voters = len(members)
        self.peers = tuple(m for m in members if m != node_id)
        self.progress: dict[int, Progress] = {}

    def start(self, next_index: int, now: int) -> None:
        """A new leadership: every follower probed from `next_index`."""
        self.progress = {p: Progress(next=next_index, last_ack_tick=now, last_contact_tick=now) for p in self.peers}

    def reset(self) -> None:
        self.progress = {}

    def __getitem__(self, peer: int) -> Progress:
        return self.progress[peer]

    def items(self) -> ItemsView[int, Progress]:
        return self.progress.items()

    def contact(self, peer: int, now: int) -> None:
        pr = self.progress.get(peer)
        if pr is not None:
            pr.last_contact_tick = now

    def committed(self, stable: int) -> int:
        """The highest index on the disks of a majority (ours counted at `stable`)."""
        return quorum_index([stable] + [pr.match for pr in self.progress.values()], self.voters)

    def confirmed_round(self, own_round: int) -> int:
        """The highest read-index round a majority (ourselves included) acknowledged."""
        return quorum_index([own_round] + [pr.round for pr in self.progress.values()], self.voters)

    def heard_within(self, now: int, window: int) -> int:
        """Members heard from in the last `window` ticks, ourselves included (check-quorum)."""
        return 1 + sum(1 for pr in self.progress.values() if now - pr.last_contact_tick < window)

    def durable_on(self, index: int, stable: int) -> tuple[int, ...]:
        """The members known to hold `index` on disk, in id order."""
        have = [self.id] if stable >= index else []
        have += [p for p, pr in self.progress.items() if pr.match >= index]
        return tuple(sorted(have))
