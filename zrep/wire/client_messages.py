"""Client requests and replies: frozen dataclasses and the argument schema of every op.

Invariant: a `ClientRequest` or `ClientReply` that exists is valid. Its
`__post_init__` runs the checks below and raises ValueError (local misuse: a
bug or bad input in the caller). The codec decodes through the same checks, so
bad bytes from the network become `DecodeError` instead; the node answers
BAD_REQUEST and carries on.

Request args, per op (exactly these keys; ints are never bool):

| op         | args                                                                  |
|------------|-----------------------------------------------------------------------|
| send       | client, seq, low, ack, sender: str (may be ""), to: str, body: bytes  |
| delete     | client, seq, low, ack, mailbox: str,                                  |
|            | offsets: array of 1..MAX_DELETE_OFFSETS distinct ints in 0..2**63-1   |
| read       | mailbox: str, after: int -1..2**63-1 (offsets > after; -1 = all),     |
|            | limit: int 1..MAX_READ_LIMIT                                          |
| stale_read | as read; served from the local store, not confirmed by the leader     |
| mailboxes  | pattern: str (a glob; "*" = every mailbox)                            |
| status     | (none)                                                                |
| admin      | op: members / add / promote / demote / remove / update / transfer,    |
|            | id: int, rpc: str, pub: str, keys: array of str, force: bool          |

Write args: client: str of 1..MAX_CLIENT_ID_BYTES UTF-8 bytes without control
characters; seq: int 1..2**63-1; low: int 1..seq; ack: "majority" | "all".
`(client, seq)` names a write for exactly-once; `low` is the lowest seq the
client still waits for (answers below it may be forgotten). These mirror the
log command layout (zrep.store.commands), so a request that passes here always
encodes as a command. Other strings are only bounded here (MAX_NAME_CHARS, a
guard against abuse); the store judges names, senders and body sizes against
its configured limits and answers BAD_MAILBOX, BAD_SENDER or TOO_LARGE.

Admin args (a membership request, handed to zrep.service.membership): every key
is always present. `members` takes id 0, empty rpc, pub and keys, force false;
`add` an id 1..MAX_NODE_ID, its rpc and pub addresses and 0..MAX_ADMIN_KEYS keys;
`update` an id with rpc and pub and no keys; `promote`, `demote` and `remove` an
id, no addresses or keys, and may set `force` (skip the liveness checks only);
`transfer` (leadership) an id, or 0 for the most caught-up voter, and nothing else.

Reply: `ok` is True exactly when `code` is OK. With NOT_LEADER, `result` is
{"leader": int >= 1, "rpc": str ("" if this node does not know its address)};
when no leader is known the code is NO_LEADER. Other results are free-form:
str keys; values None, bool, int (int64), str, bytes, arrays (decoded as
tuples) and maps, nested at most MAX_RESULT_DEPTH deep. A map holds at most
MAX_MAP_KEYS keys (a decoder bound): return long collections as arrays.

Batches: a `ClientBatch` carries 1..MAX_BATCH_REQUESTS requests in one frame
and a `ClientReplies` 1..MAX_BATCH_REPLIES replies, to amortise the per-frame
costs (a zmq send and receive, a decode, a wake-up) of a pipelining client.
Each request in a batch is checked exactly as a single one; a decoded batch
holds a `BadRequest` in place of each request that failed, so the node answers
that one BAD_REQUEST with its own req_id and runs the others.

Imports only the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Mapping

MAX_UINT = 2**63 - 1  # msgpack can carry uint64, but we keep every int in int64
MIN_INT = -(2**63)
MAX_NAME_CHARS = 4096
MAX_CLIENT_ID_BYTES = 128  # as zrep.store.commands: a client id is part of every log command
MAX_DELETE_OFFSETS = 10_000  # as zrep.store.commands
MAX_MESSAGE_CHARS = 4096
MAX_TEXT_CHARS = 65536
MAX_READ_LIMIT = 10_000
MAX_RESULT_DEPTH = 8
MAX_MAP_KEYS = 1024  # the codec refuses bigger maps before building them
MAX_BATCH_REQUESTS = 1024  # requests per ClientBatch frame (and frame size: max_frame_bytes)
MAX_BATCH_REPLIES = 1024  # replies per ClientReplies frame
MAX_NODE_ID = 2**31 - 1  # as zrep.service.membership: a node id a configuration may name
MAX_ADMIN_KEYS = 8  # public keys one member may list
MAX_ADDRESS_CHARS = 256
ADMIN_OPS = ("members", "add", "promote", "demote", "remove", "update", "transfer")


class Op(StrEnum):
    SEND = "send"
    DELETE = "delete"
    READ = "read"
    STALE_READ = "stale_read"
    MAILBOXES = "mailboxes"
    STATUS = "status"
    ADMIN = "admin"


class Code(StrEnum):
    OK = "OK"
    NOT_LEADER = "NOT_LEADER"  # ask the leader named in result
    NO_LEADER = "NO_LEADER"  # none known now: retry later or elsewhere, with backoff
    TIMEOUT = "TIMEOUT"  # outcome unknown: retry with the same (client, seq)
    BAD_REQUEST = "BAD_REQUEST"  # the request itself is wrong: do not retry
    TOO_LARGE = "TOO_LARGE"  # body or frame over the cluster's limit
    UNAVAILABLE = "UNAVAILABLE"  # no majority reachable / node stopping
    FORBIDDEN = "FORBIDDEN"  # curve: the principal's grants do not allow it (the message says which)


# The store's refusals (zrep.store.store answers them in result["reason"]): nothing was
# applied, and retrying the same request cannot help.
BAD_COMMAND = "BAD_COMMAND"
BAD_MAILBOX = "BAD_MAILBOX"
BAD_SENDER = "BAD_SENDER"
TOO_LARGE = "TOO_LARGE"
NO_SUCH_MESSAGE = "NO_SUCH_MESSAGE"
STALE_REQUEST = "STALE_REQUEST"
CLIENT_EXPIRED = "CLIENT_EXPIRED"
TOO_MANY_IN_FLIGHT = "TOO_MANY_IN_FLIGHT"
# Membership answers (zrep.node.requests.admin_result), in result["reason"] as the store's are:
REFUSED = "REFUSED"  # the leader refused the change (liveness, catch-up, one at a time): the message says why
CHANGE_UNKNOWN = "CHANGE_UNKNOWN"  # the change did not commit in time: it may still; look before retrying
ERROR_CODES = frozenset(
    {BAD_COMMAND, BAD_MAILBOX, BAD_SENDER, TOO_LARGE, NO_SUCH_MESSAGE,
     STALE_REQUEST, CLIENT_EXPIRED, TOO_MANY_IN_FLIGHT}
)


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message, as a read returns it: one definition for the store and the client."""

    offset: int
    sender: str
    body: bytes
    index: int  # log index that applied the send


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1: as zrep.store.commands.has_control
WRITE_OPS = frozenset({Op.SEND, Op.DELETE})
ACK_LEVELS = frozenset({"majority", "all"})

