"""The client op table: each client request becomes a Service call or an error reply.

Job: turn a decoded ClientRequest into `Service.submit_write` / `submit_read` /
`submit_admin` (or the node's status), refuse what cannot enter the log before it does, and
turn the Service's answers back into wire replies (`reply_for`, `ok_result`).

Invariants:
  * A command that would not fit in one Append frame is refused (TOO_LARGE)
    before it reaches the log: an entry too big to replicate would stall it.
  * An answer the wire schema refuses becomes a BAD_REQUEST reply; it never
    raises out of the loop.
  * Store refusals other than the wire's own codes travel as BAD_REQUEST with
    the store's code in result["reason"].
  * A membership change the leader judged and refused (its liveness or
    catch-up checks, one change at a time) is final for the client: it
    travels as BAD_REQUEST with reason REFUSED, never as a retryable
    UNAVAILABLE; a change that did not commit in time travels with reason
    CHANGE_UNKNOWN (it may still commit). NOT_LEADER names the leader's
    address from the configuration in force, then from the cluster file.
  * Only sends replies through the Transport; never touches the disk.
  * Counts each request and its answer (outcome, seconds) in NodeStats: plain
    integers, nothing a metrics scrape could make the loop wait on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zrep.config import ClusterConfig
from zrep.node.stats import NodeStats
from zrep.node.transport import Transport
from zrep.service.pending import Done
from zrep.service.service import Service
from zrep.store.commands import encode_delete, pack_send
from zrep.wire.client_messages import (
    CHANGE_UNKNOWN,
    MAX_MESSAGE_CHARS,
    REFUSED,
    ClientReply,
    ClientRequest,
    Code,
    error_reply,
    not_leader_reply,
    ok_reply,
)

COMMAND_HEADROOM_BYTES = 4096  # room around one command in an Append frame

# (client routing id, req_id, the request came in a ClientBatch, op, monotonic time it was taken)
Route = tuple[bytes, int, bool, str, float]

# Wire codes the node passes through as they are; any other refusal (the
# store's BAD_MAILBOX, NO_SUCH_MESSAGE, CLIENT_EXPIRED, ...) is BAD_REQUEST with
# the store's code in result["reason"].
_PASS_THROUGH = frozenset({Code.NO_LEADER, Code.TIMEOUT, Code.BAD_REQUEST, Code.TOO_LARGE, Code.UNAVAILABLE})
_HEADER_KEYS = ("ok", "error", "message")


def ok_result(result: dict[str, Any]) -> dict[str, Any] | None:
    """The result of the OK reply to a Service answer, None if the answer is an error."""
    if not result.get("ok"):
        return None
    extra = result.copy()  # the hot path: a store answer has no error or message
    del extra["ok"]
    if "error" in extra or "message" in extra:
        extra = {k: v for k, v in extra.items() if k not in _HEADER_KEYS}
    return extra


def reply_for(req_id: int, result: dict[str, Any], rpc_of: Callable[[int], str]) -> ClientReply:
    """The wire reply for a Service answer (a store answer or an error dict)."""
    ok = ok_result(result)
    if ok is not None:
        return ok_reply(req_id, ok)
    extra = {k: v for k, v in result.items() if k not in _HEADER_KEYS}
    code = result.get("error")
    message = str(result.get("message", ""))[:MAX_MESSAGE_CHARS]
    if code == Code.NOT_LEADER and result.get("leader"):
        return not_leader_reply(req_id, result["leader"], rpc_of(result["leader"]))
    if code == Code.NOT_LEADER:
        code = Code.NO_LEADER
    if code not in _PASS_THROUGH:
        extra["reason"] = code
        code = Code.BAD_REQUEST
    return error_reply(req_id, code, message, extra)


class Requests:
    """Client requests -> Service, and the Service's answers -> replies."""

    def __init__(self, cfg: ClusterConfig, service: Service, transport: Transport,
                 status: Callable[[], dict[str, Any]], stats: NodeStats) -> None:
        self.service = service
        self.transport = transport
        self._status = status
        self.stats = stats
        self._max_body_bytes = cfg.max_body_bytes
        self._max_command_bytes = cfg.max_frame_bytes - COMMAND_HEADROOM_BYTES
        self._rpc = {n.id: n.rpc for n in cfg.nodes}

    def on_request(self, ident: bytes, req: ClientRequest, batched: bool = False) -> None:
        op = req.op
        self.stats.took(op)
        _OPS[op](self, (ident, req.req_id, batched, op, time.monotonic()), req.args)

    def answer(self, done: Done) -> None:
        ident, req_id, batched, op, taken = done.route
        try:
            if op == "admin":
                done = Done(done.route, admin_result(done.result))
            ok = ok_result(done.result)
            if ok is not None:
                self.transport.reply_ok(ident, req_id, ok, batched)
                self.stats.answered(op, Code.OK, time.monotonic() - taken)
                return
            reply = reply_for(req_id, done.result, self.rpc_of)
        except ValueError as e:  # an answer the wire schema refuses: tell the client, keep serving
            reply = error_reply(req_id, Code.BAD_REQUEST, f"the answer cannot be sent: {e}"[:MAX_MESSAGE_CHARS])
        self.transport.reply(ident, reply, batched)
        self.stats.answered(op, reply.code, time.monotonic() - taken)

    def rpc_of(self, node_id: int) -> str:
        member = self.service.replica.config.member(node_id)  # a member added since the file was written
        return (member.rpc if member is not None else "") or self._rpc.get(node_id, "")

    def _refuse(self, route: Route, code: str, why: str) -> None:
        self.transport.reply(route[0], error_reply(route[1], code, why[:MAX_MESSAGE_CHARS]), route[2])
        self.stats.answered(route[3], code, time.monotonic() - route[4])

    def _write(self, route: Route, encode_command: Callable[[], bytes], ack: str, key: tuple[str, int]) -> None:
        try:
            cmd = encode_command()
        except (ValueError, TypeError, OverflowError) as e:
            self._refuse(route, Code.BAD_REQUEST, str(e))
            return
        if len(cmd) > self._max_command_bytes:
            # Refused before the log: an entry too big for an Append frame would stall replication.
            self._refuse(route, Code.TOO_LARGE, f"the command is {len(cmd)} bytes, over the "
                         f"{self._max_command_bytes} that fit in a frame; shorten names or body")
            return
        self.service.submit_write(route, cmd, ack_all=(ack == "all"), key=key)

    def _op_send(self, route: Route, a: dict[str, Any]) -> None:
        limit = self._max_body_bytes
        if len(a["body"]) > limit:
            self._refuse(route, Code.TOO_LARGE, f"body is {len(a['body'])} bytes, the limit is {limit}")
            return
        # The codec checked the args against the send schema (the command's rules).
        self._write(route, lambda: pack_send(a["client"], a["seq"], a["low"], a["sender"], a["to"], a["body"]),
                    a["ack"], (a["client"], a["seq"]))

    def _op_delete(self, route: Route, a: dict[str, Any]) -> None:
        self._write(route, lambda: encode_delete(a["client"], a["seq"], a["low"], a["mailbox"], list(a["offsets"])),
                    a["ack"], (a["client"], a["seq"]))

    def _op_read(self, route: Route, a: dict[str, Any]) -> None:
        query = {"op": "read", "mailbox": a["mailbox"], "after": a["after"], "limit": a["limit"]}
        self.service.submit_read(route, query)

    def _op_stale_read(self, route: Route, a: dict[str, Any]) -> None:
        query = {"op": "read", "mailbox": a["mailbox"], "after": a["after"], "limit": a["limit"]}
        self.service.submit_read(route, query, stale=True)

    def _op_mailboxes(self, route: Route, a: dict[str, Any]) -> None:
        self.service.submit_read(route, {"op": "mailboxes", "pattern": a["pattern"]})

    def _op_admin(self, route: Route, a: dict[str, Any]) -> None:
        # The codec checked the shape of each op's args; the leader judges the change.
        request = {"op": a["op"], "id": a["id"], "force": a["force"]}  # transfer: id 0 = any voter
        if a["op"] in ("add", "update"):
            request.update(rpc=a["rpc"], pub=a["pub"])
        if a["op"] == "add":
            request["keys"] = list(a["keys"])
        self.service.submit_admin(route, request)

    def _op_status(self, route: Route, a: dict[str, Any]) -> None:
        self.transport.reply(route[0], ok_reply(route[1], self._status()), route[2])
        self.stats.answered("status", Code.OK, time.monotonic() - route[4])


_OPS: dict[str, Callable[[Requests, Route, dict[str, Any]], None]] = {
    "send": Requests._op_send,
    "delete": Requests._op_delete,
    "read": Requests._op_read,
    "stale_read": Requests._op_stale_read,
    "mailboxes": Requests._op_mailboxes,
    "status": Requests._op_status,
    "admin": Requests._op_admin,
}


def admin_result(result: dict[str, Any]) -> dict[str, Any]:
    """A membership answer as the client must take it (see the module docstring)."""
    code = result.get("error")
    if code == Code.UNAVAILABLE:
        return {**result, "error": REFUSED}
    if code == Code.TIMEOUT:
        return {**result, "error": CHANGE_UNKNOWN}
    return result
