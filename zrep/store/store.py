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
but commands and errors.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
import sys
from array import array
from collections import OrderedDict, deque
from dataclasses import astuple, dataclass, fields
from fnmatch import fnmatchcase
from io import BytesIO
from typing import Any, Callable, Iterable, Iterator

import msgpack

from zrep.errors import DecodeError, InvariantError
from zrep.store.commands import (
    MAX_BODY_BYTES,
    Command,
    DeleteCommand,
    SendCommand,
    decode_command,
    has_control,
)
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
_SNAPSHOT_MAGIC = b"zrep-store"
_SNAPSHOT_VERSION = 2
# One Packer for every kept answer: msgpack.packb builds a new one per call (4x the
# cost). A Packer is not thread-safe; a store, like the node loop, is single-threaded.
_pack = msgpack.Packer(use_bin_type=True).pack
_ANSWER_OVERHEAD = 64  # rough per-answer bookkeeping, so the byte budget tracks memory

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


class _Mailbox:
    """Messages of one mailbox as parallel columns: no object per message.

    Position p holds offset base + p; a deleted message keeps its slot with
    body None. Leading holes are cut off now and then, since consumers usually
    delete from the front.
    """

    __slots__ = ("base", "head", "senders", "bodies", "indexes", "live")
    _TRIM_MIN = 1024

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.head = 0  # positions < head are all holes
        self.senders: list[str] = []
        self.bodies: list[bytes | None] = []
        self.indexes = array("q")  # 8 bytes per message, no int objects
        self.live = 0

    @property
    def next_offset(self) -> int:
        return self.base + len(self.bodies)

    def append(self, sender: str, body: bytes, index: int) -> int:
        self.senders.append(sender)
        self.bodies.append(body)
        self.indexes.append(index)
        self.live += 1
        return self.next_offset - 1

    def pad_to(self, offset: int) -> None:
        """Holes up to (not including) `offset`; used when restoring."""
        gap = offset - self.next_offset
        self.senders.extend([""] * gap)
        self.bodies.extend([None] * gap)
        self.indexes.extend([0] * gap)

    def is_live(self, offset: int) -> bool:
        p = offset - self.base
        return 0 <= p < len(self.bodies) and self.bodies[p] is not None

    def delete(self, offset: int) -> None:
        p = offset - self.base
        self.bodies[p] = None
        self.senders[p] = ""
        self.indexes[p] = 0
        self.live -= 1

    def trim(self) -> None:
        n = len(self.bodies)
        while self.head < n and self.bodies[self.head] is None:
            self.head += 1
        # Amortised O(1): cut only when the holes are at least half the columns.
        if self.head >= self._TRIM_MIN and 2 * self.head >= n:
            h = self.head
            del self.senders[:h], self.bodies[:h], self.indexes[:h]
            self.base += h
            self.head = 0

    def columns(self, name: str) -> list[Any]:
        """The snapshot record (Store.to_bytes): live messages first to last, holes between kept."""
        first, last = self.head, len(self.bodies) - 1
        while first <= last and self.bodies[first] is None:
            first += 1
        while last >= first and self.bodies[last] is None:
            last -= 1
        end = last + 1
        indexes = self.indexes[first:end]
        if sys.byteorder == "big":
            indexes.byteswap()
        return [name, self.next_offset, self.live, self.base + first, self.senders[first:end],
                self.bodies[first:end], indexes.tobytes()]

    def messages(self, after: int = -1) -> Iterator[Message]:
        start = max(after + 1 - self.base, self.head)
        for p in range(start, len(self.bodies)):
            body = self.bodies[p]
            if body is not None:
                yield Message(self.base + p, self.senders[p], body, self.indexes[p])


