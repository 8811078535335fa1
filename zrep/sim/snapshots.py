"""The simulator's SnapshotPort (zrep.service.service): the real Shipper and Receiver
(zrep.service.shipping) over a SimDisk's snapshot bytes instead of files.

`install` keeps the real node's order (zrep.node.file_snapshots): the snapshot is
put in place first, then the log is rewritten; `crash_between` makes the
process die between the two, so the seeded sweep meets a snapshot newer than
its (compacted) log at the next boot. Must not import os, time or zmq.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from zrep.core.messages import Entry
from zrep.errors import DecodeError
from zrep.service.shipping import Receiver, Shipper
from zrep.sim.disk import SimCrash, SimDisk
from zrep.store.snapshot import Snapshot, decode_header
from zrep.store.store import StoreLimits


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)
        self.index, self.epoch, *_ = decode_header(data)

    def read(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]

    def close(self) -> None:
        pass


class BufferSink:
    def __init__(self) -> None:
        self.buf = bytearray()

    def begin(self) -> None:
        self.buf = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        self.buf[offset : offset + len(data)] = data

    def read_all(self) -> bytes:
        return bytes(self.buf)

    def make_durable(self) -> None:
        pass  # the buffer is the temporary file: put in place by install (a rename)

    def discard(self) -> None:
        self.buf = bytearray()


class SimSnapshots:
    def __init__(self, disk: SimDisk, chunk_bytes: int, window_chunks: int,
                 crash_between: Callable[[], bool]) -> None:
        self._disk = disk
        self._sink = BufferSink()
        self.shipper = Shipper(self._source, chunk_bytes, window_chunks)
        self.receiver = Receiver(self._sink, StoreLimits())
        self._crash_between = crash_between

    def _source(self) -> BytesSource | None:
        if self._disk.snapshot is None:
            return None
        try:
            return BytesSource(self._disk.snapshot)
        except DecodeError:
            return None

    def install(self, snap: Snapshot, kept: Sequence[Entry]) -> None:
        self._disk.snapshot = self._sink.read_all()
        if self._crash_between():
            raise SimCrash()
        self._disk.rewrite(snap.index + 1, snap.epoch, kept)

    def discard(self) -> None:
        self._sink.discard()
