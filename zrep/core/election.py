"""Who may claim, who may promise: the pure rules of the bully election.

Rank is (epoch of the last log entry, last index, node id), compared as a
tuple: the notebook's "elect the leader with the latest commit", with the
bully algorithm's greatest id as the tie-break. Rank only decides who tries
first. Safety comes from promises: a node promises at most one coordinator
per epoch, persists the promise before sending it, and never promises a
coordinator whose log is behind its own (so a leader holds every committed
entry: Raft paper section 5.4.1).
"""

from __future__ import annotations

from zrep.core.messages import HardState

Rank = tuple[int, int, int]


def rank(last_epoch: int, last_index: int, node_id: int) -> Rank:
    return (last_epoch, last_index, node_id)


def log_at_least_as_fresh(
    their_last_epoch: int, their_last_index: int, my_last_epoch: int, my_last_index: int
) -> bool:
    """Raft's up-to-date rule: compare the last entry's epoch, then the length."""
    return (their_last_epoch, their_last_index) >= (my_last_epoch, my_last_index)


def may_promise(
    hard_state: HardState,
    coordinator: int,
    epoch: int,
    their_last: tuple[int, int],
    my_last: tuple[int, int],
    *,
    ignore_log: bool = False,
) -> bool:
    """Whether this node may promise `coordinator` for `epoch`.

    A repeated Coordinator (a duplicate or a retransmission) from the node we
    already promised in this very epoch gets the same answer again.
    """
    if epoch < hard_state.epoch:
        return False
    if epoch == hard_state.epoch and hard_state.vote != coordinator:
        return False
    if ignore_log:  # test-only planted bug (c)
        return True
    return log_at_least_as_fresh(their_last[0], their_last[1], my_last[0], my_last[1])
