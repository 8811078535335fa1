"""The history checker (`zrep verify`, zrep.cli.verify): prove from a recorded chaos history that nothing was lost.

Modules: names (the checks), evidence (time ranks, evidence, reads), placement
(bodies at offsets), checks (the checks over a placed mailbox), order (the
precedence graph for linearizability). This package keeps the rules below,
`check`, `Report` and `CheckResult`.

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

import json
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zrep.chaos.history import Op
from zrep.chaos.verify.checks import MailboxChecks
from zrep.chaos.verify.evidence import Evidence
from zrep.chaos.verify.names import (  # noqa: F401  (the check names are part of the API)
    ACKED,
    ACKS,
    CHECKS,
    DUPS,
    EVIDENCE_LIMIT,
    FAILED,
    FINAL,
    LIN,
    NEEDS_FINAL,
    PHANTOM,
    STALE,
    Final,
)


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
    ctx = Evidence(ops)
    by_box: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_box[op.key].append(op)
    names = sorted(set(by_box) | set(final or {}))
    for name in names:
        # A mailbox absent from a given final state holds nothing live.
        MailboxChecks(ctx, name, by_box.get(name, []), None if final is None else final.get(name, [])).run()
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
