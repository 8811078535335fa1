"""`zrep verify`: prove from a recorded chaos history that nothing was lost.

Job: given the ops of a history (zrep.chaos.history) and, optionally, the final
state read from the converged cluster ({mailbox: [(offset, body), ...]} of
live messages), decide whether the run kept zrep's promises, and show a few
concrete ops as evidence for every violation.

The data type. A mailbox is an append-only sequence: a send applied at the
moment the mailbox holds N offsets gets offset N (0-based, in order of
application, never reused). A delete is all-or-nothing over live offsets and
leaves holes. So a mailbox's state is (N, D): offsets [0, N) were assigned, D
of them deleted. A read from K returns the bodies of [K, N) minus D, in
offset order. Bodies are unique per run, so a body names its send.

Mailboxes are independent objects, and linearizability is local (Herlihy and
Wing): the whole history is linearizable iff each mailbox's sub-history is.
So every rule below is per mailbox.

Where offsets come from. Every body is placed at an offset by, in this order
of authority: the final state, the send's acknowledgement, a read's
"offsets" extra, and inference from reads (a message of unknown offset
between two known ones takes the only free offset that nothing could have
deleted; see `_infer_gap`). Offsets below the highest one known to exist (M)
were all assigned; those with no known body ("anonymous") were filled by
sends of unknown outcome (or acknowledged sends that are not where they
should be).

Which delete removed an offset (its deleter): the acknowledged delete that
names it, else the only other non-failed delete that names it, else unknown
(ambiguous). An `info` delete naming an offset that an acknowledged delete
removed, or that is live in the final state, cannot have applied before the
end (all or nothing; deletes are forever): it explains nothing.

Checks (each a CheckResult):
  (a) acknowledged_sends_durable: every `ok` send is in the final state at its
      acknowledged offset, once, unless a delete (acknowledged or of unknown
      outcome: it may have applied) names that offset. Needs the final state.
  (b) no_duplicates: no body twice in one read, twice in the final state or in
      two mailboxes.
  (c) failed_sends_absent: no `fail`ed send's body in any read or the final state.
  (d) linearizable: the `read`s, with the sends and deletes, admit one total
      order consistent with real time. Rules below.
  stale_reads_valid: each `stale_read` returns a state that existed: bodies
      in offset order, every skipped offset removable by a delete invoked
      before the read completed, no send invoked after it completed, no
      delete half applied, no body that was rolled back. No real-time order.
  no_phantom_messages: every body seen was sent, to that mailbox; the
      anonymous offsets are no more than the sends that could fill them.
  acknowledgements_consistent: one send acknowledged per offset and per log
      index, offset order = log index order in a mailbox, a delete
      acknowledges what it was asked, no offset acknowledged deleted twice.
  final_state_consistent: the final state is a valid state: every offset
      below M not live was named by a delete that can have applied, and no
      acknowledged delete's offset is live. Needs the final state.

(d) in detail. Each op gets a linearization point in [invoke, complete]
(complete = +inf for info; points may share an instant, so ops with equal
timestamps count as concurrent). A linearization exists iff the points can be
chosen so that these precedence constraints hold (each is forced by the data
type in EVERY valid linearization, so violating them is a proof):
  1. send(o) before send(o+1) for o < M: offsets follow application order.
  2. A read that returned offset o (n_lo = highest offset returned + 1) comes
     after send(n_lo - 1): it saw N >= n_lo.
  3. A read that did not return offset h >= max(n_lo, K), where no delete
     naming h was invoked before the read completed, comes before send(h):
     h can be neither live nor deleted at the read, so N <= h. (h is the first
     such offset; later ones follow by rule 1.) If the read ends with messages
     of unknown offset, h is the first such offset of known body after the
     last known one (the tail may sit on any free offset), and the tail must
     fit in the free offsets below h.
  4. A delete comes after the send of its highest offset: it needs all live.
  5. A read that skipped offset o in [K, n_lo) saw it deleted: o must be named
     by a delete invoked before the read completed (else: violation at once),
     and the deleter, when known, comes before the read.
  6. A read that returned offset o comes before o's deleter, when known.
  These give a graph; every node has a window [invoke, complete] (sends of
  anonymous offsets: after the k-th earliest invoke among the sends that can
  fill the k-th anonymous offset). Earliest-point propagation in topological
  order (time, then a step count for same-instant order) decides it: the
  constraints are feasible iff the graph is acyclic and no op's earliest
  point passes its completion. A violation is shown as the path of
  constraints from the op whose invoke forces the point to the op that had
  completed before it.
  From these follow the rules asked for: a read misses no send acknowledged
  before it began (3, 1) unless deleted before it (5); it sees no send invoked
  after it completed (2, 1); it reflects every delete acknowledged before it
  began (6) and none invoked after it completed (5); reads never go back in
  real time, for sends (2 then 1 then 3) and for deletes (5, 6); a read
  seeing offset o implies every lower offset's send was invoked before the
  read completed (1, 2). Also checked for reads: bodies in offset order from
  K, consistent with the offsets known from elsewhere; a body absent from
  the final state must have been removed by a delete that can be ordered
  after the read (else the read saw a write that was rolled back or lost).
  Sound: every constraint is necessary, so a valid history is never rejected.
  Complete (every non-linearizable history rejected) when every offset's
  body is known (acknowledged, final, or reads record "offsets"), every
  deleted offset has a known deleter, and no read may end in deleted
  offsets: then a point assignment meeting rules 1-6 replays, in point
  order, to exactly the recorded results. What is NOT checked beyond that:
  ordering through ambiguous deleters (several `info` deletes naming one
  offset, none acknowledged) beyond rule 5's existence test; a read's exact
  N when it may end in deleted offsets (only n_lo <= N <= h is used); the
  hole pattern of a read's tail of unknown offsets; the upper bound of a
  read truncated by its limit; which unknown-outcome send filled which
  anonymous offset (only the k-th-invoke bound); information in failed
  deletes. Without recorded read offsets, a message of unknown offset the
  final state lacks may be explained by any delete that hit a free offset
  of its gap.
  Cost: edges that real time already implies are left out (a deleter that
  completed before a read began, or was already ordered before a read that
  completed before this one began; a delete invoked after a read
  completed), and skipped ranges are handled as ranges (a max segment tree
  and a next-pointer union-find), so the work is O(B + n log n) for n ops
  and B bodies returned by reads, plus, for reads without recorded offsets
  that return messages of unknown offset, the width of the offset gap
  around them.

The final state must be read after every op of the history ended: only
effects of ops of unknown outcome may come after it.

Must not import zmq or any part of the node, client or transport: it reads
files and data only.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zrep.chaos.history import HistoryError, Op

ACKED = "acknowledged_sends_durable"
DUPS = "no_duplicates"
FAILED = "failed_sends_absent"
LIN = "linearizable"
STALE = "stale_reads_valid"
PHANTOM = "no_phantom_messages"
ACKS = "acknowledgements_consistent"
FINAL = "final_state_consistent"

CHECKS: dict[str, str] = {
    ACKED: "(a) every acknowledged send is in the final state once, at its acknowledged offset, "
           "unless a delete removed it",
    DUPS: "(b) no body appears twice: in one read, in the final state, or in two mailboxes",
    FAILED: "(c) no failed send appears in any read or in the final state",
    LIN: "(d) linearizable reads, sends and deletes admit one order consistent with real time",
    STALE: "stale reads return states that existed (offset order, holes deleted, nothing rolled back)",
    PHANTOM: "every message seen was sent, to that mailbox; no offset without a possible send",
    ACKS: "acknowledgements agree: one send per offset and log index, log order = offset order, "
          "no offset deleted twice",
    FINAL: "the final state is a valid state: every hole deleted, acknowledged deletes hold",
}
NEEDS_FINAL = frozenset({ACKED, FINAL})
EVIDENCE_LIMIT = 8  # examples kept per check; the count covers them all
NO_BOUND = sys.maxsize  # a rank above every real time rank
Final = Mapping[str, Sequence[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    evidence: list[str]
    description: str = ""
    violations: int = 0
    skipped: bool = False  # needed the final state, which was not given


@dataclass
class Report:
    checks: list[CheckResult]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    def format(self) -> str:
        out: list[str] = []
        for c in self.checks:
            tag = "SKIP" if c.skipped else "PASS" if c.passed else "FAIL"
            head = f"{tag} {c.name}: {c.description}"
            out.append(head if c.passed else f"{head} ({c.violations} violation{'s' * (c.violations != 1)})")
            out.extend(f"    - {e}" for e in c.evidence)
            if c.violations > len(c.evidence):
                out.append(f"    ... and {c.violations - len(c.evidence)} more")
        s = self.stats
        out.append(f"{'OK' if self.ok else 'VIOLATIONS FOUND'}: {s.get('ops', 0)} ops in "
                   f"{s.get('mailboxes', 0)} mailboxes checked in {s.get('seconds', 0):.2f}s")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [
            {"name": c.name, "passed": c.passed, "skipped": c.skipped, "violations": c.violations,
             "description": c.description, "evidence": c.evidence} for c in self.checks],
            "stats": self.stats}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


# --- shared context: time ranks, evidence, descriptions ---------------------------------------


class _Ctx:
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


class _FirstAbove:
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


def _find(parent: list[int], x: int) -> int:
    """Next active offset >= x (union-find 'next pointer', path compressed)."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


