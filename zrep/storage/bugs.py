"""Planted storage bugs, for tests only: each one breaks durability in a way only
a power cut shows (zrep.chaos.powerfs), never a SIGKILL (the page cache survives
a killed process).

  wal_ack_before_fsync      Wal.sync returns once the batch is written; what
                            was written is flushed only every LATE_FLUSH_S
                            ("fsync every so often"): an append is
                            acknowledged before its fdatasync.
  rename_without_dir_fsync  a snapshot (written or received) and a compacted
                            WAL are renamed into place without fsyncing the
                            directory: after a power cut the old names are back.
  hard_state_no_fsync       a hard state (epoch, vote) on its own is written
                            without a flush (it becomes durable only with the
                            next entry flushed after it).

A node plants them from its `--unsafe-bug` option (the core's planted bugs are
zrep.core.replica.BUGS): `plant(bugs)` keeps the storage ones and returns the
rest. One process is one node, so the set is process-wide. Never in production.
"""

from __future__ import annotations

from collections.abc import Iterable

WAL_ACK_BEFORE_FSYNC = "wal_ack_before_fsync"
RENAME_WITHOUT_DIR_FSYNC = "rename_without_dir_fsync"
HARD_STATE_NO_FSYNC = "hard_state_no_fsync"
STORAGE_BUGS = frozenset({WAL_ACK_BEFORE_FSYNC, RENAME_WITHOUT_DIR_FSYNC, HARD_STATE_NO_FSYNC})

LATE_FLUSH_S = 0.5
PLANTED: set[str] = set()


def plant(bugs: Iterable[str]) -> frozenset[str]:
    """Plant the storage bugs among `bugs` in this process; the others (the core's)."""
    bugs = frozenset(bugs)
    PLANTED.clear()
    PLANTED.update(bugs & STORAGE_BUGS)
    return bugs - STORAGE_BUGS


def planted(name: str) -> bool:
    return name in PLANTED
