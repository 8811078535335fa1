"""`SimDisk`: an in-memory log store (and snapshot file) with the failure model of a real disk.

Writes are buffered until `sync()`; a crash keeps every synced record and a
random prefix of the unsynced ones (a torn last record is cut on replay, so it
is the same as not written). `crash_on_sync` makes the next sync write part of
its batch and then raise `SimCrash`: the crash falls between the messages a
Ready may send at once and those it may send only after the persist.

Snapshots and compaction, as zrep.storage.snapshot_files and zrep.storage.wal.Wal.rewrite do them:
`snapshot` is the durable snapshot file (its bytes, zrep.store.snapshot),
replaced at once (a rename); `rewrite` replaces the log by hard state,
SNAPSHOT_MARK and the kept entries at once (a rename: a crash sees the old
log or the new one). `wipe` loses everything, as an operator's rm -rf.
Must not import os, time or zmq.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from zrep.core.messages import Entry, HardState

Record = tuple  # ("entry", Entry) | ("truncate", i) | ("hs", HardState) | ("commit", i) | ("mark", (first, epoch))


class SimCrash(Exception):
    """The simulated process died in the middle of a persist."""


@dataclass
class Replayed:
    hard_state: HardState
    entries: list[Entry]
    commit: int
    first_index: int = 1
    prev_epoch: int = 0


@dataclass
class SimDisk:
    synced: list[Record] = field(default_factory=list)
    unsynced: list[Record] = field(default_factory=list)
    crash_on_sync: bool = False
    syncs: int = 0
    snapshot: bytes | None = None  # the durable snapshot file
    rewrites: int = 0
    incarnation: int = 0  # made with the disk (zrep.node's identity file); a wipe makes a new one
    joined: bool = False  # made by --join (an observer until added), not --init (a founding seed)
    truncated: bool = False  # a truncation since the operator last looked (zrep.sim.operator)
    _view: tuple | None = None  # synced_view's cache: (len(synced), view, rewrites)

    def set_hard_state(self, hs: HardState) -> None:
        self.unsynced.append(("hs", hs))

    def truncate(self, from_index: int) -> None:
        self.unsynced.append(("truncate", from_index))

    def append_entries(self, entries: Iterable[Entry]) -> None:
        self.unsynced.extend(("entry", e) for e in entries)

    def set_commit(self, index: int) -> None:
        self.unsynced.append(("commit", index))

    def sync(self) -> None:
        if self.crash_on_sync:
            self.crash_on_sync = False
            raise SimCrash()
        self.synced.extend(self.unsynced)
        self.unsynced.clear()
        self.syncs += 1

    def rewrite(self, first_index: int, prev_epoch: int, entries: Sequence[Entry]) -> None:
        """Wal.rewrite: what was buffered is synced first, then the log is replaced at once."""
        self.sync()
        old = self.replay()
        commit = min(max(old.commit, first_index - 1), first_index - 1 + len(entries))
        self.synced = [("hs", old.hard_state), ("mark", (first_index, prev_epoch))]
        self.synced += [("entry", e) for e in entries] + [("commit", commit)]
        self.rewrites += 1

    def wipe(self) -> None:
        self.synced, self.unsynced, self.snapshot = [], [], None
        self._view = None

    def synced_view(self) -> tuple[dict[int, int], int]:
        """What a crash now would keep: {index: epoch} of the log, and the index below which
        the snapshot holds everything. Cached until the synced records change."""
        if self._view is not None and self._view[0] == len(self.synced) and self.rewrites == self._view[2]:
            return self._view[1]
        replay = self.replay()
        held = {e.index: e.epoch for e in replay.entries}
        view = (held, replay.first_index - 1)
        self._view = (len(self.synced), view, self.rewrites)
        return view

    def crash(self, rng: random.Random) -> int:
        """Lose the page cache: keep a random prefix of the unsynced records."""
        keep = rng.randint(0, len(self.unsynced))
        self.synced.extend(self.unsynced[:keep])
        lost = len(self.unsynced) - keep
        self.unsynced.clear()
        return lost

    def replay(self) -> Replayed:
        hs, entries, commit, first, prev_epoch = HardState(), [], 0, 1, 0
        for rec in self.synced:
            kind, value = rec
            if kind == "entry":
                entries.append(value)
            elif kind == "truncate":
                del entries[value - first :]
            elif kind == "hs":
                hs = value
            elif kind == "mark":
                # Only rewrite() writes a mark, as the first record after the hard state.
                first, prev_epoch = value
                entries = []
                commit = max(commit, first - 1)
            else:
                commit = value
        return Replayed(hs, entries, min(commit, first - 1 + len(entries)), first, prev_epoch)
