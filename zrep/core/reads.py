"""`ReadIndex`: the linearizable reads a replica holds until they may be answered
(etcd-raft's read_only.go). Pure state; the replica sends the messages.

Invariants:
  * A read queued on the leader gets the commit index of the confirmation round
    it joins, never an older one, and is released only once a majority
    (the leader included) acknowledged an append of that round or a later one.
  * Reads that arrive between two rounds share the next round (one round of
    appends per batch of reads, however many reads it carries).
  * A leader that steps down fails every read it holds (the client retries);
    a follower fails its forwarded reads when it starts following another leader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Waiting = tuple[int, int, int, int]  # (round, index, requester, ctx); requester 0 = this node's own


@dataclass(slots=True)
class ReadIndex:
    round: int = 0  # leader: confirmation rounds started in this replica's life
    unsent: list[tuple[int, int]] = field(default_factory=list)  # (requester, ctx) waiting for a round
    waiting: list[Waiting] = field(default_factory=list)  # in a round, waiting for its confirmation
    remote: set[int] = field(default_factory=set)  # follower: ctxs asked of the leader

    def queue(self, requester: int, ctx: int) -> None:
        """Leader: a read (ours: requester 0, or a follower's) waits for the next round."""
        self.unsent.append((requester, ctx))

    def start_round(self, commit: int) -> int:
        """Every unsent read joins a new round at index `commit`; returns the round."""
        self.round += 1
        self.waiting.extend((self.round, commit, requester, ctx) for requester, ctx in self.unsent)
        self.unsent = []
        return self.round

    def confirm(self, confirmed: int) -> list[tuple[int, int, int]]:
        """Release the reads of rounds <= `confirmed`: [(index, requester, ctx)]."""
        released, still = [], []
        for item in self.waiting:
            round_, index, requester, ctx = item
            if round_ > confirmed:
                still.append(item)
            else:
                released.append((index, requester, ctx))
        self.waiting = still
        return released

    def fail(self) -> list[tuple[int, int]]:
        """Leadership is lost: every read held as leader, as (requester, ctx)."""
        failed = [(r, c) for _, _, r, c in self.waiting] + self.unsent
        self.waiting, self.unsent = [], []
        return failed

    def ask_remote(self, ctx: int) -> None:
        self.remote.add(ctx)

    def remote_answered(self, ctx: int) -> bool:
        """The leader answered `ctx`: True if we were still waiting for it."""
        if ctx in self.remote:
            self.remote.discard(ctx)
            return True
        return False

    def fail_remote(self) -> list[int]:
        """The reads asked of a leader we no longer follow, in ctx order."""
        failed = sorted(self.remote)
        self.remote.clear()
        return failed
