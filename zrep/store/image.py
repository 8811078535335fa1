"""The store's snapshot image: how a Store becomes deterministic bytes and back.

Job: `write_image` streams a store as a sequence of msgpack values (equal
stores give equal bytes); `read_image` restores one, checking every field,
without a Python object per message and without copying the input.
Invariants: a friend of zrep.store.store (it reads and fills the Store's
private fields, and nothing else does); anything malformed is a DecodeError,
never a half-restored store.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from dataclasses import astuple
from io import BytesIO
from typing import TYPE_CHECKING, Any

import msgpack

from zrep.core.membership import CONFIG_MARK
from zrep.errors import DecodeError
from zrep.store.mailbox import ANSWER_OVERHEAD, ClientRecord, Mailbox

if TYPE_CHECKING:
    from zrep.store.store import Store

SNAPSHOT_MAGIC = b"zrep-store"
SNAPSHOT_VERSION = 3  # 3 added the configuration entry; 2 (without it) is still read


def write_image(store: Store) -> bytes:
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
    p.pack([SNAPSHOT_MAGIC, SNAPSHOT_VERSION, store._applied, store._chain, list(astuple(store._limits)),
            len(store._boxes), len(store._clients), len(store._expired), store._config])
    for name in sorted(store._boxes):
        p.pack(store._boxes[name].columns(name))
    for cid, c in store._clients.items():
        p.pack([cid, c.low, c.last_index, [[s, c.answers[s]] for s in sorted(c.answers)]])
    for cid in store._expired:
        p.pack(cid)
    return p.bytes()


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise DecodeError(f"store snapshot: bad {what}")


def _is_int(v: Any, low: int = 0) -> bool:
    return type(v) is int and v >= low


def read_image(cls: type[Store], data: bytes, start: int) -> Store:
    """The store written by write_image, held in data[start:]; DecodeError (or a msgpack error) if malformed."""
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
    _need(type(head) is list and len(head) in (8, 9) and head[0] == SNAPSHOT_MAGIC, "header")
    _need(type(head[1]) is int and head[1] == SNAPSHOT_VERSION - (9 - len(head)), "version")
    applied, chain, limits, n_boxes, n_clients, n_expired = head[2:8]
    config = head[8] if len(head) == 9 else b""
    _need(type(config) is bytes and (not config or config[:1] == CONFIG_MARK), "configuration entry")
    _need(_is_int(applied) and type(chain) is bytes and len(chain) == 32, "applied index or chain")
    _need(type(limits) is list and all(_is_int(n) for n in (n_boxes, n_clients, n_expired)), "counts")
    store = cls(*limits)
    store._applied, store._chain, store._config = applied, chain, config
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


def _restore_box(item: Callable[[], Any], applied: int) -> tuple[str, Mailbox]:
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
    box = Mailbox(base=first if n else next_offset)
    box.senders, box.bodies, box.indexes, box.live = senders, bodies, indexes, n_live
    box.bytes = sum(map(len, filter(None, bodies)))  # derived: one pass in C at restore
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


def _restore_client(item: Callable[[], Any], applied: int) -> tuple[str, ClientRecord]:
    rec = item()
    _need(type(rec) is list and len(rec) == 4 and type(rec[0]) is str, "client")
    cid, low, last_index, answers = rec
    _need(_is_int(low, 1) and _is_int(last_index, 1) and last_index <= applied, "client low or index")
    _need(type(answers) is list, "client answers")
    client = ClientRecord(low)
    client.last_index = last_index
    prev = low - 1
    for pair in answers:
        _need(type(pair) is list and len(pair) == 2 and _is_int(pair[0], prev + 1) and type(pair[1]) is bytes,
              "kept answer")
        prev, packed = pair
        client.answers[prev] = packed
        client.seqs.append(prev)  # ascending: already a valid heap
        client.cost += len(packed) + ANSWER_OVERHEAD
    return cid, client
