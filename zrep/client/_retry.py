"""One logical request as a sans-I/O state machine: attempts, backoff, leader hints, targets.

Job: turn one call (a write, a read, a status round) into as many request
attempts as it takes, until an answer or the overall deadline. The steps are
generators that yield effects and are sent their results:
  Open(nodes)  -> None: make the links to these nodes now, so their connects overlap
  Send(node, payload, req_ids, connect_by) -> '' once the frame left, else why not
  Wait(until)  -> the (node, ClientReply) pairs that arrived before `until`
                  (returns at the first batch; may be empty)
so the blocking Client (zrep.client._client) and the asyncio one
(zrep.client._aio) drive the very same logic over their own sockets. Only
the clock is read here; no socket, no sleep.

Invariants
- Every attempt gets a fresh req_id; a reply is matched by it, and replies to
  no attempt of the current call are dropped (stale).
- A write that may have reached a node and got no final answer ends in
  `OutcomeUnknown`, never `Unavailable`: `Unavailable` promises nothing
  was accepted.
- An OK answer for any attempt of the current call is accepted, even late
  and from a node we moved away from: it is the same (client, seq).
- When, within one call, every node's link has failed to connect (none ever
  did), the call fails at once with `Unavailable` (the nats CLI's "no servers
  available"): no node can have taken anything, and waiting cannot help soon.
- A named leader is tried at once, at most once per node in a row; otherwise
  the next attempt goes to the next node that never left an attempt
  unanswered, after a backoff with full jitter (BACKOFF_BASE_S..BACKOFF_MAX_S).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from zrep.client._errors import (
    ClientError,
    ClientExpired,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from zrep.client._results import Receipt
from zrep.wire import codec
from zrep.wire.client_messages import (
    BAD_COMMAND,
    BAD_MAILBOX,
    BAD_SENDER,
    CHANGE_UNKNOWN,
    REFUSED,
    NO_SUCH_MESSAGE,
    TOO_MANY_IN_FLIGHT,
    ClientBatch,
    ClientReply,
    ClientRequest,
    Code,
)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPT_TIMEOUT_S = 0.5  # a dead or paused node costs this much before we try another
BACKOFF_BASE_S = 0.01
BACKOFF_MAX_S = 0.1  # while a new leader is elected (a few hundred ms), retry at least this often
CONNECT_WAIT_S = 0.2  # time for a fresh DEALER to complete its TCP connect
CANNOT_CONNECT = "cannot connect to "  # how a Send result starts when the link never connected

# Store answers that mean "refused, nothing applied or the request is wrong": never retried.
REJECTED_CODES = frozenset(
    {Code.BAD_REQUEST, Code.TOO_LARGE, Code.FORBIDDEN, BAD_MAILBOX, BAD_SENDER, NO_SUCH_MESSAGE, BAD_COMMAND,
     TOO_MANY_IN_FLIGHT}
)
# Answers that prove the store holds a record for this client id (so low may leave 1).
KNOWN_CLIENT_CODES = frozenset({Code.OK, BAD_MAILBOX, BAD_SENDER, NO_SUCH_MESSAGE, TOO_MANY_IN_FLIGHT})
_RETRY_ELSEWHERE = frozenset({Code.NO_LEADER, Code.UNAVAILABLE, Code.TIMEOUT})
# Retryable answers after which a write may still be applied (a node stopping or timing out
# with the write pending); NO_LEADER and NOT_LEADER are only sent before a write is taken.
MAYBE_ACCEPTED = frozenset({Code.UNAVAILABLE, Code.TIMEOUT})


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Open:
    nodes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Send:
    node: int
    payload: bytes
    req_ids: tuple[int, ...]  # the requests in the frame: their replies belong to this call
    connect_by: float  # how long a link never connected may wait for its first connection


@dataclass(frozen=True, slots=True)
class Wait:
    until: float


Effect = Union[Open, Send, Wait]
T = TypeVar("T")
Steps = Generator[Effect, Any, T]


# ---------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Answer:
    node: int
    code: str  # the most specific code: the store's ("BAD_MAILBOX") over the reply's (BAD_REQUEST)
    message: str
    result: dict[str, Any]


def answer_of(node: int, reply: ClientReply) -> Answer:
    """Fold the reply code and the store's own code into one code.

    The node sends a store refusal (BAD_MAILBOX, CLIENT_EXPIRED, ...) as BAD_REQUEST
    with the store's code in result["reason"] (zrep.node.loop.reply_for).
    """
    reason = reply.result.get("reason")
    if not reply.ok and isinstance(reason, str) and reason:
        return Answer(node, reason, reply.message, reply.result)
    return Answer(node, str(reply.code), reply.message, reply.result)


def final(answer: Answer) -> bool:
    """True for answers that end a call whichever attempt they answer."""
    return answer.code not in (Code.NOT_LEADER, *_RETRY_ELSEWHERE)


def receipt_of(answer: Answer, to: str) -> Receipt:
    r = answer.result
    return Receipt(
        mailbox=r.get("mailbox", to),
        offset=r["offset"],
        index=r["index"],
        epoch=r.get("epoch", 0),
        durable_on=list(r.get("durable_on", ())),
        all_durable=r.get("all_durable"),
        node=answer.node,
    )


def check(op: str, args: dict[str, Any]) -> None:
    """Refuse locally what the wire would refuse: nothing is sent, no seq is spent."""
    try:
        ClientRequest(1, op, args)
    except ValueError as e:
        raise Rejected("BAD_REQUEST", f"invalid {op} request ({e}); fix the arguments") from None


def encode(requests: list[ClientRequest], max_frame_bytes: int) -> bytes:
    frame = requests[0] if len(requests) == 1 else ClientBatch(tuple(requests))
    try:
        return codec.encode(frame, max_frame_bytes)
    except ValueError as e:
        raise Rejected("TOO_LARGE", f"cannot send the request: {e}; send less") from None


def refusal(answer: Answer, client_id: str, seq: int) -> ClientError:
    """The error for a final answer that is not OK (seq: the write it answers)."""
    where = f"node {answer.node}"
    if answer.code == "CLIENT_EXPIRED":
        return ClientExpired(
            f"{where}: the cluster forgot client id {client_id!r}; the outcome of write seq "
            f"{seq} is unknown: check with a read, then use a new client id"
        )
    if answer.code == "STALE_REQUEST":
        return OutcomeUnknown(f"{where}: write seq {seq} is older than this client's low mark; "
                              "its outcome is unknown: check with a read")
    if answer.code == CHANGE_UNKNOWN:  # a membership change that did not commit in time
        return OutcomeUnknown(f"{where}: {answer.message}")
    if answer.code == REFUSED:  # the leader judged a membership change: its message says what to do
        return Rejected(REFUSED, f"{where} refused the change: {answer.message}")
    hint = "fix the request; retrying it cannot succeed"
    return Rejected(answer.code, f"{where} refused the request: {answer.code}: {answer.message}; {hint}")


# ---------------------------------------------------------------- where attempts go


class Route:
    """The targeting state every call of one client shares: node addresses, the
    preferred node, which nodes went silent, the req_id counter, the timeouts."""

    def __init__(self, addresses: dict[int, str], timeout_s: float, attempt_timeout_s: float) -> None:
        self.addresses = addresses
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.preferred: int | None = None  # the node that last answered OK, or the leader hinted
        self.silent_since: dict[int, float] = {}  # node -> when an attempt there last went unanswered
        self.rng = random.Random()
        self.failover = False  # a node went silent or another leader was named: refresh the members
        self._next_req_id = 1

    def new_req_id(self) -> int:
        req_id = self._next_req_id
        self._next_req_id += 1
        return req_id

    def silent(self, node: int) -> None:
        self.silent_since[node] = time.monotonic()
        self.failover = True

    def done(self, answer: Answer, anywhere: bool) -> Answer:
        if not anywhere:  # a node that served a write or a linearizable read: start there next time,
            # or at the leader it names (a follower forwards; the leader answers with the replicas)
            leader = answer.result.get("leader")
            known = type(leader) is int and leader in self.addresses
            self.preferred = leader if known else answer.node
        return answer

    def hint(self, answer: Answer) -> int | None:
        if answer.code != Code.NOT_LEADER:
            return None
        leader, rpc = answer.result.get("leader"), answer.result.get("rpc")
        if type(leader) is not int or leader < 1 or leader == answer.node:
            return None
        if leader not in self.addresses:
            if not isinstance(rpc, str) or not rpc:
                return None
            self.addresses[leader] = rpc  # a member our config does not list
        if self.preferred is not None and leader != self.preferred:
            self.failover = True  # not on a first guess: only a leader change is a failover
        return leader

    def next_target(self, target: int, hint: int | None, hops: int) -> tuple[int, int]:
        """Where the next attempt goes, and the hops taken on leader hints in a row (0: none,
        then back off first). A named leader is tried at once, at most once per node in a row."""
        if hint is not None and hops < len(self.addresses):
            self.preferred = hint
            return hint, hops + 1
        return self.next_node(target), 0

    def first_target(self, anywhere: bool) -> int:
        if anywhere:  # any node may answer: spread the load
            return self.rng.choice(sorted(self.addresses))
        if self.preferred is not None and self.preferred in self.addresses:
            return self.preferred
        return min(self.addresses)  # deterministic: one wrong guess costs one NOT_LEADER hop

    def next_node(self, node: int) -> int:
        """The next node in id order that never left an attempt unanswered, else
        the one that did so longest ago: a dead leader is not retried while a live
        follower, which forwards the write to whichever leader comes next, is."""
        ids = sorted(self.addresses)
        start = ids.index(node) + 1 if node in ids else 0
        order = [ids[(start + k) % len(ids)] for k in range(len(ids))]
        return min(order, key=lambda n: self.silent_since.get(n, -math.inf))

    def backoff_until(self, failures: int, deadline: float) -> float:
        """Exponential backoff with full jitter: when the next attempt may leave."""
        cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**failures)
        return min(time.monotonic() + self.rng.uniform(cap / 2, cap), deadline)


# ---------------------------------------------------------------- one call


@dataclass(slots=True)
class Call:
    """The attempts of one logical request (one write or one read)."""

    op: str
    args: dict[str, Any]
    is_write: bool
    deadline: float
    req_ids: set[int] = field(default_factory=set)  # of every attempt sent
    current: int = 0  # req_id of the attempt we wait for now (0: none, backing off)
    failures: int = 0  # drives the backoff
    maybe_accepted: bool = False  # a write reached a node without a final answer
    last_problem: str = "no node answered"
    refused: set[int] = field(default_factory=set)  # nodes whose link could not connect in this call


def run(route: Route, call: Call, client_id: str, max_frame_bytes: int, *, anywhere: bool = False) -> Steps[Answer]:
    """Attempt the (checked) request until an OK or final answer, or the deadline."""
    target = route.first_target(anywhere)
    hops = 0  # NOT_LEADER hints followed in a row, without a backoff
    while True:
        answer = yield from _attempt(route, call, target, max_frame_bytes)
        if answer is not None and answer.code == Code.OK:
            return route.done(answer, anywhere)
        if answer is not None and final(answer):
            raise refusal(answer, client_id, call.args.get("seq", 0))
        target, hops = route.next_target(target, route.hint(answer) if answer is not None else None, hops)
        if hops:
            continue
        answer = yield from _backoff(route, call, client_id)
        if answer is not None:
            return route.done(answer, anywhere)


def _attempt(route: Route, call: Call, node: int, max_frame_bytes: int) -> Steps[Answer | None]:
    """Send one attempt to `node` and wait for its answer (or any final one)."""
    now = time.monotonic()
    if now >= call.deadline:
        raise gave_up(route, call)
    req_id = route.new_req_id()
    payload = encode([ClientRequest(req_id, call.op, call.args)], max_frame_bytes)
    problem = yield Send(node, payload, (req_id,), min(now + CONNECT_WAIT_S, call.deadline))
    if problem:
        route.silent(node)
        call.last_problem = f"node {node}: {problem}"
        if no_node_connects(route, call.refused, node, problem) and not call.maybe_accepted:
            raise cannot_connect(route)
        return None
    call.refused.discard(node)
    call.req_ids.add(req_id)
    call.current = req_id
    answer = yield from _await(call, min(time.monotonic() + route.attempt_timeout_s, call.deadline))
    call.current = 0
    if answer is None:
        route.silent(node)
        call.last_problem = f"node {node} did not answer within {route.attempt_timeout_s:g} s"
        call.maybe_accepted |= call.is_write
        return None
    route.silent_since.pop(answer.node, None)  # it answers again: first choice again
    if answer.code != Code.OK:
        call.last_problem = f"node {answer.node}: {answer.code} {answer.message}".rstrip()
        call.maybe_accepted |= call.is_write and answer.code in MAYBE_ACCEPTED
    return answer


def _backoff(route: Route, call: Call, client_id: str) -> Steps[Answer | None]:
    """Wait with exponential backoff and full jitter, still accepting a late OK."""
    until = route.backoff_until(call.failures, call.deadline)
    call.failures += 1
    answer = yield from _await(call, until)
    if answer is not None and answer.code != Code.OK:
        raise refusal(answer, client_id, call.args.get("seq", 0))
    return answer


def _await(call: Call, until: float) -> Steps[Answer | None]:
    """The answer of the current attempt, or a final answer of any attempt, or None at `until`."""
    while True:
        for node, reply in (yield Wait(until)):
            if reply.req_id not in call.req_ids:
                continue  # a stale reply from an earlier call
            answer = answer_of(node, reply)
            if reply.req_id == call.current or final(answer):
                return answer
        if time.monotonic() >= until:
            return None


def no_node_connects(route: Route, refused: set[int], node: int, problem: str) -> bool:
    """Note a failed send; True once every node has failed to connect in this call."""
    if problem.startswith(CANNOT_CONNECT):
        refused.add(node)
    return refused >= route.addresses.keys()


def cannot_connect(route: Route) -> Unavailable:
    where = ", ".join(route.addresses[n] for n in sorted(route.addresses))
    return Unavailable(f"cannot connect to any node ({where}): is the cluster running? start it (bin/up), "
                       "or check --config / $ZREP_CONFIG; nothing was sent")


def gave_up(route: Route, call: Call) -> ClientError:
    if call.maybe_accepted:
        return OutcomeUnknown(
            f"write seq {call.args.get('seq', 0)} got no answer within {route.timeout_s:g} s ({call.last_problem}); "
            "it may have been applied: retry with the same client (safe), or check with a read"
        )
    return Unavailable(
        f"no leader answered within {route.timeout_s:g} s ({call.last_problem}); the cluster has no "
        "quorum or is unreachable: check 'zrep client status' and retry"
    )
