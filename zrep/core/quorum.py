"""Pure majority maths. No state, no I/O.

A quorum is a strict majority of the voting members: any two quorums share a
member, which is what makes one leader per epoch and durable commits possible.
"""

from __future__ import annotations

from collections.abc import Iterable


def majority(voters: int) -> int:
    """Smallest number of members that forms a quorum of `voters`."""
    return voters // 2 + 1


def quorum_index(values: Iterable[int], voters: int) -> int:
    """The highest value that at least a majority of `voters` has reached.

    `values` holds one value per member that reported one; missing members
    count as 0. Used for the commit index (match indexes) and for read-index
    confirmation rounds.
    """
    ordered = sorted(values, reverse=True)
    need = majority(voters)
    if len(ordered) < need:
        return 0
    return ordered[need - 1]
