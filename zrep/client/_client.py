"""The client library: find a node, send writes with (client id, seq), retry
through failovers, read, list, watch and ask every node for its status.

Job: turn one call (`send`, `delete`, `read`, `mailboxes`) into as many
request attempts as it takes, until an answer or the overall deadline.

Wire: one DEALER per node, made on first use (LINGER 0, a random routing id,
IMMEDIATE so a request never queues for a node we are not connected to);
each frame is a `ClientRequest` / `ClientReply` from zrep.wire.codec, or for
`send_many` a `ClientBatch` answered in `ClientReplies` frames. Every
attempt gets a fresh `req_id`; a reply is matched by it and stale replies
(from earlier calls) are dropped.

Invariants
- A write keeps its (client id, seq, low) through every retry of one call:
  the store applies it at most once and a retry gets the original answer.
- `seq` grows by one per write call. `low` is the seq of the current call
  (a synchronous client waits for nothing older), except that until this
  client id has had one answer from the store, `low` stays 1: the store
  admits an id it does not know only with low == 1 (else CLIENT_EXPIRED).
- A write that may have reached a node and got no final answer ends in
  `OutcomeUnknown`, never `Unavailable`: `Unavailable` promises nothing
  was accepted.
- An OK answer for any attempt of the current call is accepted, even late
  and from a node we moved away from: it is the same (client, seq).
- After `OutcomeUnknown`, the next write call with the same op and arguments
  is a retry: it reuses the seq, so it is applied at most once in all.
- `send_many` pipelines its messages in ClientBatch frames with consecutive
  seqs, SEND_MANY_WINDOW at a time, `low` = the first seq of the window (1
  while the store does not know this client id), and the deadline per window;
  each retry attempt re-sends only the messages not yet answered,
  with the same seqs, and after `OutcomeUnknown` the same call again is the
  retry of the unanswered ones, as for one write.

Not thread-safe (ZeroMQ sockets): one Client per thread.
Imports only the codec, client messages, config and errors from zrep.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from zrep.config import ClusterConfig, load_config
from zrep.errors import DecodeError, ZrepError
from zrep.wire import codec
from zrep.wire.client_messages import (
    BAD_COMMAND,
    BAD_MAILBOX,
    BAD_SENDER,
    MAX_BATCH_REQUESTS,
    NO_SUCH_MESSAGE,
    TOO_MANY_IN_FLIGHT,
    ClientBatch,
    ClientReplies,
    ClientReply,
    ClientRequest,
    Code,
    Message,
    Op,
)
from zrep.wire.client_messages import client_id as check_client_id

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPT_TIMEOUT_S = 0.5  # a dead or paused node costs this much before we try another
DEFAULT_POLL_S = 0.2
WATCH_PAGE = 100  # messages per watch read: a page of big bodies must still fit one frame
BACKOFF_BASE_S = 0.01
BACKOFF_MAX_S = 0.1  # while a new leader is elected (a few hundred ms), retry at least this often
CONNECT_WAIT_S = 0.2  # time for a fresh DEALER to complete its TCP connect
# send_many writes this many at a time, each window's `low` its first seq: the store keeps
# at most 4,096 answers per client (StoreLimits.max_inflight) and refuses writes past that.
SEND_MANY_WINDOW = MAX_BATCH_REQUESTS
RECONNECT_IVL_MS = 50

# Store answers that mean "refused, nothing applied or the request is wrong": never retried.
REJECTED_CODES = frozenset(
    {Code.BAD_REQUEST, Code.TOO_LARGE, BAD_MAILBOX, BAD_SENDER, NO_SUCH_MESSAGE, BAD_COMMAND, TOO_MANY_IN_FLIGHT}
)
# Answers that prove the store holds a record for this client id (so low may leave 1).
_KNOWN_CLIENT_CODES = frozenset({Code.OK, BAD_MAILBOX, BAD_SENDER, NO_SUCH_MESSAGE, TOO_MANY_IN_FLIGHT})
_RETRY_ELSEWHERE = frozenset({Code.NO_LEADER, Code.UNAVAILABLE, Code.TIMEOUT})
# Retryable answers after which a write may still be applied (a node stopping or timing out
# with the write pending); NO_LEADER and NOT_LEADER are only sent before a write is taken.
_MAYBE_ACCEPTED = frozenset({Code.UNAVAILABLE, Code.TIMEOUT})


# ---------------------------------------------------------------- errors


class ClientError(ZrepError):
    """Base of the errors a client call raises. Raised by `send_many`, `receipts` holds
    by position the Receipt of each message stored, None for the others."""

    receipts: list[Receipt | None] | None = None


class Unavailable(ClientError):
    """No node, or no leader, answered before the deadline: the cluster has no quorum
    or is unreachable. Nothing was accepted; retrying later is safe."""


class OutcomeUnknown(ClientError):
    """A write may have been accepted but no answer came in time. Calling the same write
    again on the same Client retries it with the same (client id, seq): safe, applied at
    most once in all."""


class ClientExpired(OutcomeUnknown):
    """The store forgot this client id (evicted or never admitted): the outcome of its
    pending write is unknown and retrying with this id cannot tell. Use a new client id."""


class Rejected(ClientError):
    """The store or node refused the request (bad mailbox, too large, no such message,
    bad request). Retrying the same request gets the same answer."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where a sent message landed, and which replicas have it on disk."""

    mailbox: str
    offset: int
    index: int  # log index of the entry
    epoch: int  # epoch of that entry
    durable_on: list[int]  # node ids that fsynced it when the answer left
    all_durable: bool | None  # ack="all": every member has it; None for ack="majority"
    node: int  # the node that answered


