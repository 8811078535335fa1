"""Snapshot shipping, both ends, as bytes and offsets: no files, no sockets.

The core decides *that* a follower needs the snapshot and judges every
message by its epoch (zrep.core.replica); this module moves the bytes. The
real node plugs in files (zrep.storage.snapshot_files.SnapshotFile / ReceivedFile), the
simulator byte strings, so both run this same logic.

`Shipper` (leader) turns the core's ShipOrders into InstallSnapshot chunks:
  * a transfer sends one snapshot, opened when it starts and read from that
    handle to its end (a newer snapshot renamed in meanwhile does not mix in);
  * at most `window_chunks` chunks of at most `chunk_bytes` each are in flight
    past the offset the follower last acknowledged (bounded memory and frames);
    a resend (chunks or acks were lost, or the follower went back) sends one.

`Receiver` (follower) stores them:
  * one transfer at a time, keyed by (leader, epoch, index); a chunk of a
    new key starts over, and only at offset 0;
  * only the chunk at exactly the expected offset is written (a lost,
    duplicated or reordered chunk is answered with the offset it expects);
  * after the last chunk the whole file must decode (checksum, store) and name
    the index and epoch its chunks announced, and be made under this node's
    store limits; only then is it made durable and handed over. A bad file is
    discarded and counted, and the transfer starts over from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from zrep.core.messages import InstallSnapshot
from zrep.core.ready import ShipOrder
from zrep.errors import DecodeError
from zrep.store.snapshot import Snapshot, decode_snapshot
from zrep.store.store import StoreLimits


class Source(Protocol):
    """One snapshot file, readable for the length of a transfer."""

    index: int
    epoch: int
    size: int

    def read(self, offset: int, size: int) -> bytes: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """Where a received snapshot is assembled."""

    def begin(self) -> None: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def read_all(self) -> bytes: ...
    def make_durable(self) -> None: ...
    def discard(self) -> None: ...


@dataclass
class _Transfer:
    source: Source
    sent: int = 0  # bytes sent so far (acknowledged or in flight)


class Shipper:
    def __init__(self, open_source: Callable[[], Source | None], chunk_bytes: int, window_chunks: int = 4) -> None:
        if chunk_bytes < 1 or window_chunks < 1:
            raise ValueError("chunk_bytes and window_chunks must be >= 1")
        self._open = open_source
        self.chunk_bytes = chunk_bytes
        self.window_chunks = window_chunks
        self._transfers: dict[int, _Transfer] = {}
        self.chunks_sent = 0
        self.transfers_started = 0

    @property
    def sending(self) -> list[int]:
        return sorted(self._transfers)

    def chunks(self, order: ShipOrder, src: int, epoch: int) -> list[InstallSnapshot]:
        """The chunks `order` calls for, stamped with the leader's id and current epoch."""
        t = self._transfers.get(order.peer)
        if order.index == 0 or t is None or t.source.index != order.index:
            t = self._start(order.peer)  # a new transfer, or one this shipper no longer has
            if t is None:
                return []  # no snapshot to send yet: the core asks again after its retry time
            offset = 0
        else:
            offset = order.offset
            t.sent = offset if order.resend else max(t.sent, offset)
        src_ = t.source
        # A resend is a probe (as a leader's append after a silence): one chunk, so a follower that
        # stopped reading costs a chunk per retry in the transport's queue, not a window.
        window = 1 if order.resend else self.window_chunks
        limit = min(src_.size, offset + window * self.chunk_bytes)
        out = []
        while t.sent < limit:
            n = min(self.chunk_bytes, limit - t.sent)
            data = src_.read(t.sent, n)
            if len(data) != n:  # the file shrank under us: cannot happen to a file we never write
                self._stop(order.peer)
                return out
            out.append(InstallSnapshot(src, order.peer, epoch, src_.index, src_.epoch, t.sent, data,
                                       t.sent + n == src_.size))
            t.sent += n
        self.chunks_sent += len(out)
        return out

    def forget_all(self) -> None:
        """Leadership ended: close every transfer."""
        for peer in list(self._transfers):
            self._stop(peer)

    def _start(self, peer: int) -> _Transfer | None:
        self._stop(peer)
        source = self._open()
        if source is None:
            return None
        self.transfers_started += 1
        t = self._transfers[peer] = _Transfer(source)
        return t

    def _stop(self, peer: int) -> None:
        t = self._transfers.pop(peer, None)
        if t is not None:
            t.source.close()


class Receiver:
    def __init__(self, sink: Sink, limits: StoreLimits) -> None:
        self._sink = sink
        self._limits = limits
        self._key: tuple[int, int, int] | None = None
        self._offset = 0
        self.chunks_stored = 0
        self.refused = 0  # completed files that failed their checks
        self.last_error = ""

    @property
    def receiving(self) -> int:
        """The index of the snapshot being received, 0 if none."""
        return self._key[2] if self._key else 0

    def receive(self, c: InstallSnapshot) -> tuple[int, Snapshot | None]:
        """Store chunk `c`: (bytes held of its snapshot, the checked durable snapshot once complete)."""
        key = (c.src, c.epoch, c.index)
        if key != self._key:
            if c.offset != 0:
                return 0, None  # the middle of a transfer we do not have: ask for it from the start
            self._sink.begin()
            self._key, self._offset = key, 0
        if c.offset != self._offset:
            return self._offset, None
        self._sink.write(c.offset, c.data)
        self._offset += len(c.data)
        self.chunks_stored += 1
        if not c.done:
            return self._offset, None
        self._key = None
        try:
            snap = decode_snapshot(self._sink.read_all())
            if (snap.index, snap.epoch) != (c.index, c.index_epoch):
                raise DecodeError(f"the file holds index {snap.index} epoch {snap.epoch}, "
                                  f"its chunks said {c.index} epoch {c.index_epoch}")
            if snap.store.limits != self._limits:
                raise DecodeError(f"made under other store limits ({snap.store.limits} vs {self._limits})")
        except DecodeError as e:
            self.refused += 1
            self.last_error = f"snapshot {c.index} from node {c.src} refused: {e}"
            self._sink.discard()
            return 0, None
        self._sink.make_durable()
        return self._offset, snap

    def abandon(self) -> None:
        """Drop a transfer in progress (its bytes are discarded)."""
        if self._key is not None:
            self._key = None
            self._sink.discard()
