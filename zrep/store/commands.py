"""Client commands: the `data: bytes` of a log entry, encoded with msgpack.

Job: turn a client write into bytes for the log, and bytes from the log back
into a frozen command, strictly. Layouts (one msgpack array, nothing after it):

    send:   [1, client, seq, low, sender, to, body]
    delete: [2, client, seq, low, mailbox, [offset, ...]]

`client` is the client id (str, 1..128 UTF-8 bytes, no control characters),
`seq` the client's request number (1 <= seq < 2**63) and `low` the lowest
number it still waits an answer for (1 <= low <= seq). `sender`, `to` and
`mailbox` are str, `body` is bin (never str). Delete offsets are distinct ints
in 0..2**63-1, 1..MAX_DELETE_OFFSETS of them. An op code is a layout forever:
a new layout gets a new code, never a changed one.

Invariants: decoding is a pure function of the bytes, so every replica agrees
on whether an entry is a command; anything else (bool where an int is due,
extension types, trailing bytes, unknown op, wrong arity) raises DecodeError
and nothing else. Limits that depend on the store's configuration (body size,
mailbox names) are checked by the store, not here.

Must not import zmq, os, time, random, or any zrep module but errors.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable, NamedTuple

import msgpack

from zrep.errors import DecodeError

MAX_BODY_BYTES = 1 << 20  # default body limit; the Store makes it configurable
MAX_CLIENT_ID_BYTES = 128
MAX_DELETE_OFFSETS = 10_000  # bounds the work and the answer of one delete
MAX_SEQ = (1 << 63) - 1  # fits a msgpack int64 in every implementation

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

OP_SEND = 1
OP_DELETE = 2
# One Packer for every send the node encodes: msgpack.packb builds a new one per call
# (4x the cost). Not thread-safe: commands are packed by the one node loop thread.
_pack = msgpack.Packer(use_bin_type=True).pack


class SendCommand(NamedTuple):
    # NamedTuple, not a dataclass: immutable too, and made several times faster
    # (every replica decodes every entry it applies).
    client: str
    seq: int
    low: int
    sender: str
    to: str
    body: bytes


class DeleteCommand(NamedTuple):
    client: str
    seq: int
    low: int
    mailbox: str
    offsets: tuple[int, ...]


Command = SendCommand | DeleteCommand
# A SendCommand from a tuple of its six fields: one C call, where SendCommand(...) runs
# Python code (every replica decodes every entry it applies).
_send_of = partial(tuple.__new__, SendCommand)


def encode_send(client: str, seq: int, low: int, sender: str, to: str, body: bytes) -> bytes:
    """Encode a send; raises ValueError on what decode_command would reject."""
    return _encode(SendCommand(client, seq, low, sender, to, body))


def pack_send(client: str, seq: int, low: int, sender: str, to: str, body: bytes) -> bytes:
    """Encode a send whose fields already passed zrep.wire.client_messages' send schema,
    which mirrors decode_command's rules: no round trip (the node's hot path).
    Anything else must use encode_send."""
    return _pack([OP_SEND, client, seq, low, sender, to, body])


def encode_delete(client: str, seq: int, low: int, mailbox: str, offsets: list[int]) -> bytes:
    """Encode an all-or-nothing delete of `offsets` in `mailbox`; ValueError if malformed."""
    return _encode(DeleteCommand(client, seq, low, mailbox, tuple(offsets)))


def decode_command(data: bytes) -> Command:
    """Decode one command strictly; DecodeError on anything malformed."""
    fields = _unpack(data)
    if not fields or type(fields[0]) is not int or fields[0] not in _DECODERS:
        raise DecodeError("command: unknown or missing op code")
    arity, build = _DECODERS[fields[0]]
    if len(fields) != arity:
        raise DecodeError(f"command op {fields[0]}: expected {arity} fields, got {len(fields)}")
    return build(fields)


def command_key(data: bytes) -> tuple[str, int] | None:
    """(client, seq) of a well-formed command, else None (no-ops included).

    Cheap enough per applied entry: one msgpack unpack, no hashing. It returns
    a key exactly when decode_command succeeds, so a node never matches an
    entry the store will answer BAD_COMMAND to.
    """
    if not data:
        return None
    try:
        cmd = decode_command(data)
    except DecodeError:
        return None
    return (cmd.client, cmd.seq)


# --- decoding ---------------------------------------------------------------


def _unpack(data: bytes) -> list[Any]:
    if type(data) is not bytes:
        raise DecodeError("command: data must be bytes")
    try:
        # raw=False: str must be valid UTF-8; strict_map_key: no odd keys. The C
        # unpacker bounds nesting (StackError); RecursionError covers the
        # pure-Python fallback so both builds reject the same input.
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        # A fixed message: exception names differ between msgpack builds, answers must not.
        raise DecodeError("command: not exactly one valid msgpack value") from None
    if type(value) is not list:
        raise DecodeError("command: not a msgpack array")
    return value


def _client_fields(f: list[Any]) -> tuple[str, int, int]:
    client = _client_id(f[1])
    seq = _int(f[2], "seq", 1, MAX_SEQ)
    low = _int(f[3], "low", 1, seq)
    return client, seq, low


def _build_send(f: list[Any]) -> SendCommand:
    _, client, seq, low, sender, to, body = f
    # The common, well-formed case in one expression; anything else takes the
    # checks below, which name the first field at fault.
    if (type(client) is str and type(seq) is int and type(low) is int and type(sender) is str
            and type(to) is str and type(body) is bytes and 1 <= low <= seq <= MAX_SEQ
            and (client in _good_clients or _good_client(client))):
        return _send_of((client, seq, low, sender, to, body))
    client, seq, low = _client_fields(f)
    return SendCommand(client, seq, low, _str(f[4], "sender"), _str(f[5], "to"), _bytes(f[6], "body"))


# Client ids that passed _client_id's rule: every command of a client repeats its id, and
# the rule is a pure function of the str, so remembering a verdict changes no answer.
_good_clients: set[str] = set()
_GOOD_CLIENTS_MAX = 10_000  # then forgotten all at once: a bound on memory, not on correctness


def _good_client(client: str) -> bool:
    """_client_id's rule as a bool, remembering the ids that pass it."""
    if not (0 < len(client) and len(client.encode()) <= MAX_CLIENT_ID_BYTES and not _CONTROL.search(client)):
        return False
    if len(_good_clients) >= _GOOD_CLIENTS_MAX:
        _good_clients.clear()
    _good_clients.add(client)
    return True


