"""The checks over one placed mailbox: final state, rollbacks, holes, bounds, linearizability, stale reads.

Invariants: each violation is reported once, to its check, with its evidence.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from zrep.chaos.verify.evidence import FirstAbove, Read
from zrep.chaos.verify.names import FINAL, LIN, NO_BOUND, STALE
from zrep.chaos.verify.order import Precedence
from zrep.chaos.verify.placement import Placement


class MailboxChecks(Placement):
    """One mailbox's checks; `run` goes through them in dependency order (see the package docstring)."""

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

    def _removable_after(self, r: Read, places: Iterable[int]) -> bool:
        for p in places:
            for d in self.cand.get(p, ()):
                # A stale read shows some past state: any delete may come after it.
                if r.check == STALE or self.ctx.cmp(d) >= r.inv:
                    return True
        return False

    # -- holes seen by reads --

    def _check_holes(self, r: Read, tree: FirstAbove) -> None:
        """Every offset a read skipped below n_lo must be named by a delete invoked before it completed."""
        for a, b in r.runs:
            j = tree.first(a, r.cmp)
            if j < b:
                self._report_hole(r, j, b)
        for p in r.gap_holes:
            if self.del_inv.get(p, NO_BOUND) > r.cmp:
                self._report_hole(r, p, None)

    def _report_hole(self, r: Read, o: int, after: int | None) -> None:
        body = self.at.get(o)
        what = f"offset {o} ({body!r})" if body is not None else f"offset {o}"
        later = f" though it returned offset {after}" if after is not None else ""
        self.ctx.add(r.check, f"{self.ctx.op(r.op)} skipped {what}{later}, and no delete of it was invoked "
                     "before the read completed")

    def _bound(self, r: Read, tree: FirstAbove, known_tree: FirstAbove | None) -> None:
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

    def _trees(self) -> tuple[FirstAbove, FirstAbove | None]:
        """Lookups over offsets [0, m): the first not deletable before a time, and the same among known bodies."""
        dels = [self.del_inv.get(o, NO_BOUND) for o in range(self.m)]
        tree = FirstAbove(dels + [NO_BOUND])
        if not any(r.tail_unknown for r in self.reads):
            return tree, None
        self.known = sorted(self.at)
        return tree, FirstAbove([v if o in self.at else -1 for o, v in enumerate(dels)] + [NO_BOUND])

    # -- (d) linearizability --

    def _check_linearizable(self) -> None:
        reads = [r for r in self.reads if r.check == LIN and not r.broken]
        for r in reads:
            self._check_holes(r, self.tree)
            self._bound(r, self.tree, self.known_tree)
        Precedence(self, reads).solve()

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

    def _check_atomic(self, r: Read) -> None:
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
