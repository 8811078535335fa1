"""`FileSnapshots`: the real node's SnapshotPort (zrep.service): snapshot shipping
over files in the node's data directory.

Ships `store.snap` (zrep.snapshot.SnapshotFile), receives into a temporary
file (zrep.snapshot.ReceivedFile), and installs in the one order a crash
cannot hurt: the checked, fsynced snapshot is renamed over store.snap first,
then the WAL is rewritten to start after it. A crash between the two leaves
the new snapshot with the old WAL, which a start resolves (zrep.snapshot:
the snapshot wins over a compacted log it does not fit; an uncompacted log
rebuilds the store and the leader ships again). A running snapshot child is
stopped first: its older file must never be renamed over the installed one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from zrep.core.messages import Entry
from zrep.errors import InvariantError, StorageError
from zrep.snapshot import ReceivedFile, SnapshotFile
from zrep.snapshot_format import Snapshot
from zrep.snapshot_ship import Receiver, Shipper
from zrep.store import StoreLimits
from zrep.wal import Wal

CHUNK_BYTES = 1 << 20  # per InstallSnapshot (less if the frame limit is lower)
WINDOW_CHUNKS = 4  # chunks in flight per follower past its last ack: at most 4 MiB


class FileSnapshots:
    def __init__(self, directory: str | os.PathLike[str], wal: Wal, limits: StoreLimits, chunk_bytes: int,
                 before_install: Callable[[], None]) -> None:
        self._received = ReceivedFile(directory)
        self.shipper = Shipper(lambda: SnapshotFile.open(directory), chunk_bytes, WINDOW_CHUNKS)
        self.receiver = Receiver(self._received, limits)
        self._wal = wal
        self._before_install = before_install

    def install(self, snap: Snapshot, kept: Sequence[Entry]) -> None:
        self._before_install()
        try:
            self._received.put_in_place()
        except OSError as e:
            raise StorageError(f"{self._received.path}: cannot put the received snapshot in place: {e}") from e
        self._wal.rewrite(snap.index + 1, snap.epoch, keep=bool(kept))
        if self._wal.last_index != snap.index + len(kept):  # the WAL and the core's log disagree: a bug
            raise InvariantError(f"after installing snapshot {snap.index} the WAL ends at {self._wal.last_index}, "
                                 f"the log at {snap.index + len(kept)}")

    def discard(self) -> None:
        self._received.discard()

    def close(self) -> None:
        self.shipper.forget_all()
        self.receiver.abandon()