def _build_delete(f: list[Any]) -> DeleteCommand:
    client, seq, low = _client_fields(f)
    return DeleteCommand(client, seq, low, _str(f[4], "mailbox"), _offsets(f[5]))


# op code -> (array length, builder): one row per layout.
_DECODERS: dict[int, tuple[int, Callable[[list[Any]], Command]]] = {
    OP_SEND: (7, _build_send),
    OP_DELETE: (6, _build_delete),
}


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    # type() rather than isinstance(): bool is an int subclass and must not pass.
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError(f"command: {what} must be an int in {lo}..{hi}")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise DecodeError(f"command: {what} must be a str")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"command: {what} must be bin (bytes)")
    return v


def _client_id(v: Any) -> str:
    s = _str(v, "client")
    if not s or len(s.encode()) > MAX_CLIENT_ID_BYTES or has_control(s):
        raise DecodeError(
            f"command: client must be 1..{MAX_CLIENT_ID_BYTES} UTF-8 bytes without control characters"
        )
    return s


def _offsets(v: Any) -> tuple[int, ...]:
    if type(v) is not list or not 1 <= len(v) <= MAX_DELETE_OFFSETS:
        raise DecodeError(f"command: offsets must be a list of 1..{MAX_DELETE_OFFSETS} ints")
    offsets = tuple(_int(o, "offset", 0, MAX_SEQ) for o in v)
    if len(set(offsets)) != len(offsets):
        raise DecodeError("command: offsets must be distinct")
    return offsets


def has_control(s: str) -> bool:
    """True if `s` holds a C0/C1 control character or DEL.

    Fixed code-point ranges, not str.isprintable(): the Unicode database
    changes between Python versions, and replicas must agree byte for byte.
    """
    return _CONTROL.search(s) is not None


# --- encoding ---------------------------------------------------------------


def _encode(cmd: Command) -> bytes:
    try:
        if isinstance(cmd, SendCommand):
            data = pack_send(*cmd)  # one definition of the send layout
        else:
            data = msgpack.packb([OP_DELETE, cmd.client, cmd.seq, cmd.low, cmd.mailbox, list(cmd.offsets)],
                                 use_bin_type=True)
        # Round-trip through the strict decoder: one definition of "valid".
        decode_command(data)
    except (DecodeError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"cannot encode command: {e}") from None
    return data