# --- reads -------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Read:
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


# --- one mailbox -------------------------------------------------------------------------------


class _Box:
    """One mailbox's checks; `run` goes through them in dependency order (see the module docstring)."""

    def __init__(self, ctx: _Ctx, name: str, ops: list[Op], final: Sequence[tuple[int, str]] | None) -> None:
        self.ctx, self.name, self.final = ctx, name, final
        self.sends = [op for op in ops if op.f == "send"]
        self.good = {op.value for op in self.sends if op.type != "fail"}  # may appear here
        self.deletes = [op for op in ops if op.f == "delete" and op.type != "fail"]
        self.reads = [self._read(op) for op in ops if op.f in ("read", "stale_read") and op.type == "ok"]
        self.at: dict[int, str] = {}  # offset -> body, as far as known
        self.where: dict[str, int] = {}  # body -> offset
        self.source: dict[str, str] = {}  # body -> what placed it
        self.final_live: dict[int, str] | None = None
        self.cand: dict[int, list[Op]] = defaultdict(list)  # offset -> deletes that may have removed it
        self.deleter: dict[int, Op] = {}
        self.del_inv: dict[int, int] = {}  # offset -> earliest invoke rank of a delete naming it
        self.m = 0  # offsets [0, m) are known to have been assigned
        self.known: list[int] = []  # offsets of known body, sorted (only when a read needs it)
        self.anon: list[int] = []  # offsets below m of unknown body
        self.fillers: list[int] = []  # invoke ranks of the sends that can have filled them, ascending
        self.tree = _FirstAbove([NO_BOUND])  # rebuilt once m is known
        self.known_tree: _FirstAbove | None = None

    def _read(self, op: Op) -> _Read:
        limit = op.value.get("limit")
        bodies = list(op.result)
        return _Read(op, LIN if op.f == "read" else STALE, op.value["from"], bodies, op.extras.get("offsets"),
                     limit is not None and len(bodies) >= limit, self.ctx.inv(op), self.ctx.cmp(op))

    def run(self) -> None:
        self._load_final()
        self._index_deletes()
        self._check_acks()
        self._place_reads()
        self._size()
        self.tree, self.known_tree = self._trees()
        if self.final_live is not None:
            self._check_final()
            self._check_rollbacks()
        self._check_linearizable()
        self._check_stale()

    # -- placing bodies at offsets --

    def _claim(self, body: str, offset: int, source: str) -> None:
        self.at[offset] = body
        self.where[body] = offset
        self.source[body] = source

    def _sane(self, body: str, place: Callable[[], str]) -> None:
        """Report a body nobody sent, sent elsewhere, or sent by a failed send. `place` names where it was seen."""
        op = self.ctx.sends.get(body)
        if op is not None and op.key == self.name and op.type != "fail":
            return  # the common case: no description built
        if op is None:
            self.ctx.add(PHANTOM, f"{body!r} in {place()} was never sent")
            return
        if op.key != self.name:
            self.ctx.add(PHANTOM, f"{body!r} in {place()} was sent to another mailbox: {self.ctx.op(op)}")
        if op.type == "fail":
            self.ctx.add(FAILED, f"{body!r}, whose send failed, is in {place()}: {self.ctx.op(op)}")

    def _load_final(self) -> None:
        if self.final is None:
            return
        live: dict[int, str] = {}
        for off, body in sorted(self.final, key=lambda pair: pair[0]):
            if off in live:
                self.ctx.add(FINAL, f"the final state of {self.name!r} lists offset {off} twice "
                             f"({live[off]!r} and {body!r})")
                continue
            live[off] = body
            self.at[off] = body
            self._sane(body, lambda: f"the final state of {self.name!r} at offset {off}")
            other = self.ctx.final_box.setdefault(body, self.name)
            if other != self.name:
                self.ctx.add(DUPS, f"{body!r} is in the final state of both {other!r} and {self.name!r}")
            if body in self.where:
                self.ctx.add(DUPS, f"{body!r} is in the final state of {self.name!r} twice, at offsets "
                             f"{self.where[body]} and {off}")
                continue
            self.where[body] = off
            self.source[body] = "the final state"
        self.final_live = live

    def _index_deletes(self) -> None:
        ok_del: dict[int, Op] = {}
        final_live = self.final_live or {}
        for d in sorted((d for d in self.deletes if d.type == "ok"), key=lambda d: d.invoke_time):
            if d.result is not None and sorted(d.result) != sorted(d.value):
                self.ctx.add(ACKS, f"a delete acknowledged offsets {sorted(d.result)}, not those asked: {self.ctx.op(d)}")
            for o in d.value:
                first = ok_del.setdefault(o, d)
                if first is not d:
                    self.ctx.add(ACKS, f"offset {o} of {self.name!r} acknowledged deleted twice: "
                                 f"{self.ctx.op(first)} and {self.ctx.op(d)}")
        for d in self.deletes:
            # An info delete naming an offset an acknowledged delete removed failed, all or nothing;
            # one naming an offset live at the end had not applied by then (deletes are forever).
            if d.type == "info" and any(o in ok_del or o in final_live for o in d.value):
                continue
            for o in d.value:
                self.cand[o].append(d)
        for o, ds in self.cand.items():
            self.del_inv[o] = min(self.ctx.inv(d) for d in ds)
            if o in ok_del:
                self.deleter[o] = ok_del[o]
            elif len(ds) == 1:
                self.deleter[o] = ds[0]

    def _check_acks(self) -> None:
        ctx = self.ctx
        acked = sorted((op for op in self.sends if op.type == "ok"), key=lambda op: op.extras["offset"])
        by_offset: dict[int, Op] = {}
        for op in acked:
            o = op.extras["offset"]
            first = by_offset.setdefault(o, op)
            if first is not op:
                ctx.add(ACKS, f"two sends acknowledged at offset {o} of {self.name!r}: {ctx.op(first)} and {ctx.op(op)}")
            other = ctx.log_index.setdefault(op.extras["index"], op)
            if other is not op:
                ctx.add(ACKS, f"two sends acknowledged at log index {op.extras['index']}: "
                        f"{ctx.op(other)} and {ctx.op(op)}")
        for a, b in zip(acked, acked[1:]):
            if a.extras["offset"] < b.extras["offset"] and a.extras["index"] >= b.extras["index"]:
                ctx.add(ACKS, f"offset order contradicts log order: {ctx.op(a)} at index {a.extras['index']}, "
                        f"{ctx.op(b)} at index {b.extras['index']}")
        if self.final_live is not None:
            for op in acked:
                self._durable(op)
        for op in acked:
            if op.value not in self.where and op.extras["offset"] not in self.at:
                self._claim(op.value, op.extras["offset"], "its acknowledgement")

    def _durable(self, op: Op) -> None:
        assert self.final_live is not None
        o, fo = op.extras["offset"], self.where.get(op.value)  # `where` holds the final state only here
        if fo == o:
            return
        if fo is not None:
            self.ctx.add(ACKED, f"{self.ctx.op(op)} is at offset {fo} in the final state, not at its acknowledged {o}")
        elif o in self.final_live:
            self.ctx.add(ACKED, f"{self.ctx.op(op)} is missing from the final state; its offset {o} holds "
                         f"{self.final_live[o]!r}")
        elif not self.cand.get(o):
            self.ctx.add(ACKED, f"{self.ctx.op(op)} is missing from the final state and no delete of offset {o} "
                         "can have applied")

    def _place_reads(self) -> None:
        for r in self.reads:
            self._screen(r)
        for r in self.reads:
            if r.given is not None and not r.broken:
                self._place_given(r)
        for r in self.reads:
            if r.given is None and not r.broken:
                self._infer(r)
        for r in self.reads:
            if r.given is None and not r.broken:
                r.offs = [self.where.get(b) for b in r.bodies]
                self._check_order(r)
            if not r.broken:
                self._shape(r)

    def _screen(self, r: _Read) -> None:
        ctx = self.ctx
        if len(set(r.bodies)) < len(r.bodies):
            twice = next(b for b, n in Counter(r.bodies).items() if n > 1)
            ctx.add(DUPS, f"{ctx.op(r.op)} returned {twice!r} twice")
            r.broken = True
        if not self.good.issuperset(r.bodies):  # set work in C: reads can be long
            for b in r.bodies:
                self._sane(b, lambda: f"the result of {ctx.op(r.op)}")
        limit = r.op.value.get("limit")
        if limit is not None and len(r.bodies) > limit:
            ctx.add(r.check, f"{ctx.op(r.op)} returned more than its limit of {limit}")
        g = r.given
        if g is not None and g and (g[0] < r.k or any(a >= b for a, b in zip(g, g[1:]))):
            ctx.add(r.check, f"{ctx.op(r.op)} returned offsets {g} that do not ascend from {r.k}")
            r.broken = True

    def _place_given(self, r: _Read) -> None:
        assert r.given is not None
        for b, o in zip(r.bodies, r.given):
            known, there = self.where.get(b), self.at.get(o)
            if known is not None and known != o:
                self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {b!r} at offset {o}, but "
                             f"{self.source[b]} puts it at offset {known}")
                r.broken = True
            elif there is not None and there != b:
                self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {b!r} at offset {o}, which holds {there!r}")
                r.broken = True
            elif known is None:
                self._claim(b, o, f"the offsets of {self.ctx.op(r.op)}")
        r.offs = list(r.given)

    def _deletable(self, o: int, r: _Read) -> bool:
        return self.del_inv.get(o, NO_BOUND) <= r.cmp

    def _infer(self, r: _Read) -> None:
        """Place the read's bodies of unknown offset where that is forced."""
        offs = [self.where.get(b) for b in r.bodies]
        known = [o for o in offs if o is not None]
        if known and (known[0] < r.k or any(a >= b for a, b in zip(known, known[1:]))):
            return  # out of order: `_check_order` reports it
        lo, ghosts = r.k - 1, []
        for b, o in zip(r.bodies + [None], offs + [None]):  # a sentinel closes the tail gap
            if b is not None and o is None:
                ghosts.append(b)
                continue
            if ghosts:
                placed = self._infer_gap(r, lo, o, len(ghosts))
                for g, p in zip(ghosts, placed):
                    self._claim(g, p, f"its place in {self.ctx.op(r.op)}")
            if o is not None:
                lo, ghosts = o, []

    def _infer_gap(self, r: _Read, lo: int, hi: int | None, n: int) -> list[int]:
        """Offsets forced for the n messages of unknown offset a read returned between lo and hi."""
        if hi is not None:
            free = [o for o in range(lo + 1, hi) if o not in self.at]
            fixed = [o for o in free if not self._deletable(o, r)]  # neither deleted nor unsent: returned
            if len(free) < n or len(fixed) > n:
                self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {n} message(s) of unknown offset between "
                             f"offsets {lo} and {hi}, where {len(free)} offset(s) are free and {len(fixed)} of "
                             "them could not have been deleted before the read completed")
                r.broken = True
                return []
            if len(fixed) == n:
                return fixed
            if len(free) == n:
                return free
        # From the left: the first free offset, if nothing could delete it, is the next message's.
        out, o = [], lo + 1
        for _ in range(n):
            while o in self.at:
                o += 1
            if (hi is not None and o >= hi) or self._deletable(o, r):
                break
            out.append(o)
            o += 1
        return out

    def _check_order(self, r: _Read) -> None:
        prev, prev_body = r.k - 1, None
        for b, o in zip(r.bodies, r.offs):
            if o is None:
                continue
            if o <= prev:
                if prev_body is None:
                    what = f"{b!r} at offset {o}, below its start {r.k}"
                else:
                    what = f"{b!r} (offset {o}, per {self.source[b]}) after {prev_body!r} (offset {prev})"
                self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {what}")
                r.broken = True
                return
            prev, prev_body = o, b

    def _shape(self, r: _Read) -> None:
        """The read's observed state: n_lo, live offsets, and the ranges it saw deleted."""
        prev, pending, gaps = r.k - 1, 0, []
        for o in r.offs:
            if o is None:
                pending += 1
                continue
            if pending:
                gaps.append((prev, o))
            elif prev + 1 < o:
                r.runs.append((prev + 1, o))
            r.live.append(o)
            prev, pending = o, 0
        r.tail_unknown = pending > 0
        r.tail_from = prev + 1
        r.n_lo = prev + 1 + pending if r.offs else 0
        r.gap_holes = [p for lo, hi in gaps for p in range(lo + 1, hi) if p in self.at]

    def _size(self) -> None:
        tops = [max(self.at, default=-1)]
        tops += [o for o, ds in self.cand.items() if any(d.type == "ok" for d in ds)]
        tops += [r.n_lo - 1 for r in self.reads if not r.broken]
        self.m = max(tops) + 1
        # Every offset below m took a send; far more offsets than sends is a phantom (and must
        # not make the checker build arrays of that size): report it and go on below the bound.
        bound = len(self.sends) + len(self.at)
        if self.m > bound:
            self.ctx.add(PHANTOM, f"{self.name!r}: offset {self.m - 1} is known to exist, but only "
                         f"{len(self.sends)} sends were made to it")
            self.m = bound
            for r in self.reads:
                r.broken = r.broken or r.n_lo > bound
        self.anon = [o for o in range(self.m) if o not in self.at]
        # Who can fill an offset of unknown body: a send of unknown outcome not seen elsewhere,
        # or an acknowledged send not at its place.
        self.fillers = sorted(self.ctx.inv(op) for op in self.sends
                              if op.type != "fail" and op.value not in self.where)
        if len(self.anon) > len(self.fillers):
            shown = ", ".join(map(str, self.anon[:6])) + (", ..." if len(self.anon) > 6 else "")
            self.ctx.add(PHANTOM, f"{self.name!r}: offsets below {self.m} were all assigned, but {len(self.anon)} "
                         f"of them hold messages of unknown body ({shown}) and only {len(self.fillers)} sends "
                         "of this mailbox could have put them there")

    # -- final state --

    def _check_final(self) -> None:
        ctx, live = self.ctx, self.final_live
        assert live is not None
        for o in range(self.m):
            if o in live or self.cand.get(o):
                continue
            body = self.at.get(o)
            op = ctx.sends.get(body) if body is not None else None
            if op is not None and op.type == "ok" and op.extras["offset"] == o:
                continue  # (a) reports it
            what = f"{body!r}" if body is not None else "a message"
            ctx.add(FINAL, f"offset {o} of {self.name!r} held {what} (offsets up to {self.m - 1} exist) but is "
                    "missing from the final state, and no delete of it can have applied")
        for d in self.deletes:
            alive = [o for o in d.value if o in live]
            if alive and d.type == "ok":
                ctx.add(FINAL, f"{ctx.op(d)} was acknowledged, yet offsets {alive} are live in the final state")

    def _check_rollbacks(self) -> None:
        """A body a read returned and the final state lacks needs a delete orderable after the read."""
        assert self.final_live is not None
        in_final = set(self.final_live.values())
        keys = sorted(self.cand)
        for r in self.reads:
            if r.broken or in_final.issuperset(r.bodies):
                continue
            for i, (b, o) in enumerate(zip(r.bodies, r.offs)):
                if b in in_final:
                    continue
                if o is not None:
                    places: Iterable[int] = (o,)
                else:  # unknown offset: any free offset of its gap
                    lo = max((p for p in r.offs[:i] if p is not None), default=r.k - 1)
                    hi = next((p for p in r.offs[i + 1:] if p is not None), None)
                    end = len(keys) if hi is None else bisect_left(keys, hi)
                    places = (p for p in keys[bisect_right(keys, lo):end] if p not in self.at)
                if not self._removable_after(r, places):
                    where = "" if o is None else f" (offset {o})"
                    self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {b!r}{where}, which is not in the final "
                                 "state and no delete could have removed it after the read: a lost or rolled-back write")

    def _removable_after(self, r: _Read, places: Iterable[int]) -> bool:
        for p in places:
            for d in self.cand.get(p, ()):
                # A stale read shows some past state: any delete may come after it.
                if r.check == STALE or self.ctx.cmp(d) >= r.inv:
                    return True
        return False

    # -- holes seen by reads --

    def _check_holes(self, r: _Read, tree: _FirstAbove) -> None:
        """Every offset a read skipped below n_lo must be named by a delete invoked before it completed."""
        for a, b in r.runs:
            j = tree.first(a, r.cmp)
            if j < b:
                self._report_hole(r, j, b)
        for p in r.gap_holes:
            if self.del_inv.get(p, NO_BOUND) > r.cmp:
                self._report_hole(r, p, None)

    def _report_hole(self, r: _Read, o: int, after: int | None) -> None:
        body = self.at.get(o)
        what = f"offset {o} ({body!r})" if body is not None else f"offset {o}"
        later = f" though it returned offset {after}" if after is not None else ""
        self.ctx.add(r.check, f"{self.ctx.op(r.op)} skipped {what}{later}, and no delete of it was invoked "
                     "before the read completed")

    def _bound(self, r: _Read, tree: _FirstAbove, known_tree: _FirstAbove | None) -> None:
        """Rule 3: the first offset h the read cannot have seen deleted nor returned, so N <= h.

        With a tail of messages of unknown offset, only offsets of known body
        qualify (the tail may sit on any free one), and the tail must fit below h.
        """
        start = r.tail_from if r.tail_unknown else max(r.n_lo, r.k)
        if r.truncated or start >= self.m:
            return
        if not r.tail_unknown:
            h = tree.first(start, r.cmp)
        else:
            assert known_tree is not None
            h = known_tree.first(start, r.cmp)
            free = h - start - (bisect_left(self.known, h) - bisect_left(self.known, start))
            tail = r.n_lo - start
            if h < self.m and free < tail:
                self.ctx.add(r.check, f"{self.ctx.op(r.op)} returned {tail} message(s) of unknown offset after "
                             f"offset {r.tail_from - 1}, but only {free} offset(s) are free below offset {h}, "
                             "which it neither returned nor could have seen deleted")
        r.h = h if h < self.m else None

    def _trees(self) -> tuple[_FirstAbove, _FirstAbove | None]:
        """Lookups over offsets [0, m): the first not deletable before a time, and the same among known bodies."""
        dels = [self.del_inv.get(o, NO_BOUND) for o in range(self.m)]
        tree = _FirstAbove(dels + [NO_BOUND])
        if not any(r.tail_unknown for r in self.reads):
            return tree, None
        self.known = sorted(self.at)
        return tree, _FirstAbove([v if o in self.at else -1 for o, v in enumerate(dels)] + [NO_BOUND])

    # -- (d) linearizability --

    def _check_linearizable(self) -> None:
        reads = [r for r in self.reads if r.check == LIN and not r.broken]
        for r in reads:
            self._check_holes(r, self.tree)
            self._bound(r, self.tree, self.known_tree)
        _Graph(self, reads).solve()

    # -- stale reads --

    def _check_stale(self) -> None:
        reads = [r for r in self.reads if r.check == STALE and not r.broken]
        if not reads:
            return
        sent = {op.value: self.ctx.inv(op) for op in self.sends}
        for r in reads:
            self._check_holes(r, self.tree)
            self._bound(r, self.tree, self.known_tree)  # only for its check that a tail fits
            late = next((b for b in r.bodies if sent.get(b, -1) > r.cmp), None)
            if late is not None:
                self.ctx.add(STALE, f"{self.ctx.op(r.op)} returned {late!r}, sent only after the read completed: "
                             f"{self.ctx.op(self.ctx.sends[late])}")
            self._check_atomic(r)

    def _check_atomic(self, r: _Read) -> None:
        """No delete both applied (a skipped offset it alone removes) and not (a returned offset it removes)."""
        starts = [a for a, _ in r.runs]
        holes = set(r.gap_holes)

        def skipped(p: int) -> bool:
            i = bisect_right(starts, p) - 1
            return p in holes or (i >= 0 and r.runs[i][0] <= p < r.runs[i][1])

        for o in r.live:
            d = self.deleter.get(o)
            if d is None:
                continue
            half = next((p for p in d.value if p != o and self.deleter.get(p) is d and skipped(p)), None)
            if half is not None:
                self.ctx.add(STALE, f"{self.ctx.op(r.op)} shows {self.ctx.op(d)} half applied: offset {half} "
                             f"deleted, offset {o} live")
                return


