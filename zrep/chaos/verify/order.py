"""The precedence graph of one mailbox's linearizable operations: rules 1-6, solved for one order.

Invariants: an edge is added only when real time or the data forces it; a cycle or a late operation is evidence for (d).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any

from zrep.chaos.history import Op
from zrep.chaos.verify.evidence import Read, find_root

if TYPE_CHECKING:
    from zrep.chaos.verify.checks import MailboxChecks
from zrep.chaos.verify.names import LIN, NO_BOUND


class Precedence:
    """The precedence graph of one mailbox (rules 1-6 of the module docstring) and its propagation."""

    def __init__(self, box: MailboxChecks, reads: list[Read]) -> None:
        self.box, self.ctx, self.reads = box, box.ctx, reads
        m = box.m
        self.lo: list[int] = []
        self.hi: list[int | None] = []
        self.what: list[Any] = []  # ("send", offset) | ("read", Read) | ("delete", Op)
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

    def _read_edges(self, r: Read) -> None:
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
                o = find_root(parent, a)
                while o < b:
                    self._hole_edge(box.deleter[o], node, o, linked, r, expiry)
                    o = find_root(parent, o + 1)
            for p in r.gap_holes:
                d = box.deleter.get(p)
                if d is not None:
                    self._hole_edge(d, node, p, linked, r, expiry)

    def _hole_edge(self, d: Op, node: int, o: int, linked: set[int], r: Read,
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