Check = Callable[[object], None]  # raises ValueError with a short reason


# ---------------------------------------------------------------- value checks


def _show(v: object) -> str:
    text = repr(v)
    return (text[:40] + "...") if len(text) > 40 else text


def integer(minimum: int = 0, maximum: int = MAX_UINT) -> Check:
    def check(v: object) -> None:
        if type(v) is not int or not minimum <= v <= maximum:  # type() so bool is refused
            raise ValueError(f"expected an integer in {minimum}..{maximum}, got {_show(v)}")

    return check


def client_id(v: object) -> None:
    # Same rule as zrep.store.commands: fixed code-point ranges, never the Unicode database.
    if type(v) is str and 1 <= len(v.encode("utf-8", "surrogatepass")) <= MAX_CLIENT_ID_BYTES:
        if not _CONTROL.search(v):
            return
    raise ValueError(f"expected 1..{MAX_CLIENT_ID_BYTES} UTF-8 bytes without control characters, got {_show(v)}")


def offsets(v: object) -> None:
    if (type(v) is not tuple and type(v) is not list) or not 1 <= len(v) <= MAX_DELETE_OFFSETS:
        raise ValueError(f"expected an array of 1..{MAX_DELETE_OFFSETS} offsets, got {_show(v)}")
    for o in v:
        _is_offset(o)
    if len(set(v)) != len(v):
        raise ValueError("offsets must be distinct")


