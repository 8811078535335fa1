"""Client requests waiting for the log: writes until their entry is applied
(and, for `ack=all`, on every member's disk), reads until their read index is
applied. Pure: routes are opaque values the shell uses to reply, time is in
ticks. Shared by the real node and the simulator.

Invariants: a request is answered at most once; every request is answered
or expired by its deadline.

Cost: the node calls this every loop turn with hundreds of requests waiting,
so nothing here scans them all per turn: deadlines are scanned only once the
earliest may have passed, and confirmed reads sit in a heap by read index.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, int]  # (client id, sequence number)


@dataclass(frozen=True, slots=True)
class Done:
    """Answer `route` with `result` (an answer dict from the store or an error)."""

    route: Any
    result: dict[str, Any]


@dataclass(slots=True)
class _Write:
    route: Any
    deadline: int
    ack_all: bool
    index: int = 0
    answer: dict[str, Any] | None = None


@dataclass(slots=True)
class _Reads:
    """The reads waiting on one read index request (ctx): a node sends one per loop turn."""

    waiting: list[tuple[Any, int, Any]]  # (route, deadline, query)
    index: int | None = None


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message, **extra}


@dataclass
class Pending:
    _writes: dict[Key, list[_Write]] = field(default_factory=dict)
    _all: list[_Write] = field(default_factory=list)  # applied, waiting for every member
    _reads: dict[Hashable, _Reads] = field(default_factory=dict)
    _confirmed: list[tuple[int, int, Hashable]] = field(default_factory=list)  # heap of (index, order, ctx)
    _order: itertools.count = field(default_factory=itertools.count)  # ties: ctx values need not compare
    _earliest: float = float("inf")  # no deadline of a waiting request is below this

    def __len__(self) -> int:
        return (sum(len(v) for v in self._writes.values()) + len(self._all)
                + sum(len(r.waiting) for r in self._reads.values()))

    # ------------------------------------------------------------ writes

    def add_write(self, key: Key, route: Any, deadline: int, ack_all: bool = False) -> None:
        self._writes.setdefault(key, []).append(_Write(route, deadline, ack_all))
        self._earliest = min(self._earliest, deadline)

    def waiting(self, key: Key) -> bool:
        """Someone still waits for the entry of (client, seq) `key`."""
        return key in self._writes

    def on_applied(self, key: Key | None, index: int, answer: dict[str, Any] | None) -> list[Done]:
        """An entry was applied; answer whoever waits for its (client, seq)."""
        if key is None or answer is None:
            return []
        waiting = self._writes.pop(key, None)
        if not waiting:
            return []
        done = []
        for w in waiting:
            w.index, w.answer = index, answer
            if w.ack_all:
                self._all.append(w)
            else:
                done.append(Done(w.route, answer))
        return done

    def check_all(self, durable_on: Callable[[int], tuple[int, ...]], members: tuple[int, ...], now: int) -> list[Done]:
        """Answer `ack=all` writes once every member has them on disk, or at their
        deadline with the members that do (the write is committed either way)."""
        done, still = [], []
        for w in self._all:
            have = durable_on(w.index)
            if set(have) >= set(members) or now >= w.deadline:
                answer = dict(w.answer or {})
                answer["durable_on"] = list(have)
                answer["all_durable"] = set(have) >= set(members)
                done.append(Done(w.route, answer))
            else:
                still.append(w)
        self._all = still
        return done

    # ------------------------------------------------------------ reads

    def add_read(self, ctx: Hashable, route: Any, deadline: int, query: Any) -> None:
        """A read waiting for the read index of `ctx`; several reads may share one ctx
        (the caller's business that its index is fixed after each of them arrived)."""
        reads = self._reads.get(ctx)
        if reads is None:
            reads = self._reads[ctx] = _Reads([])
        reads.waiting.append((route, deadline, query))
        if deadline < self._earliest:
            self._earliest = deadline

    def on_read_index(self, ctx: Hashable, index: int) -> list[Done]:
        """The core confirmed (index >= 0) or failed (-1) the reads of `ctx`."""
        reads = self._reads.get(ctx)
        if reads is None:
            return []
        if index < 0:
            del self._reads[ctx]
            failed = error("NO_LEADER", "leadership changed during the read; retry")
            return [Done(route, failed) for route, _, _ in reads.waiting]
        if reads.index is None:
            reads.index = index
            heapq.heappush(self._confirmed, (index, next(self._order), ctx))
        return []

    def reads_ready(self, applied: int) -> list[tuple[Any, Any]]:
        """(route, query) of reads whose index the store has now applied."""
        ready = []
        heap = self._confirmed
        while heap and heap[0][0] <= applied:
            _, _, ctx = heapq.heappop(heap)
            reads = self._reads.pop(ctx, None)  # None: they expired meanwhile
            if reads is not None:
                ready += [(route, query) for route, _, query in reads.waiting]
        return ready

    # ------------------------------------------------------------ deadlines

    def expire(self, now: int) -> list[Done]:
        if now < self._earliest:
            return []
        timeout = error("TIMEOUT", "no answer in time; the outcome is unknown: retry with the same sequence number")
        done = []
        for key in list(self._writes):
            keep = []
            for w in self._writes[key]:
                (done.append(Done(w.route, timeout)) if now >= w.deadline else keep.append(w))
            if keep:
                self._writes[key] = keep
            else:
                del self._writes[key]
        read_timeout = error("TIMEOUT", "read not confirmed in time; retry")
        for ctx in list(self._reads):
            reads = self._reads[ctx]
            done += [Done(route, read_timeout) for route, deadline, _ in reads.waiting if now >= deadline]
            reads.waiting = [r for r in reads.waiting if now < r[1]]
            if not reads.waiting:
                del self._reads[ctx]
        deadlines = [w.deadline for ws in self._writes.values() for w in ws]
        deadlines += [deadline for r in self._reads.values() for _, deadline, _ in r.waiting]
        self._earliest = min(deadlines, default=float("inf"))
        return done
