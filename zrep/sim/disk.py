"""`SimDisk`: an in-memory log store with the failure model of a real disk.

Writes are buffered until `sync()`; a crash keeps every synced record and a
random prefix of the unsynced ones (a torn last record is cut on replay, so it
is the same as not written). `crash_on_sync` makes the next sync write part of
its batch and then raise `SimCrash`: the crash falls between the messages a
Ready may send at once and those it may send only after the persist.
Must not import os, time or zmq.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.messages import Entry, HardState

Record = tuple  # ("entry", Entry) | ("truncate", i) | ("hs", HardState) | ("commit", i)


class SimCrash(Exception):
    """The simulated process died in the middle of a persist."""


@dataclass
class Replayed:
    hard_state: HardState
    entries: list[Entry]
    commit: int


@dataclass
class SimDisk:
    synced: list[Record] = field(default_factory=list)
    unsynced: list[Record] = field(default_factory=list)
    crash_on_sync: bool = False
    syncs: int = 0

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

    def crash(self, rng: random.Random) -> int:
        """Lose the page cache: keep a random prefix of the unsynced records."""
        keep = rng.randint(0, len(self.unsynced))
        self.synced.extend(self.unsynced[:keep])
        lost = len(self.unsynced) - keep
        self.unsynced.clear()
        return lost

    def replay(self) -> Replayed:
        hs, entries, commit = HardState(), [], 0
        for rec in self.synced:
            kind, value = rec
            if kind == "entry":
                entries.append(value)
            elif kind == "truncate":
                del entries[value - 1 :]
            elif kind == "hs":
                hs = value
            else:
                commit = value
        return Replayed(hs, entries, min(commit, len(entries)))