def text(max_chars: int, min_chars: int = 1) -> Check:
    def check(v: object) -> None:
        if type(v) is not str or not min_chars <= len(v) <= max_chars:
            raise ValueError(f"expected a string of {min_chars}..{max_chars} characters, got {_show(v)}")

    return check


def one_of(choices: frozenset[str]) -> Check:
    choices = frozenset(map(str, choices))  # plain strings, so errors print plainly

    def check(v: object) -> None:
        if not isinstance(v, str) or v not in choices:  # isinstance: a StrEnum member is fine
            raise ValueError(f"expected one of {sorted(choices)}, got {_show(v)}")

    return check


def blob(v: object) -> None:
    if type(v) is not bytes:
        raise ValueError(f"expected bytes, got {type(v).__name__}")


_is_offset = integer(0)

_WRITE_ARGS: dict[str, Check] = {
    "client": client_id,
    "seq": integer(1),
    "low": integer(1),
    "ack": one_of(ACK_LEVELS),
}
_READ_ARGS: dict[str, Check] = {
    "mailbox": text(MAX_NAME_CHARS),
    "after": integer(-1),
    "limit": integer(1, MAX_READ_LIMIT),
}

def admin_keys(v: object) -> None:
    if (type(v) is not tuple and type(v) is not list) or len(v) > MAX_ADMIN_KEYS:
        raise ValueError(f"expected an array of at most {MAX_ADMIN_KEYS} keys, got {_show(v)}")
    for k in v:
        if type(k) is not str or not 1 <= len(k) <= MAX_NAME_CHARS:
            raise ValueError(f"expected a key of 1..{MAX_NAME_CHARS} characters, got {_show(k)}")


def flag(v: object) -> None:
    if type(v) is not bool:
        raise ValueError(f"expected a boolean, got {_show(v)}")


def address(v: object) -> None:
    if type(v) is not str or len(v) > MAX_ADDRESS_CHARS or _CONTROL.search(v):
        raise ValueError(f"expected an address of at most {MAX_ADDRESS_CHARS} characters, got {_show(v)}")


_ADMIN_ARGS: dict[str, Check] = {
    "op": one_of(frozenset(ADMIN_OPS)),
    "id": integer(0, MAX_NODE_ID),
    "rpc": address,
    "pub": address,
    "keys": admin_keys,
    "force": flag,
}

OP_ARGS: dict[str, dict[str, Check]] = {
    Op.SEND: {**_WRITE_ARGS, "sender": text(MAX_NAME_CHARS, 0), "to": text(MAX_NAME_CHARS), "body": blob},
    Op.DELETE: {**_WRITE_ARGS, "mailbox": text(MAX_NAME_CHARS), "offsets": offsets},
    Op.READ: _READ_ARGS,
    Op.STALE_READ: _READ_ARGS,
    Op.MAILBOXES: {"pattern": text(MAX_NAME_CHARS)},
    Op.STATUS: {},
    Op.ADMIN: _ADMIN_ARGS,
}


def _low_not_above_seq(args: Mapping[str, Any]) -> None:
    if args["low"] > args["seq"]:
        raise ValueError(f"low ({args['low']}) is above seq ({args['seq']}): a client waits for its own request")