class _Graph:
    """The precedence graph of one mailbox (rules 1-6 of the module docstring) and its propagation."""

    def __init__(self, box: _Box, reads: list[_Read]) -> None:
        self.box, self.ctx, self.reads = box, box.ctx, reads
        m = box.m
        self.lo: list[int] = []
        self.hi: list[int | None] = []
        self.what: list[Any] = []  # ("send", offset) | ("read", _Read) | ("delete", Op)
        self.succ: list[list[int]] = []
        self.why: dict[tuple[int, int], int] = {}  # edge -> the offset that forces it
        self._sends(m)
        self.read_node = {id(r): self._node(r.inv, r.cmp, ("read", r)) for r in reads}
        self.deleter_inv = {o: self.ctx.inv(d) for o, d in box.deleter.items()}
        deleters = {id(d): d for d in box.deleter.values()}
        self.del_node = {i: self._node(self.ctx.inv(d), self.ctx.cmp(d), ("delete", d)) for i, d in deleters.items()}
        for i, d in deleters.items():
            top = max(d.value)
            if top < m:
                self._edge(top, self.del_node[i], top)  # rule 4
        for r in reads:
            self._read_edges(r)
        self._hole_edges()

    def _node(self, lo: int, hi: int, what: Any) -> int:
        self.lo.append(lo)
        self.hi.append(None if hi == NO_BOUND else hi)
        self.what.append(what)
        self.succ.append([])
        return len(self.lo) - 1

    def _edge(self, a: int, b: int, offset: int) -> None:
        self.succ[a].append(b)
        self.why[(a, b)] = offset

    def _sends(self, m: int) -> None:
        box, ctx = self.box, self.ctx
        anon = iter(box.fillers)
        for o in range(m):
            body = box.at.get(o)
            op = ctx.sends.get(body) if body is not None else None
            if body is None:
                lo, hi = next(anon, 0), NO_BOUND  # the k-th anonymous offset: after the k-th filler's invoke
            elif op is None or op.key != box.name:
                lo, hi = 0, NO_BOUND  # a phantom, reported elsewhere: no constraint of its own
            else:
                lo, hi = ctx.inv(op), (ctx.cmp(op) if op.type == "ok" else NO_BOUND)
            self._node(lo, hi, ("send", o))
            if o:
                self.succ[o - 1].append(o)  # rule 1

    def _read_edges(self, r: _Read) -> None:
        node = self.read_node[id(r)]
        if r.n_lo >= 1:
            self._edge(r.n_lo - 1, node, r.n_lo - 1)  # rule 2
        if r.h is not None:
            self._edge(node, r.h, r.h)  # rule 3
        seen: set[int] = set()
        deleter, invoked, cmp = self.box.deleter, self.deleter_inv, r.cmp
        # Rule 6, unless real time already orders them (the delete was invoked after the read).
        for o in sorted(o for o in invoked.keys() & r.live if invoked[o] <= cmp):
            d = deleter[o]
            if id(d) not in seen:
                seen.add(id(d))
                self._edge(node, self.del_node[id(d)], o)

    def _hole_edges(self) -> None:
        """Rule 5: deleter -> read for every skipped offset, skipping edges real time implies.

        Reads go in invoke order. A deleter stops mattering once the sweep passes its
        completion, or the completion of a read already given an edge from it: both
        precede every later read in real time. The still-active offsets are found
        with a next-pointer union-find, so each read costs its runs, not its holes.
        """
        box, ctx, m = self.box, self.ctx, self.box.m
        parent = [o if o in box.deleter else o + 1 for o in range(m)] + [m]
        expiry = [(ctx.cmp(d), id(d)) for d in {id(d): d for d in box.deleter.values()}.values()
                  if d.complete_time is not None]
        heapq.heapify(expiry)
        retired: set[int] = set()
        by_id = {id(d): d for d in box.deleter.values()}
        for r in sorted(self.reads, key=lambda r: r.inv):
            while expiry and expiry[0][0] < r.inv:
                did = heapq.heappop(expiry)[1]
                if did not in retired:
                    retired.add(did)
                    for o in by_id[did].value:
                        if o < m and box.deleter.get(o) is by_id[did]:
                            parent[o] = o + 1
            node, linked = self.read_node[id(r)], set()
            for a, b in r.runs:
                o = _find(parent, a)
                while o < b:
                    self._hole_edge(box.deleter[o], node, o, linked, r, expiry)
                    o = _find(parent, o + 1)
            for p in r.gap_holes:
                d = box.deleter.get(p)
                if d is not None:
                    self._hole_edge(d, node, p, linked, r, expiry)

    def _hole_edge(self, d: Op, node: int, o: int, linked: set[int], r: _Read,
                   expiry: list[tuple[int, int]]) -> None:
        if id(d) in linked:
            return
        linked.add(id(d))
        self._edge(self.del_node[id(d)], node, o)
        heapq.heappush(expiry, (r.cmp, id(d)))

    # -- propagation --

    def solve(self) -> None:
        n = len(self.lo)
        self.ctx.graph["nodes"] += n
        self.ctx.graph["edges"] += sum(map(len, self.succ))
        if not n:
            return
        scale = n + 1  # a point is time_rank * scale + steps: steps order ops within one instant
        best = [lo * scale for lo in self.lo]
        pred: list[int | None] = [None] * n
        indeg = [0] * n
        for outs in self.succ:
            for b in outs:
                indeg[b] += 1
        queue = deque(i for i in range(n) if not indeg[i])
        done, clamped = 0, set()
        while queue:
            x = queue.popleft()
            done += 1
            hi = self.hi[x]
            if hi is not None and best[x] // scale > hi:
                self._report_late(x, pred, clamped)
                # Clamp, so one violation does not flood its successors; x now starts their paths.
                best[x], pred[x] = hi * scale, None
                clamped.add(x)
            nxt = best[x] + 1
            for y in self.succ[x]:
                if nxt > best[y]:
                    best[y], pred[y] = nxt, x
                indeg[y] -= 1
                if not indeg[y]:
                    queue.append(y)
        if done < n:
            self._report_cycle([i for i in range(n) if indeg[i]])

    def _op(self, x: int) -> Op | None:
        kind, v = self.what[x]
        if kind == "send":
            body = self.box.at.get(v)
            return self.ctx.sends.get(body) if body is not None else None
        return v.op if kind == "read" else v

    def _label(self, x: int) -> str:
        op = self._op(x)
        if op is None:
            return f"(the send of unknown body at offset {self.what[x][1]})"
        return f"({self.ctx.short(op)})"

    def _ops(self, nodes: list[int]) -> str:
        """The full description of each op an explanation names, once."""
        seen: dict[int, str] = {}
        for x in nodes:
            op = self._op(x)
            if op is not None and id(op) not in seen:
                seen[id(op)] = self.ctx.op(op)
        return "; ".join(seen.values())

    def _reason(self, a: int, b: int) -> str:
        ka, kb, o = self.what[a][0], self.what[b][0], self.why.get((a, b))
        if ka == "send" and kb == "send":
            return "offset order"
        if ka == "send" and kb == "read":
            return f"the read saw offset {o}"
        if ka == "read" and kb == "send":
            return f"the read did not see offset {o}, which no delete invoked before it ended could remove"
        if ka == "send":
            return f"the delete needs offset {o}"
        if kb == "read":
            return f"the read found offset {o} deleted"
        return f"the read returned offset {o}, which the delete removes"

    def _path(self, nodes: list[int]) -> str:
        """a -> (why) -> b ..., runs of sends in offset order folded into one step."""
        parts, i = [self._label(nodes[0])], 0
        while i < len(nodes) - 1:
            j = i
            while j < len(nodes) - 1 and self.what[nodes[j]][0] == self.what[nodes[j + 1]][0] == "send":
                j += 1
            if j > i:
                parts.append(f"-(offsets {self.what[nodes[i]][1]}..{self.what[nodes[j]][1]} in order)-> "
                             f"{self._label(nodes[j])}")
                i = j
                continue
            parts.append(f"-({self._reason(nodes[i], nodes[i + 1])})-> {self._label(nodes[i + 1])}")
            i += 1
        return " ".join(parts)

    def _report_late(self, x: int, pred: list[int | None], clamped: set[int]) -> None:
        chain = [x]
        while pred[chain[-1]] is not None:
            chain.append(pred[chain[-1]])  # type: ignore[arg-type]
        chain.reverse()
        src = chain[0]
        if src in clamped:  # its own bound was already broken: reported above
            cause = f"{self._label(src)}, itself placed too late (see above)"
        else:
            cause = f"{self._label(src)}, which was invoked only after it completed"
        self.ctx.add(LIN, f"{self._label(x)} must come after {cause}: {self._path(chain)}. "
                     f"Ops: {self._ops(chain)}")

    def _report_cycle(self, left: list[int]) -> None:
        inside = set(left)
        preds: dict[int, int] = {}
        for a in left:
            for b in self.succ[a]:
                if b in inside:
                    preds.setdefault(b, a)
        x, order, seen = left[0], [], {}
        while x not in seen:  # every node left over has a predecessor left over: walk back to a repeat
            seen[x] = len(order)
            order.append(x)
            x = preds[x]
        cycle = order[seen[x]:][::-1]
        self.ctx.add(LIN, f"no order fits {self.box.name!r}, these ops must precede each other in a circle: "
                     f"{self._path(cycle + [cycle[0]])}. Ops: {self._ops(cycle)}")


