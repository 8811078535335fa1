"""Placing one mailbox's bodies at offsets: what the final state, acknowledgements and reads say.

Invariants: a body is placed at most once; a contradiction is evidence for a check, never an exception.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from zrep.chaos.history import Op
from zrep.chaos.verify.evidence import Evidence, FirstAbove, Read
from zrep.chaos.verify.names import (
    ACKED,
    ACKS,
    DUPS,
    FAILED,
    FINAL,
    LIN,
    NO_BOUND,
    PHANTOM,
    STALE,
)


class Placement:
    """One mailbox's evidence placed: which body sits at which offset, which deletes may have
    removed it, how many offsets were assigned. The checks (zrep.chaos.verify.checks) build on it."""

    def __init__(self, ctx: Evidence, name: str, ops: list[Op], final: Sequence[tuple[int, str]] | None) -> None:
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
        self.tree = FirstAbove([NO_BOUND])  # rebuilt once m is known
        self.known_tree: FirstAbove | None = None

    def _read(self, op: Op) -> Read:
        limit = op.value.get("limit")
        bodies = list(op.result)
        return Read(op, LIN if op.f == "read" else STALE, op.value["from"], bodies, op.extras.get("offsets"),
                     limit is not None and len(bodies) >= limit, self.ctx.inv(op), self.ctx.cmp(op))

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

    def _screen(self, r: Read) -> None:
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

    def _place_given(self, r: Read) -> None:
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

    def _deletable(self, o: int, r: Read) -> bool:
        return self.del_inv.get(o, NO_BOUND) <= r.cmp

    def _infer(self, r: Read) -> None:
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

    def _infer_gap(self, r: Read, lo: int, hi: int | None, n: int) -> list[int]:
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

    def _check_order(self, r: Read) -> None:
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

    def _shape(self, r: Read) -> None:
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