def _admin_shape(args: Mapping[str, Any]) -> None:
    """Each membership op takes exactly the args it uses; the others are empty."""
    op, node = args["op"], args["id"]
    if op == "transfer":
        pass  # 0: let the leader pick the most caught-up voter
    elif (op == "members") != (node == 0):
        raise ValueError(f"admin {op}: id must be {'0' if op == 'members' else 'a node id >= 1'}, got {node}")
    addresses = op in ("add", "update")
    if addresses and not (args["rpc"] and args["pub"]):
        raise ValueError(f"admin {op}: rpc and pub addresses are required")
    if not addresses and (args["rpc"] or args["pub"]):
        raise ValueError(f"admin {op}: takes no rpc or pub address")
    if op != "add" and args["keys"]:
        raise ValueError(f"admin {op}: takes no keys")
    if args["force"] and op not in ("promote", "demote", "remove"):
        raise ValueError(f"admin {op}: takes no force")


# Rules across several args, run after every arg passed its own check.
OP_RULES: dict[str, Callable[[Mapping[str, Any]], None]] = {
    Op.SEND: _low_not_above_seq,
    Op.DELETE: _low_not_above_seq,
    Op.ADMIN: _admin_shape,
}


def _send_well_formed(a: Mapping[str, Any]) -> bool:
    """True when send args (keys already exact) pass every check of OP_ARGS[SEND]
    and its rule: one expression for the common case. False sends them through
    the checks one by one, which name the arg at fault (and may still accept)."""
    client, seq, low, sender, to = a["client"], a["seq"], a["low"], a["sender"], a["to"]
    return (type(client) is str and type(seq) is int and type(low) is int and type(sender) is str
            and type(to) is str and type(a["body"]) is bytes and type(a["ack"]) is str and a["ack"] in ACK_LEVELS
            and 1 <= low <= seq <= MAX_UINT and len(sender) <= MAX_NAME_CHARS and 1 <= len(to) <= MAX_NAME_CHARS
            and 1 <= len(client.encode("utf-8", "surrogatepass")) <= MAX_CLIENT_ID_BYTES
            and not _CONTROL.search(client))


def _read_well_formed(a: Mapping[str, Any]) -> bool:
    """As _send_well_formed, for OP_ARGS[READ] (and STALE_READ)."""
    mailbox, after, limit = a["mailbox"], a["after"], a["limit"]
    return (type(mailbox) is str and type(after) is int and type(limit) is int
            and 1 <= len(mailbox) <= MAX_NAME_CHARS and -1 <= after <= MAX_UINT and 1 <= limit <= MAX_READ_LIMIT)


# Fast acceptance of the ops a busy client sends most; tests check each against the schema.
WELL_FORMED: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    Op.SEND: _send_well_formed,
    Op.READ: _read_well_formed,
    Op.STALE_READ: _read_well_formed,
}

# op -> (its arg names, its (name, check) pairs, its cross-arg rule, its fast acceptance):
# plain str keys, built once, because check_args runs on every request a node receives.
_SCHEMAS: dict[str, tuple[Any, tuple[tuple[str, Check], ...], Callable[[Mapping[str, Any]], None] | None,
                          Callable[[Mapping[str, Any]], bool] | None]] = {
    str(op): ({k: None for k in schema}.keys(), tuple(schema.items()), OP_RULES.get(op), WELL_FORMED.get(op))
    for op, schema in OP_ARGS.items()
}