@dataclass(frozen=True, slots=True)
class ReadResult:
    messages: list[Message]
    applied: int  # the answering node's applied index (how fresh a stale read is)
    node: int


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    count: int  # live messages


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's answer to `status`, or `up=False` with the reason it is down."""

    id: int
    address: str
    up: bool
    role: str | None = None
    epoch: int | None = None
    leader: int | None = None  # 0: none known
    last_index: int | None = None
    commit: int | None = None
    applied: int | None = None
    last_heard_ms: int | None = None  # since a peer that answered last heard from it (None: no one says)
    error: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # the node's full answer


# ---------------------------------------------------------------- one call's state


@dataclass(frozen=True, slots=True)
class _Answer:
    node: int
    code: str  # the most specific code: the store's ("BAD_MAILBOX") over the reply's (BAD_REQUEST)
    message: str
    result: dict[str, Any]


@dataclass(slots=True)
class _Many:
    """One send_many call: its writes and their receipts, kept for its retry."""

    key: tuple[Any, ...]  # the call's arguments: the same call again is the retry
    args: list[dict[str, Any]]  # full send args, consecutive seqs
    receipts: list[Receipt | None]


@dataclass(slots=True)
class _Call:
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


def _answer_of(node: int, reply: ClientReply) -> _Answer:
    """Fold the reply code and the store's own code into one code.

    The node sends a store refusal (BAD_MAILBOX, CLIENT_EXPIRED, ...) as BAD_REQUEST
    with the store's code in result["reason"] (zrep.node.loop.reply_for).
    """
    reason = reply.result.get("reason")
    if not reply.ok and isinstance(reason, str) and reason:
        return _Answer(node, reason, reply.message, reply.result)
    return _Answer(node, str(reply.code), reply.message, reply.result)


def _receipt(answer: _Answer, to: str) -> Receipt:
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


def _heard_by_peers(results: Iterable[dict[str, Any]]) -> dict[int, int]:
    """Node id -> the freshest `heard_ms_ago` any answering node reports for it.

    It says how long a down node has been silent, and flags an up node its
    peers cannot hear (a partition) although this client can.
    """
    heard: dict[int, int] = {}
    for result in results:
        for peer in result.get("peers", ()):
            if not isinstance(peer, dict):
                continue
            pid, ms = peer.get("id"), peer.get("heard_ms_ago")
            if type(pid) is int and type(ms) is int:
                heard[pid] = min(ms, heard.get(pid, ms))
    return heard


def _final(answer: _Answer) -> bool:
    """True for answers that end a call whichever attempt they answer."""
    return answer.code not in (Code.NOT_LEADER, *_RETRY_ELSEWHERE)


# ---------------------------------------------------------------- the client