# --- entry points ------------------------------------------------------------------------------


def _normalize_final(final: Final | None) -> dict[str, list[tuple[int, str]]] | None:
    if final is None:
        return None
    if not isinstance(final, Mapping):
        raise ValueError("final state must map mailbox -> [(offset, body), ...]")
    out: dict[str, list[tuple[int, str]]] = {}
    for box, pairs in final.items():
        if type(box) is not str or isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise ValueError(f"final state: {box!r} must map to a list of (offset, body) pairs")
        rows = []
        for p in pairs:
            if (not isinstance(p, Sequence) or len(p) != 2 or type(p[0]) is not int or p[0] < 0
                    or type(p[1]) is not str):
                raise ValueError(f"final state of {box!r}: {p!r} is not an (offset >= 0, body) pair")
            rows.append((p[0], p[1]))
        out[box] = rows
    return out


def load_final(path: str | Path) -> dict[str, list[tuple[int, str]]]:
    """A final-state file: {"mailbox": [[offset, body], ...], ...}; ValueError if malformed."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    out = _normalize_final(data)
    assert out is not None
    return out


def check(history_ops: Sequence[Op], final_state: Final | None = None) -> Report:
    """Check a paired history (and the converged final state, if known); see the module docstring."""
    started = time.perf_counter()
    ops = list(history_ops)
    final = _normalize_final(final_state)
    ctx = _Ctx(ops)
    by_box: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_box[op.key].append(op)
    names = sorted(set(by_box) | set(final or {}))
    for name in names:
        # A mailbox absent from a given final state holds nothing live.
        _Box(ctx, name, by_box.get(name, []), None if final is None else final.get(name, [])).run()
    checks = []
    for name, description in CHECKS.items():
        skipped = final is None and name in NEEDS_FINAL
        checks.append(CheckResult(name, ctx.count[name] == 0, ctx.evidence[name], description,
                                  ctx.count[name], skipped))
    kinds = Counter(f"{op.f}:{op.type}" for op in ops)
    stats = {"ops": len(ops), "mailboxes": len(names), "by_kind": dict(sorted(kinds.items())),
             "final_state": final is not None, "graph_nodes": ctx.graph["nodes"],
             "graph_edges": ctx.graph["edges"], "seconds": round(time.perf_counter() - started, 3)}
    return Report(checks, stats)