class _Client:
    """One client's exactly-once record: answers kept for seq >= low."""

    __slots__ = ("low", "last_index", "answers", "seqs", "cost")

    def __init__(self, low: int) -> None:
        self.low = low
        self.last_index = 0  # log index of its last applied command (LRU key)
        self.answers: dict[int, bytes] = {}  # seq -> packed answer (immutable, compact)
        self.seqs: list[int] = []  # min-heap of the keys of `answers`
        self.cost = 0  # bytes charged to the answer budget


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
        self._boxes: dict[str, _Mailbox] = {}
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # least recently used first
        self._answer_bytes = 0
        self._expired: deque[str] = deque()  # evicted ids, oldest first
        self._expired_set: set[str] = set()

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
            client = self._clients[cmd.client] = _Client(cmd.low)  # appended: most recently used
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
            box = self._boxes[cmd.to] = _Mailbox()
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

    def _keep(self, client: _Client, seq: int, answer: Answer) -> None:
        packed = _pack(answer)
        client.answers[seq] = packed
        heapq.heappush(client.seqs, seq)
        cost = len(packed) + _ANSWER_OVERHEAD
        client.cost += cost
        self._answer_bytes += cost

    def _forget_below(self, client: _Client, low: int) -> None:
        if low <= client.low:
            return  # out-of-order arrival: an older command carries an older low
        client.low = low
        while client.seqs and client.seqs[0] < low:
            cost = len(client.answers.pop(heapq.heappop(client.seqs))) + _ANSWER_OVERHEAD
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

    def message_count(self) -> int:
        """Live messages in all mailboxes (one sum over the mailboxes, not the messages)."""
        return sum(b.live for b in self._boxes.values())

    def mailboxes(self, pattern: str = "*") -> list[tuple[str, int]]:
        """(name, live count) of every mailbox ever sent to whose name matches the glob, sorted by name.

        A mailbox whose messages are all deleted is still listed (count 0): it
        keeps its next offset, since offsets are never reused.
        """
        return sorted((n, b.live) for n, b in self._boxes.items() if fnmatchcase(n, pattern))

    def digest(self) -> str:
        """Hex blake2b chained over (index, data) of every applied entry, no-ops included.

        It fingerprints the applied log, O(1) to read: equal digests mean the
        same entries were applied, hence (by determinism) the same state.
        """
        return self._chain.hex()

    # --- snapshots ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A deterministic snapshot: equal stores give equal bytes.

        Layout, one msgpack value after another, nothing after the last (streamed,
        so a million messages never become one nested list in memory):
          header  [b"zrep-store", 1, applied_index, chain (32 bytes),
                   [limits in StoreLimits order], n_mailboxes, n_clients, n_expired]
          n_mailboxes times, name ascending, the messages as columns (restored
          without a Python object per message) from the first live one to the last:
            [name, next_offset, n_live, first_offset, [sender, ...], [body, ...],
             indexes as 8-byte little-endian ints]; a deleted message in
            between is sender "", body nil, index 0
          n_clients times, least recently used first:
            [client, low, last_index, [[seq, packed answer], ...] seq ascending]
          n_expired times, oldest first: client id
        """
        p = msgpack.Packer(autoreset=False)
        p.pack([_SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, self._applied, self._chain, list(astuple(self._limits)),
                len(self._boxes), len(self._clients), len(self._expired)])
        for name in sorted(self._boxes):
            p.pack(self._boxes[name].columns(name))
        for cid, c in self._clients.items():
            p.pack([cid, c.low, c.last_index, [[s, c.answers[s]] for s in sorted(c.answers)]])
        for cid in self._expired:
            p.pack(cid)
        return p.bytes()

    @classmethod
    def from_bytes(cls, data: bytes, start: int = 0) -> Store:
        """Restore a snapshot made by to_bytes, held in data[start:] (a snapshot file's body
        is read in place: no copy of it); DecodeError if it is malformed."""
        try:
            return _restore(cls, data, start)
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


# --- snapshot restore ---------------------------------------------------------


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise DecodeError(f"store snapshot: bad {what}")


def _is_int(v: Any, low: int = 0) -> bool:
    return type(v) is int and v >= low


def _restore(cls: type[Store], data: bytes, start: int) -> Store:
    _need(type(data) is bytes, "type (not bytes)")
    _need(type(start) is int and 0 <= start <= len(data), "start")
    # BytesIO shares the bytes: no second copy of a large snapshot.
    stream = BytesIO(data)
    stream.seek(start)
    size = len(data) - start
    u = msgpack.Unpacker(stream, raw=False, strict_map_key=True, max_buffer_size=max(size, 1))

    def item() -> Any:
        try:
            return u.unpack()
        except msgpack.OutOfData:
            raise DecodeError("store snapshot: truncated") from None

    head = item()
    _need(type(head) is list and len(head) == 8 and head[0] == _SNAPSHOT_MAGIC, "header")
    _need(head[1] == _SNAPSHOT_VERSION and type(head[1]) is int, "version")
    applied, chain, limits, n_boxes, n_clients, n_expired = head[2:]
    _need(_is_int(applied) and type(chain) is bytes and len(chain) == 32, "applied index or chain")
    _need(type(limits) is list and all(_is_int(n) for n in (n_boxes, n_clients, n_expired)), "counts")
    store = cls(*limits)
    store._applied, store._chain = applied, chain
    prev_name = ""
    for _ in range(n_boxes):
        name, box = _restore_box(item, applied)
        _need(name > prev_name, "mailbox order")  # names are non-empty, so > "" holds for the first
        _need(store._check_name(name) is None, "mailbox name")  # sends trust an existing box's name
        store._boxes[name] = box
        prev_name = name
    last = 0
    for _ in range(n_clients):
        cid, client = _restore_client(item, applied)
        _need(cid not in store._clients and client.last_index > last, "client order")
        last = client.last_index
        store._clients[cid] = client
        store._answer_bytes += client.cost
    for _ in range(n_expired):
        cid = item()
        _need(type(cid) is str and cid not in store._expired_set and cid not in store._clients, "expired id")
        store._expired.append(cid)
        store._expired_set.add(cid)
    _need(u.tell() == size, "trailing data")  # counted from `start`
    return store


def _restore_box(item: Callable[[], Any], applied: int) -> tuple[str, _Mailbox]:
    rec = item()
    _need(type(rec) is list and len(rec) == 7 and type(rec[0]) is str, "mailbox record")
    name, next_offset, n_live, first, senders, bodies, packed = rec
    # Every offset came from one applied entry: next_offset <= applied bounds the holes to rebuild.
    _need(_is_int(next_offset) and next_offset <= applied and _is_int(n_live) and _is_int(first), "mailbox counts")
    _need(type(senders) is list and type(bodies) is list and type(packed) is bytes
          and len(senders) == len(bodies) and len(packed) == 8 * len(bodies), "mailbox columns")
    n = len(bodies)
    _need(first + n <= next_offset and n_live == n - bodies.count(None), "mailbox counts")
    _need(n == 0 or (bodies[0] is not None and bodies[-1] is not None), "mailbox columns (holes at an end)")
    indexes = array("q")
    indexes.frombytes(packed)
    if sys.byteorder == "big":
        indexes.byteswap()
    if n_live == n:  # no deleted message: the loop below, as whole-column checks in C
        _need(_all_of_type(senders, str) and _all_of_type(bodies, bytes)
              and (n == 0 or (min(indexes) >= 1 and max(indexes) <= applied)), "message")
        senders[:] = map(sys.intern, senders)
    else:
        _check_holed_columns(senders, bodies, indexes, applied)
    box = _Mailbox(base=first if n else next_offset)
    box.senders, box.bodies, box.indexes, box.live = senders, bodies, indexes, n_live
    box.pad_to(next_offset)
    return name, box


def _all_of_type(values: list[Any], cls: type) -> bool:
    return not values or set(map(type, values)) == {cls}


def _check_holed_columns(senders: list[Any], bodies: list[Any], indexes: array, applied: int) -> None:
    """Every message checked, the deleted ones as deletes; senders interned in place."""
    intern = sys.intern
    for p, (sender, body, index) in enumerate(zip(senders, bodies, indexes)):
        if body is None:
            _need(sender == "" and index == 0, "deleted message")
        else:
            _need(type(sender) is str and type(body) is bytes and 1 <= index <= applied, "message")
            senders[p] = intern(sender)  # one str per sender, as apply keeps it


def _restore_client(item: Callable[[], Any], applied: int) -> tuple[str, _Client]:
    rec = item()
    _need(type(rec) is list and len(rec) == 4 and type(rec[0]) is str, "client")
    cid, low, last_index, answers = rec
    _need(_is_int(low, 1) and _is_int(last_index, 1) and last_index <= applied, "client low or index")
    _need(type(answers) is list, "client answers")
    client = _Client(low)
    client.last_index = last_index
    prev = low - 1
    for pair in answers:
        _need(type(pair) is list and len(pair) == 2 and _is_int(pair[0], prev + 1) and type(pair[1]) is bytes,
              "kept answer")
        prev, packed = pair
        client.answers[prev] = packed
        client.seqs.append(prev)  # ascending: already a valid heap
        client.cost += len(packed) + _ANSWER_OVERHEAD
    return cid, client