class Client:
    """A connection to a zrep cluster. See the module docstring for its rules.

    `timeout_s` bounds a whole call, retries included; `attempt_timeout_s` is how
    long one node may stay silent before the next is tried.
    """

    def __init__(
        self,
        config: ClusterConfig | str | Path,
        *,
        client_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    ) -> None:
        self.config = config if isinstance(config, ClusterConfig) else load_config(config)
        self.client_id = client_id if client_id is not None else uuid.uuid4().hex
        check_client_id(self.client_id)  # ValueError: local misuse
        if timeout_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError("timeout_s and attempt_timeout_s must be > 0")
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self._addresses: dict[int, str] = {n.id: n.rpc for n in self.config.nodes}
        self._ctx = zmq.Context()
        self._sockets: dict[int, zmq.Socket] = {}
        self._node_of_socket: dict[zmq.Socket, int] = {}
        self._poller = zmq.Poller()
        self._next_req_id = 1
        self._seq = 0  # last seq used
        self._known = False  # the store has a record of this client id
        self._preferred: int | None = None  # the node that last answered OK, or the leader hinted
        self._unknown: tuple[str, dict[str, Any]] | None = None  # last write, if its outcome is unknown
        self._unknown_many: _Many | None = None  # last send_many, if some of its outcomes are unknown
        self._silent_since: dict[int, float] = {}  # node -> when an attempt there last went unanswered
        self._connected_once: set[int] = set()  # nodes a request has reached over the current socket
        self._rng = random.Random()
        self._closed = False

    # --- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def preferred_node(self) -> int | None:
        """The node the next write or linearizable read goes to first (None before any answer)."""
        return self._preferred

    @property
    def seq(self) -> int:
        """The seq of the last write this client made (0: none yet)."""
        return self._seq

    # --- writes --------------------------------------------------------------

    def send(self, to: str, body: bytes | str, *, sender: str = "", ack: str = "majority") -> Receipt:
        """Append `body` to mailbox `to`; returns once `ack` replicas have it on disk."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        if len(data) > self.config.max_body_bytes:
            raise Rejected(
                "TOO_LARGE",
                f"body is {len(data)} bytes, the cluster's limit is {self.config.max_body_bytes}; send less",
            )
        return _receipt(self._write(Op.SEND, {"ack": ack, "sender": sender, "to": to, "body": data}), to)

    def send_many(self, to: str, bodies: Iterable[bytes | str], *, sender: str = "",
                  ack: str = "majority") -> list[Receipt]:
        """Append every body to mailbox `to`, pipelined in batch frames; their receipts
        in order, once `ack` replicas have each on disk. Each body is a write of its
        own (consecutive seqs), exactly once across retries like `send`. On an error
        the messages already stored are in the exception's `receipts`."""
        datas = [b.encode("utf-8") if isinstance(b, str) else b for b in bodies]
        if not datas:
            return []
        for data in datas:
            if len(data) > self.config.max_body_bytes:
                raise Rejected("TOO_LARGE", f"a body is {len(data)} bytes, the cluster's limit is "
                               f"{self.config.max_body_bytes}; send less")
        key = (to, sender, ack, tuple(datas))
        many = self._unknown_many if self._unknown_many is not None and self._unknown_many.key == key else None
        retrying = many is not None
        if many is None:
            first = self._seq + 1
            # low: the first seq of each window (1 while the store does not know this client id)
            args = [{"client": self.client_id, "seq": first + i,
                     "low": first + i - i % SEND_MANY_WINDOW if self._known or i >= SEND_MANY_WINDOW else 1,
                     "ack": ack, "sender": sender, "to": to, "body": data} for i, data in enumerate(datas)]
            for a in args:
                self._check(Op.SEND, a)  # before the seqs are spent: a local refusal changes nothing
            self._seq = first + len(args) - 1
            many = _Many(key, args, [None] * len(args))
        self._unknown = self._unknown_many = None
        try:
            for start in range(0, len(many.args), SEND_MANY_WINDOW):
                self._run_many(many, range(start, min(start + SEND_MANY_WINDOW, len(many.args))))
        except ClientExpired as e:
            e.receipts = list(many.receipts)
            raise
        except OutcomeUnknown as e:
            self._unknown_many = many  # the same call again retries the unanswered ones
            e.receipts = list(many.receipts)
            raise
        except Unavailable as e:
            e.receipts = list(many.receipts)
            if not retrying:
                raise
            self._unknown_many = many
            unknown = OutcomeUnknown(f"{e}; earlier attempts of these writes may have been applied: retry with "
                                     "the same client (safe), or check with a read")
            unknown.receipts = e.receipts
            raise unknown from None
        except Rejected as e:
            self._known = self._known or e.code in _KNOWN_CLIENT_CODES or any(many.receipts)
            e.receipts = list(many.receipts)
            raise
        self._known = True
        return [r for r in many.receipts if r is not None]

    def delete(self, mailbox: str, offsets: list[int] | tuple[int, ...]) -> list[int]:
        """Delete messages by offset, all or nothing; returns the offsets deleted."""
        answer = self._write(Op.DELETE, {"ack": "majority", "mailbox": mailbox, "offsets": list(offsets)})
        return list(answer.result.get("deleted", sorted(offsets)))

    def _write(self, op: str, args: dict[str, Any]) -> _Answer:
        full = self._retry_of(op, args)
        retrying = full is not None
        if full is None:
            seq = self._seq + 1
            full = {"client": self.client_id, "seq": seq, "low": seq if self._known else 1, **args}
            self._check(op, full)  # before the seq is spent: a local refusal changes nothing
            self._seq = seq
        self._unknown = self._unknown_many = None
        try:
            answer = self._run(op, full, is_write=True)
        except ClientExpired:
            raise
        except OutcomeUnknown:
            self._unknown = (op, full)  # the same call again is its retry
            raise
        except Unavailable as e:
            if not retrying:
                raise
            # This attempt reached no node, but an earlier one may have landed:
            # forgetting the seq now would let the next call apply it twice.
            self._unknown = (op, full)
            raise OutcomeUnknown(f"{e}; an earlier attempt of write seq {full['seq']} may have been applied: "
                                 "retry with the same client (safe), or check with a read") from None
        except Rejected as e:
            self._known = self._known or e.code in _KNOWN_CLIENT_CODES
            raise
        self._known = True
        return answer

    def _retry_of(self, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """The request of the last write, if it ended in OutcomeUnknown and this call repeats it."""
        if self._unknown is None:
            return None
        last_op, last = self._unknown
        if last_op == op and all(last[k] == v for k, v in args.items()):
            return last
        return None

    # --- reads ---------------------------------------------------------------

    def read(self, mailbox: str, *, after: int = -1, limit: int = 100, stale: bool = False) -> ReadResult:
        """Messages of `mailbox` with offset > `after`, oldest first, at most `limit`.

        Linearizable by default (sees every write acknowledged before the call);
        `stale=True` asks any node's local store, whose `applied` says how fresh it is.
        """
        op = Op.STALE_READ if stale else Op.READ
        args = {"mailbox": mailbox, "after": after, "limit": limit}
        self._check(op, args)
        answer = self._run(op, args, is_write=False, anywhere=stale)
        rows = answer.result.get("messages", ())
        messages = [Message(int(o), str(s), bytes(b), int(i)) for o, s, b, i in rows]
        return ReadResult(messages, int(answer.result.get("applied", 0)), answer.node)

    def mailboxes(self, pattern: str = "*") -> list[MailboxInfo]:
        """Every mailbox whose name matches the glob, with its live message count.

        Linearizable: the wire has no stale variant of this op.
        """
        args = {"pattern": pattern}
        self._check(Op.MAILBOXES, args)
        answer = self._run(Op.MAILBOXES, args, is_write=False)
        return [MailboxInfo(str(name), int(count)) for name, count in answer.result.get("mailboxes", ())]

    def watch(
        self, mailbox: str, after: int = -1, poll_s: float = DEFAULT_POLL_S, *, stale: bool = False
    ) -> Iterator[Message]:
        """Yield the messages of `mailbox` with offset > `after` as they are committed, forever.

        No gap, no repeat: each read continues from the last offset yielded, and
        offsets are stable, so it holds across failovers and whichever node
        answers. Reads are linearizable by default: a watcher never lags behind
        an acknowledged write and never follows a node cut off in a minority.
        Raises Unavailable if no read succeeds within timeout_s; call again with
        `after` = the last offset seen to resume.
        """
        last = after
        while True:
            result = self.read(mailbox, after=last, limit=WATCH_PAGE, stale=stale)
            for m in result.messages:
                last = m.offset
                yield m
            if len(result.messages) < WATCH_PAGE:  # after a full page more is waiting: read on at once
                time.sleep(poll_s)

    # --- status --------------------------------------------------------------

    def status(self, timeout_s: float = 1.0) -> list[NodeStatus]:
        """Ask every node at once; a node silent for `timeout_s` is reported down."""
        replies, down = self._ask_all(timeout_s)
        heard = _heard_by_peers(reply.result for reply in replies.values() if reply.ok)
        rows = [self._node_status(n, reply, heard.get(n)) for n, reply in replies.items()]
        rows += [NodeStatus(n, self._addresses[n], False, last_heard_ms=heard.get(n), error=why)
                 for n, why in down.items()]
        return sorted(rows, key=lambda r: r.id)

    def _ask_all(self, timeout_s: float) -> tuple[dict[int, ClientReply], dict[int, str]]:
        """Send `status` to every node, then wait once for all: (replies, down node -> why)."""
        for node in self._addresses:
            self._socket(node)  # every connect starts now, so their waits overlap
        start = time.monotonic()
        sent: dict[int, int] = {}  # req_id -> node
        down: dict[int, str] = {}
        for node in sorted(self._addresses):
            req_id = self._new_req_id()
            problem = self._send_to(node, ClientRequest(req_id, Op.STATUS, {}), start + min(timeout_s, CONNECT_WAIT_S))
            if problem:
                down[node] = problem
            else:
                sent[req_id] = node
        replies: dict[int, ClientReply] = {}
        deadline = start + timeout_s
        while sent and time.monotonic() < deadline:
            for node, reply in self._poll_replies(deadline):
                if sent.pop(reply.req_id, None) is not None:
                    replies[node] = reply
        for node in sent.values():
            down[node] = f"no answer within {timeout_s:g} s"
        return replies, down

    def _node_status(self, node: int, reply: ClientReply, heard_ms: int | None) -> NodeStatus:
        r, address = reply.result, self._addresses[node]
        if not reply.ok:
            return NodeStatus(node, address, True, last_heard_ms=heard_ms, error=f"{reply.code}: {reply.message}",
                              raw=r)
        role = r.get("role_name", r.get("role"))
        return NodeStatus(
            id=node,
            address=address,
            up=True,
            role=str(role) if role is not None else None,
            epoch=r.get("epoch"),
            leader=r.get("leader"),
            last_index=r.get("last_index"),
            commit=r.get("commit"),
            applied=r.get("store_applied", r.get("applied")),
            last_heard_ms=heard_ms,
            raw=r,
        )

    # --- the retry loop ------------------------------------------------------

    def _check(self, op: str, args: dict[str, Any]) -> None:
        try:
            ClientRequest(1, op, args)
        except ValueError as e:
            raise Rejected("BAD_REQUEST", f"invalid {op} request ({e}); fix the arguments") from None

    def _run(self, op: str, args: dict[str, Any], *, is_write: bool, anywhere: bool = False) -> _Answer:
        """Attempt the (checked) request until an OK or final answer, or the deadline."""
        call = _Call(op, args, is_write, time.monotonic() + self.timeout_s)
        target = self._first_target(anywhere)
        hops = 0  # NOT_LEADER hints followed in a row, without a backoff
        while True:
            answer = self._attempt(call, target)
            if answer is not None and answer.code == Code.OK:
                return self._done(answer, anywhere)
            if answer is not None and _final(answer):
                raise self._refusal(answer)
            target, hops = self._next_target(target, self._hint(answer) if answer is not None else None, hops)
            if hops:
                continue
            answer = self._backoff(call)
            if answer is not None:
                return self._done(answer, anywhere)

    def _run_many(self, many: _Many, window: range) -> None:
        """Attempt the unanswered writes of `many` (one batch per attempt) until each has
        an OK or final answer, or the deadline. A final refusal is raised at the end."""
        deadline = time.monotonic() + self.timeout_s
        todo = {i for i in window if many.receipts[i] is None}
        sent: dict[int, int] = {}  # req_id of every attempt -> message position
        refused: dict[int, _Answer] = {}
        maybe_accepted = False  # some write reached a node without a final answer
        problem, failures, hops = "no node answered", 0, 0
        target = self._first_target(False)
        while todo:
            if time.monotonic() >= deadline:
                raise self._gave_up_many(many, todo, maybe_accepted, problem)
            current: set[int] = set()  # this attempt's req_ids not answered yet
            why = self._send_many_to(target, many, sorted(todo), sent, current,
                                     min(time.monotonic() + CONNECT_WAIT_S, deadline))
            hint = None
            if why:
                self._silent_since[target] = time.monotonic()
                problem = f"node {target}: {why}"
                maybe_accepted |= bool(current)
            else:
                until = min(time.monotonic() + self.attempt_timeout_s, deadline)
                for answer in self._answers_of(many, sent, current, todo, refused, until, whole=False):
                    problem = f"node {answer.node}: {answer.code} {answer.message}".rstrip()
                    maybe_accepted |= answer.code in _MAYBE_ACCEPTED
                    hint = self._hint(answer) or hint
                if any(sent[r] in todo for r in current):  # some of this attempt went unanswered
                    self._silent_since[target] = time.monotonic()
                    problem = f"node {target} did not answer within {self.attempt_timeout_s:g} s"
                    maybe_accepted = True
                else:
                    self._silent_since.pop(target, None)
            if not todo:
                break
            target, hops = self._next_target(target, hint, hops)
            if hops:
                continue
            cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**failures)
            failures += 1
            until = min(time.monotonic() + self._rng.uniform(cap / 2, cap), deadline)
            for answer in self._answers_of(many, sent, set(), todo, refused, until, whole=True):
                maybe_accepted |= answer.code in _MAYBE_ACCEPTED  # late answers still count
        if refused:
            raise self._refusal(refused[min(refused)])

    def _answers_of(self, many: _Many, sent: dict[int, int], current: set[int], todo: set[int],
                    refused: dict[int, _Answer], until: float, *, whole: bool) -> Iterator[_Answer]:
        """Take the replies to any attempt of `many` until `until` (or, unless `whole`,
        until every req_id of `current` is answered): an OK stores its receipt, a final
        answer is kept in `refused`; both end that message. Yields the other answers."""
        while todo and (whole or current):
            for node, reply in self._poll_replies(until):
                current.discard(reply.req_id)
                i = sent.get(reply.req_id)
                if i is None or i not in todo:
                    continue  # stale, or its message is already done
                answer = _answer_of(node, reply)
                if answer.code == Code.OK:
                    many.receipts[i] = _receipt(self._done(answer, False), many.args[i]["to"])
                    todo.discard(i)
                elif _final(answer):
                    refused[i] = answer
                    todo.discard(i)
                else:
                    yield answer
            if time.monotonic() >= until:
                return

    def _gave_up_many(self, many: _Many, todo: set[int], maybe_accepted: bool, problem: str) -> ClientError:
        seqs = sorted(many.args[i]["seq"] for i in todo)
        where = f"{len(seqs)} of {len(many.args)} writes (seqs {seqs[0]}..{seqs[-1]})"
        if maybe_accepted:
            return OutcomeUnknown(f"{where} got no answer within {self.timeout_s:g} s ({problem}); they may have "
                                  "been applied: retry the same call with the same client (safe), or check with a read")
        return Unavailable(f"no leader answered {where} within {self.timeout_s:g} s ({problem}); the cluster has no "
                           "quorum or is unreachable: check 'zrep client status' and retry")

    def _send_many_to(self, node: int, many: _Many, todo: list[int], sent: dict[int, int], current: set[int],
                      connect_by: float) -> str:
        """Send one attempt of the writes at positions `todo` (ClientBatch frames, or one
        ClientRequest for one write); '' on success, else why not all could leave.
        Every req_id that left is in `sent` and `current`."""
        reqs = [(self._new_req_id(), i) for i in todo]
        for at in range(0, len(reqs), MAX_BATCH_REQUESTS):
            for payload, part in self._frames_of(many, reqs[at:at + MAX_BATCH_REQUESTS]):
                why = self._send_payload(node, payload, connect_by)
                if why:
                    return why
                for r, i in part:
                    sent[r] = i
                    current.add(r)
        return ""

    def _frames_of(self, many: _Many, reqs: list[tuple[int, int]]) -> list[tuple[bytes, list[tuple[int, int]]]]:
        """(frame, its (req_id, position) pairs): `reqs` in runs that each fit in one frame
        (halved until they do)."""
        try:
            return [(self._encode([ClientRequest(r, Op.SEND, many.args[i]) for r, i in reqs]), reqs)]
        except Rejected:
            if len(reqs) == 1:
                raise
            half = len(reqs) // 2
            return self._frames_of(many, reqs[:half]) + self._frames_of(many, reqs[half:])

    def _encode(self, requests: list[ClientRequest]) -> bytes:
        frame = requests[0] if len(requests) == 1 else ClientBatch(tuple(requests))
        try:
            return codec.encode(frame, self.config.max_frame_bytes)
        except ValueError as e:
            raise Rejected("TOO_LARGE", f"cannot send the request: {e}; send less") from None

    def _done(self, answer: _Answer, anywhere: bool) -> _Answer:
        if not anywhere:  # a node that served a write or a linearizable read: start there next time,
            # or at the leader it names (a follower forwards; the leader answers with the replicas)
            leader = answer.result.get("leader")
            known = type(leader) is int and leader in self._addresses
            self._preferred = leader if known else answer.node
        return answer

    def _attempt(self, call: _Call, node: int) -> _Answer | None:
        """Send one attempt to `node` and wait for its answer (or any final one)."""
        now = time.monotonic()
        if now >= call.deadline:
            raise self._gave_up(call)
        req_id = self._new_req_id()
        problem = self._send_to(node, ClientRequest(req_id, call.op, call.args), min(now + CONNECT_WAIT_S, call.deadline))
        if problem:
            self._silent_since[node] = time.monotonic()
            call.last_problem = f"node {node}: {problem}"
            return None
        call.req_ids.add(req_id)
        call.current = req_id
        answer = self._await(call, min(time.monotonic() + self.attempt_timeout_s, call.deadline))
        call.current = 0
        if answer is None:
            self._silent_since[node] = time.monotonic()
            call.last_problem = f"node {node} did not answer within {self.attempt_timeout_s:g} s"
            call.maybe_accepted |= call.is_write
            return None
        self._silent_since.pop(answer.node, None)  # it answers again: first choice again
        if answer.code != Code.OK:
            call.last_problem = f"node {answer.node}: {answer.code} {answer.message}".rstrip()
            call.maybe_accepted |= call.is_write and answer.code in _MAYBE_ACCEPTED
        return answer

    def _backoff(self, call: _Call) -> _Answer | None:
        """Sleep with exponential backoff and full jitter, still accepting a late OK."""
        cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**call.failures)
        call.failures += 1
        until = min(time.monotonic() + self._rng.uniform(cap / 2, cap), call.deadline)
        answer = self._await(call, until)
        if answer is not None and answer.code != Code.OK:
            raise self._refusal(answer)
        return answer

    def _await(self, call: _Call, until: float) -> _Answer | None:
        """The answer of the current attempt, or a final answer of any attempt, or None at `until`."""
        while True:
            for node, reply in self._poll_replies(until):
                if reply.req_id not in call.req_ids:
                    continue  # a stale reply from an earlier call
                answer = _answer_of(node, reply)
                if reply.req_id == call.current or _final(answer):
                    return answer
            if time.monotonic() >= until:
                return None

    def _refusal(self, answer: _Answer) -> ClientError:
        where = f"node {answer.node}"
        if answer.code == "CLIENT_EXPIRED":
            return ClientExpired(
                f"{where}: the cluster forgot client id {self.client_id!r}; the outcome of write seq "
                f"{self._seq} is unknown: check with a read, then use a new client id"
            )
        if answer.code == "STALE_REQUEST":
            return OutcomeUnknown(f"{where}: write seq {self._seq} is older than this client's low mark; "
                                  "its outcome is unknown: check with a read")
        hint = "fix the request; retrying it cannot succeed"
        return Rejected(answer.code, f"{where} refused the request: {answer.code}: {answer.message}; {hint}")

    def _gave_up(self, call: _Call) -> ClientError:
        if call.maybe_accepted:
            return OutcomeUnknown(
                f"write seq {self._seq} got no answer within {self.timeout_s:g} s ({call.last_problem}); "
                "it may have been applied: retry with the same client (safe), or check with a read"
            )
        return Unavailable(
            f"no leader answered within {self.timeout_s:g} s ({call.last_problem}); the cluster has no "
            "quorum or is unreachable: check 'zrep client status' and retry"
        )

    def _hint(self, answer: _Answer) -> int | None:
        if answer.code != Code.NOT_LEADER:
            return None
        leader, rpc = answer.result.get("leader"), answer.result.get("rpc")
        if type(leader) is not int or leader < 1 or leader == answer.node:
            return None
        if leader not in self._addresses:
            if not isinstance(rpc, str) or not rpc:
                return None
            self._addresses[leader] = rpc  # a member our config does not list
        return leader

    def _next_target(self, target: int, hint: int | None, hops: int) -> tuple[int, int]:
        """Where the next attempt goes, and the hops taken on leader hints in a row (0: none,
        then back off first). A named leader is tried at once, at most once per node in a row."""
        if hint is not None and hops < len(self._addresses):
            self._preferred = hint
            return hint, hops + 1
        return self._next_node(target), 0

    def _first_target(self, anywhere: bool) -> int:
        if anywhere:  # any node may answer: spread the load
            return self._rng.choice(sorted(self._addresses))
        if self._preferred is not None and self._preferred in self._addresses:
            return self._preferred
        return min(self._addresses)  # deterministic: one wrong guess costs one NOT_LEADER hop

    def _next_node(self, node: int) -> int:
        """The next node in id order that never left an attempt unanswered, else
        the one that did so longest ago: a dead leader is not retried while a live
        follower, which forwards the write to whichever leader comes next, is."""
        ids = sorted(self._addresses)
        start = ids.index(node) + 1 if node in ids else 0
        order = [ids[(start + k) % len(ids)] for k in range(len(ids))]
        return min(order, key=lambda n: self._silent_since.get(n, -math.inf))

    # --- sockets -------------------------------------------------------------

    def _new_req_id(self) -> int:
        req_id = self._next_req_id
        self._next_req_id += 1
        return req_id

    def _socket(self, node: int) -> zmq.Socket:
        sock = self._sockets.get(node)
        if sock is None:
            if self._closed:
                raise ClientError("this client is closed; make a new one")
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a node we are not connected to
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            sock.setsockopt(zmq.ROUTING_ID, b"client-" + uuid.uuid4().hex[:16].encode())
            sock.connect(self._addresses[node])
            self._sockets[node] = sock
            self._node_of_socket[sock] = node
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _send_to(self, node: int, request: ClientRequest, connect_by: float) -> str:
        """Send one request; '' on success, else why it could not leave."""
        return self._send_payload(node, self._encode([request]), connect_by)

    def _send_payload(self, node: int, payload: bytes, connect_by: float) -> str:
        """Send one frame; '' on success, else why it could not leave."""
        sock = self._socket(node)
        while True:
            try:
                sock.send(payload, zmq.NOBLOCK)
                self._connected_once.add(node)
                return ""
            except zmq.Again:
                if node in self._connected_once:
                    # IMMEDIATE, and the connection we had is gone: the node is down
                    # or restarting. Waiting here would also leave other nodes'
                    # answers unread; move on.
                    return f"lost the connection to {self._addresses[node]}"
                # A fresh socket: wait briefly for its first connection.
                wait_ms = (connect_by - time.monotonic()) * 1000
                if wait_ms <= 0 or not sock.poll(max(1, int(wait_ms)), zmq.POLLOUT):
                    return f"cannot connect to {self._addresses[node]}"

    def _poll_replies(self, until: float) -> Iterator[tuple[int, ClientReply]]:
        """Replies that arrive before `until` (returns at the first batch)."""
        timeout_ms = max(0, int((until - time.monotonic()) * 1000 + 0.999))
        for sock, _ in self._poller.poll(timeout_ms):
            node = self._node_of_socket[sock]
            while True:
                try:
                    payload = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    frame = codec.decode(payload, self.config.max_frame_bytes)
                except DecodeError:
                    continue  # a garbled reply: the attempt times out and is retried
                if type(frame) is ClientReply:
                    yield node, frame
                elif type(frame) is ClientReplies:  # the answers to a ClientBatch
                    for reply in frame.replies:
                        yield node, reply