def check_args(op: object, args: object) -> None:
    """Raise ValueError unless `args` is exactly the schema of `op`."""
    schema = _SCHEMAS.get(op) if isinstance(op, str) else None
    if schema is None:
        raise ValueError(f"op: expected one of {[str(o) for o in Op]}, got {_show(op)}")
    names, checks, rule, well_formed = schema
    if type(args) is not dict:
        raise ValueError(f"args: expected a map, got {type(args).__name__}")
    if args.keys() != names:
        missing, extra = names - args.keys(), args.keys() - names
        raise ValueError(f"{op} args: missing {sorted(missing)}, unexpected {sorted(map(str, extra))}")
    if well_formed is not None and well_formed(args):
        return
    key = ""
    try:
        for key, check in checks:
            check(args[key])
    except ValueError as e:
        raise ValueError(f"{op} args.{key}: {e}") from None
    if rule is not None:
        rule(args)


_is_req_id = integer(1)
_is_reply_id = integer()


def check_request(req_id: object, op: object, args: object) -> None:
    try:
        _is_req_id(req_id)
    except ValueError as e:
        raise ValueError(f"req_id: {e}") from None
    check_args(op, args)


_ALWAYS_PLAIN = frozenset({bool, bytes, type(None)})  # scalars check_result accepts whatever their value


def check_result(value: object, depth: int = 0) -> None:
    """Raise ValueError unless `value` is a free-form result value (see the module docstring)."""
    t = type(value)
    if t in _ALWAYS_PLAIN:
        return
    if t is int:
        if not MIN_INT <= value <= MAX_UINT:  # type: ignore[operator]
            raise ValueError(f"integer {_show(value)} is outside int64")
        return
    if t is str:
        if len(value) > MAX_TEXT_CHARS:  # type: ignore[arg-type]
            raise ValueError(f"string longer than {MAX_TEXT_CHARS} characters")
        return
    if depth >= MAX_RESULT_DEPTH:  # checked before recursing: never a RecursionError
        raise ValueError(f"nested deeper than {MAX_RESULT_DEPTH}")
    if t is list or t is tuple:
        _check_items(value, depth)  # type: ignore[arg-type]
        return
    if t is dict:
        if len(value) > MAX_MAP_KEYS:  # type: ignore[arg-type]
            raise ValueError(f"map of {len(value)} keys is over {MAX_MAP_KEYS}: use an array")  # type: ignore[arg-type]
        for k in value:  # type: ignore[attr-defined]
            if type(k) is not str:
                raise ValueError(f"map key {_show(k)} is not a string")
        _check_items(value.values(), depth)  # type: ignore[attr-defined]
        return
    raise ValueError(f"{t.__name__} is not allowed in a result")


def _check_items(items: Any, depth: int) -> None:
    """check_result of each item, with the common scalars checked inline (a node
    checks every answer it sends): only containers and refusals recurse."""
    for item in items:
        t = type(item)
        if t is int:
            if MIN_INT <= item <= MAX_UINT:
                continue
        elif t is str:
            if len(item) <= MAX_TEXT_CHARS:
                continue
        elif t in _ALWAYS_PLAIN:
            continue
        check_result(item, depth + 1)  # a container, or a scalar it refuses with the reason


def _string(v: object, max_chars: int) -> None:
    """Like text() but may be empty: for messages and unknown addresses."""
    if type(v) is not str or len(v) > max_chars:
        raise ValueError(f"expected a string of at most {max_chars} characters, got {_show(v)}")


_NOT_LEADER_RESULT: dict[str, Check] = {"leader": integer(1), "rpc": lambda v: _string(v, MAX_NAME_CHARS)}


_is_code = one_of(frozenset(Code))


