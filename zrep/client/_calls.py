"""The public calls as sans-I/O steps, and the seq/low bookkeeping of one client id.

Job: turn `send`, `send_many`, `delete`, `read`, `mailboxes`, `status`,
`members` and `admin` into the generators of zrep.client._retry and zrep.client._batch, with the
(client id, seq, low) every write carries. Both the blocking Client and the
asyncio one hold one `Calls` and drive its steps; neither repeats this logic.

Invariants
- A write keeps its (client id, seq, low) through every retry of one call:
  the store applies it at most once and a retry gets the original answer.
- `seq` grows by one per write call (send_many: one per message, consecutive).
- `low` is the lowest seq this client may still wait for: the seq of the call
  itself, or of an older write still in flight (the asyncio client runs many
  at once), or of a kept OutcomeUnknown write (asyncio client only); for
  send_many the first seq of the window. Until this client id has had one
  answer from the store, `low` stays 1: the store admits an id it does not
  know only with low == 1 (else CLIENT_EXPIRED).
- A local refusal (a request the wire would refuse) spends no seq.
- The cluster file is a seed list: after a failover (a node went silent, or
  another leader was named) the next call that succeeds refreshes the member
  list from the leader's `members` answer: new members' addresses are added,
  changed ones followed (the links reconnect), removed members no longer tried. The answering node and the file's
  address of a member whose configuration names none are always kept. A
  refresh that fails changes nothing (and a principal refused `admin` stops
  asking).
- A membership change carries no (client, seq): retried after an attempt
  went unanswered, it may be refused because that attempt applied it ("is
  not a member"); the call then asks `members` and, if the configuration is
  what the change asked for, returns it as the change's answer.
- After `OutcomeUnknown`, or a write call abandoned midway (an asyncio task
  cancelled, Ctrl-C), a later write call with the same op and arguments is
  a retry: it reuses the seq(s), so it is applied at most once in all. The
  blocking client keeps only its last such write (the next other write forgets
  it, as its low moves past it); the asyncio client keeps up to UNKNOWN_KEPT.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from zrep.client._batch import SEND_MANY_WINDOW, Many, run_many
from zrep.client._errors import (
    ClientError,
    ClientExpired,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from zrep.client._results import (
    MailboxInfo,
    Membership,
    NodeStatus,
    ReadResult,
    Receipt,
    heard_by_peers,
    membership_of,
    node_status,
)
from zrep.client._retry import (
    CONNECT_WAIT_S,
    KNOWN_CLIENT_CODES,
    Answer,
    Call,
    Open,
    Route,
    Send,
    Steps,
    Wait,
    check,
    encode,
    receipt_of,
    run,
)
from zrep.config import ClusterConfig
from zrep.wire.client_messages import REFUSED as REFUSED_CODE
from zrep.wire.client_messages import ClientReply, ClientRequest, Code, Message, Op
from zrep.wire.client_messages import client_id as check_client_id

UNKNOWN_KEPT = 1024  # OutcomeUnknown writes an asyncio client keeps for their retry (oldest forgotten first)
MAX_MAILBOX_NAME_BYTES = 255  # the store's rule (zrep.store.store.StoreLimits.max_mailbox_name)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1: as zrep.store.commands.has_control
_GLOB = frozenset("*?[]")


def mailbox_name_problem(name: str) -> str:
    """'' for a name the store accepts, else its rule: what a node would answer BAD_MAILBOX,
    said before anything is sent."""
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if 1 <= size <= MAX_MAILBOX_NAME_BYTES and not _CONTROL.search(name) and _GLOB.isdisjoint(name):
        return ""
    what = "empty" if not name else f"{size} UTF-8 bytes" if size > MAX_MAILBOX_NAME_BYTES else "refused"
    return (f"mailbox name {name!r} is {what}: a name is 1..{MAX_MAILBOX_NAME_BYTES} UTF-8 bytes, without "
            "control characters or the glob characters *?[]")


def _check_name(name: object) -> None:
    if isinstance(name, str):
        problem = mailbox_name_problem(name)
        if problem:
            raise Rejected("BAD_REQUEST", f"{problem}; fix the name")  # refused here, as the wire checks are


class Calls:
    """One client id's calls as steps (see the module docstring).

    `concurrent`: several calls may be in flight at once (the asyncio client).
    """

    def __init__(self, config: ClusterConfig, client_id: str | None, timeout_s: float, attempt_timeout_s: float,
                 *, concurrent: bool) -> None:
        self.config = config
        self.client_id = client_id if client_id is not None else uuid.uuid4().hex
        check_client_id(self.client_id)  # ValueError: local misuse
        if timeout_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError("timeout_s and attempt_timeout_s must be > 0")
        self.route = Route({n.id: n.rpc for n in config.nodes}, timeout_s, attempt_timeout_s)
        self.seq = 0  # last seq used
        self._refresh_members = True  # False once the cluster refused this client `members`
        self.known = False  # the store has a record of this client id
        self._concurrent = concurrent
        self._inflight: set[int] = set()  # the first seq of every write call in progress
        self._unknown: dict[int, tuple[str, dict[str, Any]]] = {}  # seq -> write whose outcome is unknown
        self._unknown_many: dict[int, Many] = {}  # first seq -> send_many with unknown outcomes

    # --- writes --------------------------------------------------------------

    def send(self, to: str, body: bytes | str, sender: str, ack: str) -> Steps[Receipt]:
        _check_name(to)
        data = body.encode("utf-8") if isinstance(body, str) else body
        if len(data) > self.config.max_body_bytes:
            raise Rejected(
                "TOO_LARGE",
                f"body is {len(data)} bytes, the cluster's limit is {self.config.max_body_bytes}; send less",
            )
        answer = yield from self._write(Op.SEND, {"ack": ack, "sender": sender, "to": to, "body": data})
        return receipt_of(answer, to)

    def delete(self, mailbox: str, offsets: list[int] | tuple[int, ...]) -> Steps[list[int]]:
        _check_name(mailbox)
        answer = yield from self._write(Op.DELETE, {"ack": "majority", "mailbox": mailbox, "offsets": list(offsets)})
        return list(answer.result.get("deleted", sorted(offsets)))

    def send_many(self, to: str, bodies: Iterable[bytes | str], sender: str, ack: str) -> Steps[list[Receipt]]:
        _check_name(to)
        datas = [b.encode("utf-8") if isinstance(b, str) else b for b in bodies]
        if not datas:
            return []
        for data in datas:
            if len(data) > self.config.max_body_bytes:
                raise Rejected("TOO_LARGE", f"a body is {len(data)} bytes, the cluster's limit is "
                               f"{self.config.max_body_bytes}; send less")
        key = (to, sender, ack, tuple(datas))
        many = next((m for m in self._unknown_many.values() if m.key == key), None)
        retrying = many is not None
        if many is None:
            first = self.seq + 1
            floor = self._floor()
            # low: the first seq of each window (1 while the store does not know this client id)
            args = [{"client": self.client_id, "seq": first + i,
                     "low": min(first + i - i % SEND_MANY_WINDOW, floor)
                     if self.known or i >= SEND_MANY_WINDOW else 1,
                     "ack": ack, "sender": sender, "to": to, "body": data} for i, data in enumerate(datas)]
            for a in args:
                check(Op.SEND, a)  # before the seqs are spent: a local refusal changes nothing
            self.seq = first + len(args) - 1
            many = Many(key, args, [None] * len(args))
        first = many.args[0]["seq"]
        self._unknown_many.pop(first, None)
        self._forget_unknown()
        self._inflight.add(first)
        try:
            for start in range(0, len(many.args), SEND_MANY_WINDOW):
                window = range(start, min(start + SEND_MANY_WINDOW, len(many.args)))
                yield from run_many(self.route, many, window, self.client_id, self.config.max_frame_bytes)
        except ClientExpired as e:
            e.receipts = list(many.receipts)
            raise
        except OutcomeUnknown as e:
            self._keep(self._unknown_many, first, many)  # the same call again retries the unanswered ones
            e.receipts = list(many.receipts)
            raise
        except Unavailable as e:
            e.receipts = list(many.receipts)
            if not retrying:
                raise
            self._keep(self._unknown_many, first, many)
            unknown = OutcomeUnknown(f"{e}; earlier attempts of these writes may have been applied: retry with "
                                     "the same client (safe), or check with a read")
            unknown.receipts = e.receipts
            raise unknown from None
        except Rejected as e:
            self.known = self.known or e.code in KNOWN_CLIENT_CODES or any(many.receipts)
            e.receipts = list(many.receipts)
            raise
        except GeneratorExit:  # the call was abandoned (asyncio cancel, Ctrl-C): as OutcomeUnknown
            self._keep(self._unknown_many, first, many)
            raise
        finally:
            self._inflight.discard(first)
        self.known = True
        return [r for r in many.receipts if r is not None]

    def _write(self, op: str, args: dict[str, Any]) -> Steps[Answer]:
        full = self._retry_of(op, args)
        retrying = full is not None
        if full is None:
            seq = self.seq + 1
            full = {"client": self.client_id, "seq": seq, "low": min(seq, self._floor()) if self.known else 1, **args}
            check(op, full)  # before the seq is spent: a local refusal changes nothing
            self.seq = seq
        seq = full["seq"]
        self._unknown.pop(seq, None)
        self._forget_unknown()
        self._inflight.add(seq)
        try:
            answer = yield from run(self.route, Call(op, full, True, time.monotonic() + self.route.timeout_s),
                                    self.client_id, self.config.max_frame_bytes)
        except ClientExpired:
            raise
        except OutcomeUnknown:
            self._keep(self._unknown, seq, (op, full))  # the same call again is its retry
            raise
        except Unavailable as e:
            if not retrying:
                raise
            # This attempt reached no node, but an earlier one may have landed:
            # forgetting the seq now would let the next call apply it twice.
            self._keep(self._unknown, seq, (op, full))
            raise OutcomeUnknown(f"{e}; an earlier attempt of write seq {seq} may have been applied: "
                                 "retry with the same client (safe), or check with a read") from None
        except Rejected as e:
            self.known = self.known or e.code in KNOWN_CLIENT_CODES
            raise
        except GeneratorExit:  # the call was abandoned (asyncio cancel, Ctrl-C): as OutcomeUnknown
            self._keep(self._unknown, seq, (op, full))
            raise
        finally:
            self._inflight.discard(seq)
        self.known = True
        yield from self._after_failover()
        return answer

    def _retry_of(self, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """The request of a write that ended in OutcomeUnknown, if this call repeats it."""
        for last_op, last in self._unknown.values():
            if last_op == op and all(last[k] == v for k, v in args.items()):
                return last
        return None

    def _floor(self) -> float:
        """The lowest seq another call may still wait for (inf: none). A blocking client
        has no other call in flight, and its next write forgets the kept unknown one."""
        kept = (*self._unknown, *self._unknown_many) if self._concurrent else ()
        return min((*self._inflight, *kept), default=float("inf"))

    def _forget_unknown(self) -> None:
        """A blocking client's new write forgets the last unknown one: its low moves past it."""
        if not self._concurrent:
            self._unknown.clear()
            self._unknown_many.clear()

    def _keep(self, kept: dict[int, Any], seq: int, what: Any) -> None:
        kept[seq] = what
        while len(kept) > UNKNOWN_KEPT:
            del kept[next(iter(kept))]

    # --- reads ---------------------------------------------------------------

    def read(self, mailbox: str, after: int, limit: int, stale: bool) -> Steps[ReadResult]:
        _check_name(mailbox)
        op = Op.STALE_READ if stale else Op.READ
        args = {"mailbox": mailbox, "after": after, "limit": limit}
        check(op, args)
        answer = yield from self._read(op, args, anywhere=stale)
        rows = answer.result.get("messages", ())
        messages = [Message(int(o), str(s), bytes(b), int(i)) for o, s, b, i in rows]
        return ReadResult(messages, int(answer.result.get("applied", 0)), answer.node)

    def mailboxes(self, pattern: str) -> Steps[list[MailboxInfo]]:
        args = {"pattern": pattern}
        check(Op.MAILBOXES, args)
        answer = yield from self._read(Op.MAILBOXES, args, anywhere=False)
        return [MailboxInfo(str(row[0]), int(row[1]), int(row[2]) if len(row) > 2 else None)
                for row in answer.result.get("mailboxes", ())]

    def _read(self, op: str, args: dict[str, Any], *, anywhere: bool) -> Steps[Answer]:
        call = Call(op, args, False, time.monotonic() + self.route.timeout_s)
        answer = yield from run(self.route, call, self.client_id, self.config.max_frame_bytes, anywhere=anywhere)
        yield from self._after_failover()
        return answer

    # --- membership ----------------------------------------------------------

    def members(self) -> Steps[Membership]:
        """The configuration, as the leader sees it (with each member's lag and liveness):
        a follower's answer names the leader, which is then asked once."""
        view = yield from self._members(time.monotonic() + self.route.timeout_s)
        self._learn(view)
        return view

    def admin(self, op: str, node: int, rpc: str = "", pub: str = "", keys: Iterable[str] = (),
              force: bool = False) -> Steps[Membership]:
        """A membership change, answered once its configuration entry has committed."""
        args = {"op": op, "id": node, "rpc": rpc, "pub": pub, "keys": list(keys), "force": force}
        if op == "members":
            raise Rejected("BAD_REQUEST", "use members() to list the members")
        if op == "transfer" and node == 0:
            # Name the target first: a retry of "any voter" at the new leader would move it again.
            view = yield from self._members(time.monotonic() + self.route.timeout_s)
            ready = [m for m in view.members if m.role == "voter" and m.id != view.leader and m.state == "live"]
            if not ready:
                raise Rejected(REFUSED_CODE, "no other live voter to hand leadership over to")
            args["id"] = min(ready, key=lambda m: (m.lag or 0, m.id)).id
        check(Op.ADMIN, args)
        call = Call(Op.ADMIN, args, True, time.monotonic() + self.route.timeout_s)
        try:
            answer = yield from run(self.route, call, self.client_id, self.config.max_frame_bytes)
        except Rejected as e:
            if not call.maybe_accepted or e.code != Code.BAD_REQUEST:
                raise
            # An earlier attempt went unanswered (its leader may have applied it, then failed):
            # a retry refused as "already so" is that attempt's success.
            if self.route.preferred in self.route.silent_since:
                self.route.preferred = None  # not the node that went silent first
            view = yield from self._members(call.deadline + self.route.attempt_timeout_s)
            if not in_effect(view, args):
                raise
            self._learn(view)
            return view
        view = membership_of(answer.node, answer.result)
        self._learn(view)
        return view

    def _members(self, deadline: float) -> Steps[Membership]:
        args = {"op": "members", "id": 0, "rpc": "", "pub": "", "keys": [], "force": False}
        answer = yield from run(self.route, Call(Op.ADMIN, args, False, deadline), self.client_id,
                                self.config.max_frame_bytes)
        view = membership_of(answer.node, answer.result)
        if view.leader and view.leader != answer.node and view.leader in self.route.addresses:
            # route.done made the leader the first target: ask it once, briefly, for lag and liveness
            again = Call(Op.ADMIN, args, False, min(deadline, time.monotonic() + self.route.attempt_timeout_s))
            try:
                answer = yield from run(self.route, again, self.client_id, self.config.max_frame_bytes)
                view = membership_of(answer.node, answer.result)
            except (Unavailable, Rejected):
                pass  # the follower's view it is, without lag
        return view

    def _after_failover(self) -> Steps[None]:
        """After a failover, refresh the member list (best effort, one attempt's time)."""
        if not self.route.failover or not self._refresh_members:
            return
        self.route.failover = False
        try:
            view = yield from self._members(time.monotonic() + 2 * self.route.attempt_timeout_s)
        except Rejected as e:
            self._refresh_members = e.code != Code.FORBIDDEN  # a principal without the admin grant
            return
        except ClientError:  # the call itself succeeded: a failed refresh changes nothing
            return
        self._learn(view)

    def _learn(self, view: Membership) -> None:
        """Follow the configuration: add new members' addresses, stop trying removed ones."""
        if view.forming or not view.members:
            return
        addresses = self.route.addresses
        named = {m.id for m in view.members}
        for m in view.members:
            if m.rpc:
                addresses[m.id] = m.rpc  # a member the seed list does not name, or its new address
        for node in [n for n in addresses if n not in named and n != view.node]:
            del addresses[node]
            self.route.silent_since.pop(node, None)
            if self.route.preferred == node:
                self.route.preferred = None

    # --- status --------------------------------------------------------------

    def status(self, timeout_s: float) -> Steps[list[NodeStatus]]:
        """Ask every node at once, then wait once for all; silent for `timeout_s` = down."""
        addresses = self.route.addresses
        yield Open(tuple(sorted(addresses)))  # every connect starts now, so their waits overlap
        start = time.monotonic()
        sent: dict[int, int] = {}  # req_id -> node
        down: dict[int, str] = {}
        for node in sorted(addresses):
            req_id = self.route.new_req_id()
            payload = encode([ClientRequest(req_id, Op.STATUS, {})], self.config.max_frame_bytes)
            problem = yield Send(node, payload, (req_id,), start + min(timeout_s, CONNECT_WAIT_S))
            if problem:
                down[node] = problem
            else:
                sent[req_id] = node
        replies: dict[int, ClientReply] = {}
        deadline = start + timeout_s
        while sent and time.monotonic() < deadline:
            for node, reply in (yield Wait(deadline)):
                if sent.pop(reply.req_id, None) is not None:
                    replies[node] = reply
        for node in sent.values():
            down[node] = f"no answer within {timeout_s:g} s"
        forbidden = [reply for reply in replies.values() if not reply.ok and reply.code == Code.FORBIDDEN]
        if forbidden and len(forbidden) == len(replies):  # every node that answered refused this key
            raise Rejected(Code.FORBIDDEN, forbidden[0].message)
        heard = heard_by_peers(reply.result for reply in replies.values() if reply.ok)
        rows = [node_status(n, addresses[n], reply, heard.get(n)) for n, reply in replies.items()]
        rows += [NodeStatus(n, addresses[n], False, last_heard_ms=heard.get(n), error=why) for n, why in down.items()]
        return sorted(rows, key=lambda r: r.id)


def in_effect(view: Membership, args: dict[str, Any]) -> bool:
    """Whether the configuration `view` already is what the change `args` asked for."""
    op, m = args["op"], view.member(args["id"])
    if op == "remove":
        return m is None
    if m is None:
        return False
    if op == "add":
        return (m.rpc, m.pub) == (args["rpc"], args["pub"])
    if op == "update":
        return (m.rpc, m.pub) == (args["rpc"], args["pub"])
    return (m.role == "voter") == (op == "promote")
