"""What a leader knows of one follower's log (etcd-raft's tracker.Progress).

`match`: highest index known to be on the follower's disk and equal to ours.
`next`: the next index to send. In probe mode one append is in flight at a
time until the follower's log position is known; in replicate mode up to
`Timing.max_inflight` appends are pipelined. In snapshot mode (`snapshot`) the
follower needs entries the leader's log no longer holds: no appends go to it
until it acknowledges the installed snapshot; `snap_index` and `snap_offset`
are how far the transfer got (0, 0 before the first ack).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    inflight: int = 0
    probing: bool = True
    last_ack_tick: int = 0
    round: int = 0  # highest read-index round this follower acknowledged in our epoch
    last_contact_tick: int = 0
    told_commit: int = 0  # the commit index the last append we sent it carried
    forwarded: int = 0  # last index of the writes it forwarded to us: it waits to apply them
    snapshot: bool = False
    snap_index: int = 0
    snap_offset: int = 0
    inc: int = 0  # the incarnation its acks carry (0: not heard yet): `match` is of that disk

    def can_send(self, max_inflight: int) -> bool:
        if self.probing:
            return self.inflight == 0
        return self.inflight < max_inflight

    def restart_probe(self) -> None:
        """Forget what is in flight and find the follower's position again."""
        self.probing = True
        self.inflight = 0
        self.next = self.match + 1