def check_reply(req_id: object, ok: object, code: object, message: object, result: object) -> None:
    try:
        _is_reply_id(req_id)
    except ValueError as e:
        raise ValueError(f"req_id: {e}") from None
    if type(ok) is not bool:
        raise ValueError(f"ok: expected a boolean, got {_show(ok)}")
    _is_code(code)
    if ok != (code == Code.OK):
        raise ValueError(f"ok={ok} contradicts code {code}")
    _string(message, MAX_MESSAGE_CHARS)
    if type(result) is not dict:
        raise ValueError(f"result: expected a map, got {type(result).__name__}")
    check_result(result)
    if code == Code.NOT_LEADER:
        if result.keys() != _NOT_LEADER_RESULT.keys():
            raise ValueError(f"NOT_LEADER result must have exactly {sorted(_NOT_LEADER_RESULT)}")
        for key, check in _NOT_LEADER_RESULT.items():
            check(result[key])


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's command. `req_id` (>= 1) matches the reply; it is per connection,
    unlike `(client, seq)` in write args, which names the write for exactly-once.
    Do not mutate `args` after construction: it was checked then."""

    req_id: int
    op: str
    args: dict[str, Any]

    def __post_init__(self) -> None:
        check_request(self.req_id, self.op, self.args)


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The answer to the request with the same `req_id` (0: the request could not be read)."""

    req_id: int
    ok: bool
    code: str
    message: str
    result: dict[str, Any]

    def __post_init__(self) -> None:
        check_reply(self.req_id, self.ok, self.code, self.message, self.result)


def check_ok_reply(req_id: object, result: object) -> None:
    """The checks of ClientReply(req_id, True, Code.OK, "", result), less those of the
    fields that are constant: a node runs them on every answer, so this is its hot path."""
    if type(req_id) is not int or not 0 <= req_id <= MAX_UINT:
        raise ValueError(f"req_id: expected an integer in 0..{MAX_UINT}, got {_show(req_id)}")
    if type(result) is not dict:
        raise ValueError(f"result: expected a map, got {type(result).__name__}")
    check_result(result)


def ok_reply(req_id: int, result: dict[str, Any] | None = None) -> ClientReply:
    """ClientReply(req_id, True, Code.OK, "", result), checked by check_ok_reply."""
    result = result if result is not None else {}
    check_ok_reply(req_id, result)
    reply = _new(ClientReply)
    _set_req_id(reply, req_id)
    _set_ok(reply, True)
    _set_code(reply, Code.OK)
    _set_message(reply, "")
    _set_result(reply, result)
    return reply


_new = object.__new__
# The slots' own setters (a frozen dataclass refuses setattr): half the cost of object.__setattr__.
_set_req_id, _set_ok, _set_code, _set_message, _set_result = (
    getattr(ClientReply, name).__set__ for name in ("req_id", "ok", "code", "message", "result"))


def error_reply(req_id: int, code: str, message: str, result: dict[str, Any] | None = None) -> ClientReply:
    return ClientReply(req_id, False, code, message, result if result is not None else {})


def not_leader_reply(req_id: int, leader: int, rpc: str) -> ClientReply:
    return error_reply(req_id, Code.NOT_LEADER, f"node {leader} is the leader", {"leader": leader, "rpc": rpc})


# ---------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request of a decoded ClientBatch that failed its checks (never encoded):
    the node answers it BAD_REQUEST with `message`; req_id 0 if unreadable."""

    req_id: int
    message: str


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """Several requests in one frame; each is answered on its own, by req_id.
    A decoded batch may hold BadRequest items (see the module docstring)."""

    requests: tuple[ClientRequest | BadRequest, ...]

    def __post_init__(self) -> None:
        check_batch(self.requests, ClientRequest, MAX_BATCH_REQUESTS)


@dataclass(frozen=True, slots=True)
class ClientReplies:
    """Several replies in one frame: a node answers a batching client this way."""

    replies: tuple[ClientReply, ...]

    def __post_init__(self) -> None:
        check_batch(self.replies, ClientReply, MAX_BATCH_REPLIES)


def check_batch(items: object, cls: type, most: int) -> None:
    if type(items) is not tuple or not 1 <= len(items) <= most:
        raise ValueError(f"expected a tuple of 1..{most} {cls.__name__}, got {_show(items)}")
    for item in items:
        if type(item) is not cls:
            raise ValueError(f"expected {cls.__name__} items, got {type(item).__name__}")
