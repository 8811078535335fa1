"""`send_many`: its windows of writes, their frames, and the retry of each window.

Job: pipeline many writes in ClientBatch frames, SEND_MANY_WINDOW at a time,
and retry only the ones not answered yet; a sans-I/O generator like
zrep.client._retry (it yields the same Open/Send/Wait effects).

Invariants
- The writes of one call have consecutive seqs; each keeps its (client id,
  seq, low) through every retry, so the store applies it at most once.
- A window's deadline is timeout_s from its start; each attempt re-sends
  only the writes not yet answered, with the same seqs.
- An OK or a final refusal ends a write whichever attempt it answers; a
  refusal is raised once the window is done, the lowest position first.
- A frame that would exceed max_frame_bytes is halved until it fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from zrep.client._errors import ClientError, OutcomeUnknown, Rejected, Unavailable
from zrep.client._results import Receipt
from zrep.client._retry import (
    CONNECT_WAIT_S,
    MAYBE_ACCEPTED,
    Answer,
    Route,
    Send,
    Steps,
    Wait,
    answer_of,
    cannot_connect,
    encode,
    final,
    no_node_connects,
    receipt_of,
    refusal,
)
from zrep.wire.client_messages import (
    MAX_BATCH_REQUESTS,
    ClientReply,
    ClientRequest,
    Code,
    Op,
)

# send_many writes this many at a time, each window's `low` its first seq: the store keeps
# at most 4,096 answers per client (StoreLimits.max_inflight) and refuses writes past that.
SEND_MANY_WINDOW = MAX_BATCH_REQUESTS


@dataclass(slots=True)
class Many:
    """One send_many call: its writes and their receipts, kept for its retry."""

    key: tuple[Any, ...]  # the call's arguments: the same call again is the retry
    args: list[dict[str, Any]]  # full send args, consecutive seqs
    receipts: list[Receipt | None]


def run_many(route: Route, many: Many, window: range, client_id: str, max_frame_bytes: int) -> Steps[None]:
    """Attempt the unanswered writes of `many` in `window` (one batch per attempt) until
    each has an OK or final answer, or the deadline. A final refusal is raised at the end."""
    deadline = time.monotonic() + route.timeout_s
    todo = {i for i in window if many.receipts[i] is None}
    sent: dict[int, int] = {}  # req_id of every attempt -> message position
    refused: dict[int, Answer] = {}
    maybe_accepted = False  # some write reached a node without a final answer
    problem, failures, hops = "no node answered", 0, 0
    target = route.first_target(False)
    unreachable: set[int] = set()  # nodes whose link could not connect in this window
    while todo:
        if time.monotonic() >= deadline:
            raise _gave_up_many(route, many, todo, maybe_accepted, problem)
        current: set[int] = set()  # this attempt's req_ids not answered yet
        why = yield from _send_many_to(route, target, many, sorted(todo), sent, current,
                                       min(time.monotonic() + CONNECT_WAIT_S, deadline), max_frame_bytes)
        hint = None
        if why:
            route.silent(target)
            problem = f"node {target}: {why}"
            maybe_accepted |= bool(current)
            if not maybe_accepted and no_node_connects(route, unreachable, target, why):
                raise cannot_connect(route)
        else:
            unreachable.discard(target)
            until = min(time.monotonic() + route.attempt_timeout_s, deadline)
            answers: list[Answer] = []
            yield from _take_answers(route, many, sent, current, todo, refused, until, answers, whole=False)
            for answer in answers:
                problem = f"node {answer.node}: {answer.code} {answer.message}".rstrip()
                maybe_accepted |= answer.code in MAYBE_ACCEPTED
                hint = route.hint(answer) or hint
            if any(sent[r] in todo for r in current):  # some of this attempt went unanswered
                route.silent(target)
                problem = f"node {target} did not answer within {route.attempt_timeout_s:g} s"
                maybe_accepted = True
            else:
                route.silent_since.pop(target, None)
        if not todo:
            break
        target, hops = route.next_target(target, hint, hops)
        if hops:
            continue
        until = route.backoff_until(failures, deadline)
        failures += 1
        late: list[Answer] = []
        yield from _take_answers(route, many, sent, set(), todo, refused, until, late, whole=True)
        maybe_accepted |= any(a.code in MAYBE_ACCEPTED for a in late)  # late answers still count
    if refused:
        first = min(refused)
        raise refusal(refused[first], client_id, many.args[first]["seq"])


def _take_answers(route: Route, many: Many, sent: dict[int, int], current: set[int], todo: set[int],
                  refused: dict[int, Answer], until: float, others: list[Answer], *, whole: bool) -> Steps[None]:
    """Take the replies to any attempt of `many` until `until` (or, unless `whole`,
    until every req_id of `current` is answered): an OK stores its receipt, a final
    answer is kept in `refused`; both end that message. The other answers go to `others`."""
    while todo and (whole or current):
        replies: list[tuple[int, ClientReply]] = yield Wait(until)
        for node, reply in replies:
            current.discard(reply.req_id)
            i = sent.get(reply.req_id)
            if i is None or i not in todo:
                continue  # stale, or its message is already done
            answer = answer_of(node, reply)
            if answer.code == Code.OK:
                many.receipts[i] = receipt_of(route.done(answer, False), many.args[i]["to"])
                todo.discard(i)
            elif final(answer):
                refused[i] = answer
                todo.discard(i)
            else:
                others.append(answer)
        if time.monotonic() >= until:
            return


def _gave_up_many(route: Route, many: Many, todo: set[int], maybe_accepted: bool, problem: str) -> ClientError:
    seqs = sorted(many.args[i]["seq"] for i in todo)
    where = f"{len(seqs)} of {len(many.args)} writes (seqs {seqs[0]}..{seqs[-1]})"
    if maybe_accepted:
        return OutcomeUnknown(f"{where} got no answer within {route.timeout_s:g} s ({problem}); they may have "
                              "been applied: retry the same call with the same client (safe), or check with a read")
    return Unavailable(f"no leader answered {where} within {route.timeout_s:g} s ({problem}); the cluster has no "
                       "quorum or is unreachable: check 'zrep client status' and retry")


def _send_many_to(route: Route, node: int, many: Many, todo: list[int], sent: dict[int, int], current: set[int],
                  connect_by: float, max_frame_bytes: int) -> Steps[str]:
    """Send one attempt of the writes at positions `todo` (ClientBatch frames, or one
    ClientRequest for one write); '' on success, else why not all could leave.
    Every req_id that left is in `sent` and `current`."""
    reqs = [(route.new_req_id(), i) for i in todo]
    for at in range(0, len(reqs), MAX_BATCH_REQUESTS):
        for payload, part in _frames_of(many, reqs[at:at + MAX_BATCH_REQUESTS], max_frame_bytes):
            why = yield Send(node, payload, tuple(r for r, _ in part), connect_by)
            if why:
                return why
            for r, i in part:
                sent[r] = i
                current.add(r)
    return ""


def _frames_of(many: Many, reqs: list[tuple[int, int]],
               max_frame_bytes: int) -> list[tuple[bytes, list[tuple[int, int]]]]:
    """(frame, its (req_id, position) pairs): `reqs` in runs that each fit in one frame
    (halved until they do)."""
    try:
        return [(encode([ClientRequest(r, Op.SEND, many.args[i]) for r, i in reqs], max_frame_bytes), reqs)]
    except Rejected:
        if len(reqs) == 1:
            raise
        half = len(reqs) // 2
        return _frames_of(many, reqs[:half], max_frame_bytes) + _frames_of(many, reqs[half:], max_frame_bytes)
