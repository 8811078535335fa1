"""`FileSnapshots`: the real node's SnapshotPort (zrep.service.service): snapshot shipping
over files in the node's data directory.

Ships `store.snap` (zrep.storage.snapshot_files.SnapshotFile), receives into a temporary
file (zrep.storage.snapshot_files.ReceivedFile), and installs in the one order a crash
cannot hurt: the checked, fsynced snapshot is renamed over store.snap first,
then the WAL is rewritten to start after it. A crash between the two leaves
the new snapshot with the old WAL, which a start resolves (zrep.storage.snapshot_files:
the snapshot wins over a compacted log it does not fit; an uncompacted log
rebuilds the store and the leader ships again). A running snapshot child is
stopped first: its older file must never be renamed over the installed one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from zrep.core.messages import Entry
from zrep.errors import InvariantError, StorageError
from zrep.service.shipping import Receiver, Shipper
from zrep.storage.snapshot_files import ReceivedFile, SnapshotFile
from zrep.storage.wal import Wal
from zrep.store.snapshot import Snapshot
from zrep.store.store import StoreLimits

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
