"""The message store: zrep's replicated state machine.

Job: apply committed log entries, in log order, to mailboxes of messages and
to a table of client answers (exactly once), and serve reads, a digest and
snapshots.

Invariants
- Pure and deterministic. The state after applying entries 1..n is a function
  of their data alone: no clock, randomness, I/O, floats, Unicode-database
  lookups, or iteration in hash order. Snapshots list everything in a fixed
  order, so two replicas that applied the same log have byte-identical
  `to_bytes()` and the same `digest()`.
- `apply` never raises because of a command: every entry but a no-op gets an
  answer dict built only of str/int/bytes/bool/list/dict/None. It raises
  InvariantError only when its caller breaks the contract (an index that is
  not applied_index + 1, data that is not bytes): a node bug, it must stop.
- Offsets in a mailbox start at 0, follow the order of application and are
  never reused; a delete leaves a hole. Deletes are all-or-nothing.
- Exactly once. Per client the store keeps the answers of seq >= low (the
  lowest seq the client still waits for, the highest `low` seen so far). A
  command whose answer is kept gets that answer and changes nothing; one below
  `low` gets STALE_REQUEST and changes nothing. Refusals that apply nothing
  (BAD_COMMAND, STALE_REQUEST, CLIENT_EXPIRED, TOO_MANY_IN_FLIGHT) are not
  kept; every other answer, errors included, is kept.
- Bounded memory for clients. At most `max_clients` clients and about
  `max_answer_bytes` of kept answers; past either bound the least recently
  used client (by log index of its last applied command) is evicted and its
  id goes to a FIFO of the last `max_expired` evicted ids. A client id unknown
  to the table is admitted only if it is not in that FIFO and its command has
  low == 1 (a fresh client still waiting for its first answer); otherwise it
  gets CLIENT_EXPIRED, so a retry after eviction is refused, never applied
  twice. Residual risk: a client still waiting for seq 1 whose id was evicted
  and then pushed out of the FIFO by `max_expired` later evictions would be
  admitted again and its retry re-applied.
- The limits are part of the state machine (they decide answers), so every
  member must run with the same ones; they travel in snapshots.

Must not import zmq, os, time, random, socket, threading, or any zrep module
but commands, errors, the wire vocabulary, and its own mailbox and image modules.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable

import msgpack

from zrep.core.membership import CONFIG_MARK
from zrep.errors import DecodeError, InvariantError
from zrep.store.commands import (
    MAX_BODY_BYTES,
    Command,
    DeleteCommand,
    SendCommand,
    decode_command,
    has_control,
)
from zrep.store.image import read_image, write_image
from zrep.store.mailbox import ANSWER_OVERHEAD, ClientRecord, Mailbox
from zrep.wire.client_messages import (  # the client-protocol vocabulary the store implements
    BAD_COMMAND,
    BAD_MAILBOX,
    BAD_SENDER,
    CLIENT_EXPIRED,
    MAX_READ_LIMIT,
    NO_SUCH_MESSAGE,
    STALE_REQUEST,
    TOO_LARGE,
    TOO_MANY_IN_FLIGHT,
    Message,
)

_GLOB = frozenset("*?[]")
_CHAIN_START = bytes(32)
# One Packer for every kept answer: msgpack.packb builds a new one per call (4x the
# cost). A Packer is not thread-safe; a store, like the node loop, is single-threaded.
_pack = msgpack.Packer(use_bin_type=True).pack

Answer = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The rules the state machine enforces; identical on every member."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_clients: int = 10_000
    max_mailbox_name: int = 255  # UTF-8 bytes
    max_inflight: int = 4096  # kept answers per client
    max_answer_bytes: int = 64 << 20  # kept answers, all clients
    max_expired: int = 100_000  # evicted client ids remembered

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            low = 0 if f.name == "max_expired" else 1
            if type(v) is not int or v < low:
                raise ValueError(f"store limit {f.name} must be an int >= {low}, got {v!r}")


class Store:
    """The replicated message store. See the module docstring for its rules."""

    _last_key: tuple[str, int] | None = None  # not state: only what the last apply() decoded

    def __init__(
        self,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_clients: int = 10_000,
        max_mailbox_name: int = 255,
        max_inflight: int = 4096,
        max_answer_bytes: int = 64 << 20,
        max_expired: int = 100_000,
    ) -> None:
        self._limits = StoreLimits(
            max_body_bytes, max_clients, max_mailbox_name, max_inflight, max_answer_bytes, max_expired
        )
        self._applied = 0
        self._chain = _CHAIN_START
        self._boxes: dict[str, Mailbox] = {}
        self._clients: OrderedDict[str, ClientRecord] = OrderedDict()  # least recently used first
        self._answer_bytes = 0
        self._expired: deque[str] = deque()  # evicted ids, oldest first
        self._expired_set: set[str] = set()
        self._config = b""  # data of the last configuration entry applied (b"": none yet)

    # --- applying -----------------------------------------------------------

    def apply(self, index: int, data: bytes) -> Answer | None:
        """Apply log entry `index`; None for a no-op (b""), else its answer: a fresh
        dict the caller may change (the store keeps a packed copy)."""
        if type(index) is not int or index != self._applied + 1:
            raise InvariantError(
                f"store: entry {index!r} applied after index {self._applied}; entries must be applied in order"
            )
        if type(data) is not bytes:
            raise InvariantError(f"store: entry {index} data is {type(data).__name__}, not bytes")
        self._chain = _chain(self._chain, index, data)
        self._applied = index
        self._last_key = None
        if not data:
            return None
        if data[:1] == CONFIG_MARK:
            self._config = data  # membership is the core's business; the snapshot carries it
            return None
        try:
            cmd = decode_command(data)
        except DecodeError as e:
            return _error(BAD_COMMAND, str(e))
        self._last_key = (cmd.client, cmd.seq)
        return self._execute(index, cmd)

    def apply_run(self, entries: Iterable[tuple[int, int, bytes]]) -> None:
        """`apply` each (epoch, index, data) entry in turn, dropping the answers (the
        store keeps its own copies): rebuilding a store at start, where nobody waits for them."""
        apply = self.apply
        for _, index, data in entries:
            apply(index, data)

    @property
    def config_entry(self) -> bytes:
        """The data of the last configuration entry applied (b"" if none): a snapshot of
        this store carries the cluster's membership as of its index."""
        return self._config

    @property
    def last_key(self) -> tuple[str, int] | None:
        """(client, seq) of the command `apply` just applied; None for a no-op or garbage.
        Lets a node match the entry to its waiting client without decoding it again."""
        return self._last_key

    def _execute(self, index: int, cmd: Command) -> Answer:
        client = self._clients.get(cmd.client)
        if client is None:
            if cmd.client in self._expired_set or cmd.low != 1:
                return _error(CLIENT_EXPIRED, "client id unknown or expired; outcome of its pending "
                              "requests is unknown; use a new client id")
            client = self._clients[cmd.client] = ClientRecord(cmd.low)  # appended: most recently used
        else:
            kept = client.answers.get(cmd.seq)
            if kept is not None:
                return _unpack_answer(kept)
            if cmd.seq < client.low:
                return _error(STALE_REQUEST, f"seq {cmd.seq} is below the client's low {client.low}; "
                              "its answer was forgotten and it was not applied now")
            self._forget_below(client, cmd.low)
            self._clients.move_to_end(cmd.client)
        client.last_index = index
        if len(client.answers) >= self._limits.max_inflight:
            return _error(TOO_MANY_IN_FLIGHT, f"client already has {self._limits.max_inflight} answers "
                          "kept; not applied, raise low and retry")
        answer = _HANDLERS[type(cmd)](self, index, cmd)
        self._keep(client, cmd.seq, answer)
        if len(self._clients) > self._limits.max_clients or self._answer_bytes > self._limits.max_answer_bytes:
            self._evict()  # rarely: checked here so the common apply skips a call
        return answer

    def _apply_send(self, index: int, cmd: SendCommand) -> Answer:
        box = self._boxes.get(cmd.to)  # an existing mailbox's name was checked when it was made
        if box is None or cmd.sender or len(cmd.body) > self._limits.max_body_bytes:  # else all is known good
            problem = ((box is None and self._check_name(cmd.to)) or
                       (cmd.sender and self._check_sender(cmd.sender)) or self._check_body(cmd.body))
            if problem:
                return problem
        if box is None:
            box = self._boxes[cmd.to] = Mailbox()
        # Interning shares one str among the many messages of one sender.
        offset = box.append(sys.intern(cmd.sender), cmd.body, index)
        return {"ok": True, "mailbox": cmd.to, "offset": offset, "index": index}

    def _apply_delete(self, index: int, cmd: DeleteCommand) -> Answer:
        problem = self._check_name(cmd.mailbox)
        if problem is not None:
            return problem
        box = self._boxes.get(cmd.mailbox)
        offsets = sorted(cmd.offsets)
        # All or nothing: check every offset before touching any.
        for o in offsets:
            if box is None or not box.is_live(o):
                return _error(NO_SUCH_MESSAGE, f"offset {o} does not exist or is already deleted; "
                              "nothing was deleted")
        for o in offsets:
            box.delete(o)
        box.trim()
        return {"ok": True, "deleted": offsets}

    def _check_name(self, name: str) -> Answer | None:
        limit = self._limits.max_mailbox_name
        # Glob metacharacters are refused so that a name used as a pattern matches itself only.
        if not name or _utf8_len(name, limit) > limit or has_control(name) or not _GLOB.isdisjoint(name):
            return _error(BAD_MAILBOX, f"mailbox name must be 1..{limit} UTF-8 bytes, without control "
                          "characters or glob metacharacters *?[]")
        return None

    def _check_sender(self, sender: str) -> Answer | None:
        limit = self._limits.max_mailbox_name
        if _utf8_len(sender, limit) > limit or has_control(sender):
            return _error(BAD_SENDER, f"sender must be 0..{limit} UTF-8 bytes without control characters")
        return None

    def _check_body(self, body: bytes) -> Answer | None:
        limit = self._limits.max_body_bytes
        if len(body) > limit:
            return _error(TOO_LARGE, f"body is {len(body)} bytes, the limit is {limit}")
        return None

    # --- the exactly-once table ---------------------------------------------

    def _keep(self, client: ClientRecord, seq: int, answer: Answer) -> None:
        packed = _pack(answer)
        client.answers[seq] = packed
        heapq.heappush(client.seqs, seq)
        cost = len(packed) + ANSWER_OVERHEAD
        client.cost += cost
        self._answer_bytes += cost

    def _forget_below(self, client: ClientRecord, low: int) -> None:
        if low <= client.low:
            return  # out-of-order arrival: an older command carries an older low
        client.low = low
        while client.seqs and client.seqs[0] < low:
            cost = len(client.answers.pop(heapq.heappop(client.seqs))) + ANSWER_OVERHEAD
            client.cost -= cost
            self._answer_bytes -= cost

    def _evict(self) -> None:
        lim = self._limits
        # len > 1: the client just served is the most recently used and always stays,
        # even if its own answers alone exceed the byte budget (max_inflight bounds them).
        while len(self._clients) > 1 and (
            len(self._clients) > lim.max_clients or self._answer_bytes > lim.max_answer_bytes
        ):
            cid, client = self._clients.popitem(last=False)
            self._answer_bytes -= client.cost
            self._bury(cid)

    def _bury(self, cid: str) -> None:
        if self._limits.max_expired == 0:
            return
        self._expired.append(cid)
        self._expired_set.add(cid)
        if len(self._expired) > self._limits.max_expired:
            self._expired_set.discard(self._expired.popleft())

    def cached_answer(self, client: str, seq: int) -> Answer | None:
        """The kept answer of (client, seq), or None: lets a node answer a retry without a log entry."""
        record = self._clients.get(client)
        kept = None if record is None else record.answers.get(seq)
        return None if kept is None else _unpack_answer(kept)

    # --- queries --------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def limits(self) -> StoreLimits:
        return self._limits

    def read(self, mailbox: str, after: int = -1, limit: int = 100) -> list[Message]:
        """Live messages with offset > after, ascending, at most min(limit, MAX_READ_LIMIT)."""
        box = self._boxes.get(mailbox)
        limit = min(limit, MAX_READ_LIMIT)
        if box is None or limit <= 0:
            return []
        out: list[Message] = []
        for m in box.messages(after):
            out.append(m)
            if len(out) == limit:
                break
        return out

    def read_rows(self, mailbox: str, after: int = -1, limit: int = 100) -> list[list[Any]]:
        """`read` as the wire's rows [offset, sender, body, index], straight from the
        columns: no Message object per row (a node answers every read this way)."""
        box = self._boxes.get(mailbox)
        limit = min(limit, MAX_READ_LIMIT)
        if box is None or limit <= 0:
            return []
        rows: list[list[Any]] = []
        base, bodies, senders, indexes = box.base, box.bodies, box.senders, box.indexes
        for p in range(max(after + 1 - base, box.head), len(bodies)):
            body = bodies[p]
            if body is not None:
                rows.append([base + p, senders[p], body, indexes[p]])
                if len(rows) == limit:
                    break
        return rows

    def count(self, mailbox: str) -> int:
        box = self._boxes.get(mailbox)
        return 0 if box is None else box.live

    def body_bytes(self) -> int:
        """Body bytes of the live messages in all mailboxes (kept as they change: O(mailboxes))."""
        return sum(b.bytes for b in self._boxes.values())

    def mailbox_count(self) -> int:
        return len(self._boxes)

    def message_count(self) -> int:
        """Live messages in all mailboxes (one sum over the mailboxes, not the messages)."""
        return sum(b.live for b in self._boxes.values())

    def mailboxes(self, pattern: str = "*") -> list[tuple[str, int]]:
        """(name, live count) of every mailbox ever sent to whose name matches the glob, sorted by name.

        A mailbox whose messages are all deleted is still listed (count 0): it
        keeps its next offset, since offsets are never reused.
        """
        return [(name, count) for name, count, _ in self.mailbox_rows(pattern)]

    def mailbox_rows(self, pattern: str = "*") -> list[list[Any]]:
        """[name, live count, live body bytes] of each mailbox `mailboxes` lists, in the same order."""
        return [[n, b.live, b.bytes] for n, b in sorted(self._boxes.items()) if fnmatchcase(n, pattern)]

    def digest(self) -> str:
        """Hex blake2b chained over (index, data) of every applied entry, no-ops included.

        It fingerprints the applied log, O(1) to read: equal digests mean the
        same entries were applied, hence (by determinism) the same state.
        """
        return self._chain.hex()

    # --- snapshots ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A deterministic snapshot: equal stores give equal bytes (layout: zrep.store.image)."""
        return write_image(self)

    @classmethod
    def from_bytes(cls, data: bytes, start: int = 0) -> Store:
        """Restore a snapshot made by to_bytes, held in data[start:] (a snapshot file's body
        is read in place: no copy of it); DecodeError if it is malformed."""
        try:
            return read_image(cls, data, start)
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException, RecursionError) as e:
            raise DecodeError(f"store snapshot: malformed ({type(e).__name__}: {e})") from None


_HANDLERS: dict[type, Callable[[Store, int, Any], Answer]] = {
    SendCommand: Store._apply_send,
    DeleteCommand: Store._apply_delete,
}


def _error(code: str, message: str) -> Answer:
    return {"ok": False, "error": code, "message": message}


def _unpack_answer(packed: bytes) -> Answer:
    # A fresh dict each time: a caller mutating it cannot alter the kept answer.
    return msgpack.unpackb(packed, raw=False)


def _utf8_len(s: str, limit: int) -> int:
    # A str longer than `limit` code points is over the limit in bytes too: skip encoding it.
    return len(s) if len(s) > limit else len(s.encode())


# Copying a fresh 32-byte blake2b costs less than making one with its keyword argument
# (once per applied entry); the digest is the same.
_new_link_hash = hashlib.blake2b(digest_size=32).copy
_pack_link = struct.Struct(">32sQ").pack  # previous digest, then the index as 8 bytes big-endian


def _chain(prev: bytes, index: int, data: bytes) -> bytes:
    h = _new_link_hash()
    h.update(_pack_link(prev, index) + data)
    return h.digest()
