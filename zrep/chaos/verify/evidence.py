"""What the checks share: time ranks of operations, evidence per check, reads, and small index structures.

Invariants: evidence keeps at most EVIDENCE_LIMIT examples per check; the count covers them all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from zrep.chaos.history import HistoryError, Op
from zrep.chaos.verify.names import CHECKS, EVIDENCE_LIMIT, NO_BOUND

# --- shared context: time ranks, evidence, descriptions ---------------------------------------


class Evidence:
    """What all mailboxes share: the sends by body, time ranks, the findings."""

    def __init__(self, ops: list[Op]) -> None:
        # Only the order of times matters; ranks keep the propagation's numbers small.
        times = sorted({t for op in ops for t in (op.invoke_time, op.complete_time) if t is not None})
        self.rank = {t: i for i, t in enumerate(times)}
        self.origin = times[0] if times else 0
        self.evidence: dict[str, list[str]] = {name: [] for name in CHECKS}
        self.count: Counter[str] = Counter()
        self.sends: dict[str, Op] = {}
        self.final_box: dict[str, str] = {}  # body -> mailbox whose final state holds it
        self.log_index: dict[int, Op] = {}
        self.graph = Counter()  # nodes, edges: for the stats
        for op in ops:
            if op.f != "send":
                continue
            other = self.sends.setdefault(op.value, op)
            if other is not op:
                raise HistoryError(f"send bodies must be unique per run: {op.value!r} is sent at line "
                                   f"{other.invoke_line} and at line {op.invoke_line}")

    def add(self, check: str, message: str) -> None:
        self.count[check] += 1
        if len(self.evidence[check]) < EVIDENCE_LIMIT:
            self.evidence[check].append(message)

    def inv(self, op: Op) -> int:
        return self.rank[op.invoke_time]

    def cmp(self, op: Op) -> int:
        return NO_BOUND if op.complete_time is None else self.rank[op.complete_time]

    def t(self, ns: int | None) -> str:
        return "?" if ns is None else f"{(ns - self.origin) / 1e9:.6f}s"

    def op(self, op: Op) -> str:
        """One op in full: what, by whom, when (seconds since the first invoke), how it ended, where."""
        if op.f == "send":
            end = f"ok at offset {op.extras['offset']}" if op.type == "ok" else op.type
        elif op.f == "delete":
            end = op.type
        else:
            n = len(op.result) if op.type == "ok" else 0
            end = f"ok, {n} message{'s' * (n != 1)}" if op.type == "ok" else op.type
        line = f", line {op.invoke_line}" if op.invoke_line else ""
        return (f"[{self.short(op)} in {op.key!r} by process {op.process}, {self.t(op.invoke_time)} -> "
                f"{self.t(op.complete_time)}, {end}{line}]")

    def short(self, op: Op) -> str:
        """Enough to tell an op from its neighbours in one explanation."""
        if op.f == "send":
            return f"send {op.value!r}"
        if op.f == "delete":
            return f"delete {op.value}"
        lim = f" limit {op.value['limit']}" if "limit" in op.value else ""
        return f"{op.f} from {op.value['from']}{lim} at {self.t(op.invoke_time)}"


# --- small static structures -------------------------------------------------------------------


class FirstAbove:
    """first(i, x): the smallest j >= i with a[j] > x, in O(log n); a[-1] must exceed every x asked."""

    def __init__(self, a: list[int]) -> None:
        size = 1
        while size < len(a):
            size *= 2
        t = [-1] * (2 * size)
        t[size:size + len(a)] = a
        for i in range(size - 1, 0, -1):
            left, right = t[2 * i], t[2 * i + 1]
            t[i] = left if left > right else right
        self.t, self.size = t, size

    def first(self, i: int, x: int) -> int:
        t, size = self.t, self.size
        j = i + size
        if t[j] > x:
            return i
        while True:  # climb to the first right sibling whose subtree holds a value above x
            if not j & 1 and t[j + 1] > x:
                j += 1
                break
            j >>= 1
        while j < size:
            j = 2 * j if t[2 * j] > x else 2 * j + 1
        return j - size


def find_root(parent: list[int], x: int) -> int:
    """Next active offset >= x (union-find 'next pointer', path compressed)."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


# --- reads -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Read:
    op: Op
    check: str  # LIN or STALE: where its violations go
    k: int
    bodies: list[str]
    given: list[int] | None  # offsets reported by the client, if recorded
    truncated: bool  # hit its limit: only a window [K, last] was observed
    inv: int
    cmp: int
    offs: list[int | None] = field(default_factory=list)
    broken: bool = False  # already shown invalid: kept out of further reasoning
    n_lo: int = 0  # the read saw N >= n_lo
    live: list[int] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)  # [a, b): offsets seen deleted
    gap_holes: list[int] = field(default_factory=list)  # known offsets seen deleted among unknown ones
    tail_unknown: bool = False  # ends with messages of unknown offset
    tail_from: int = 0  # the offset after the last known one
    h: int | None = None  # rule 3: the read happened before send(h)
