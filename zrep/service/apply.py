"""`apply_ready`: the one function that turns a `Ready` into effects.

The real node and the simulator both call it, so the simulator tests the
real ordering:
  1. send `ready.messages` (a leader's appends may overlap its own fsync:
     Raft thesis 10.2.1; the leader counts itself only after `advance`);
  2. persist hard state, truncation, entries and commit hint, then ONE sync
     (group commit) — skipped when there is nothing durable to write;
  3. send `ready.after_persist` (acks and promises state durable facts);
  4. apply committed entries, hand out read states;
  5. `replica.advance(ready)`.
If the persist raises (a failed fsync, or a simulated crash), steps 3-5 never
happen: nothing that depends on durability leaves the node.
Must not import zmq, os or time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from zrep.core.messages import Entry, HardState, Message
from zrep.core.ready import ReadState, Ready
from zrep.core.replica import Replica


class Storage(Protocol):
    """What the driver needs of a log store (zrep.storage.wal.Wal, zrep.sim.disk.SimDisk)."""

    def set_hard_state(self, hs: HardState) -> None: ...
    def truncate(self, from_index: int) -> None: ...
    def append_entries(self, entries: Iterable[Entry]) -> None: ...
    def set_commit(self, index: int) -> None: ...
    def sync(self) -> None: ...


def persist(ready: Ready, storage: Storage) -> None:
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    if ready.truncate_from is not None:
        storage.truncate(ready.truncate_from)
    if ready.entries:
        storage.append_entries(ready.entries)
    if ready.commit is not None:
        storage.set_commit(ready.commit)  # a hint: rides along with the next sync
    if ready.must_persist:
        storage.sync()


def apply_ready(
    replica: Replica,
    ready: Ready,
    storage: Storage,
    send: Callable[[Message], None],
    apply: Callable[[Entry], None],
    on_read: Callable[[ReadState], None],
    note: Callable[[str], None] | None = None,
) -> None:
    if note is not None:
        for text in ready.notes:
            note(text)
    for msg in ready.messages:
        send(msg)
    persist(ready, storage)
    for msg in ready.after_persist:
        send(msg)
    for entry in ready.committed:
        apply(entry)
    for read in ready.reads:
        on_read(read)
    replica.advance(ready)
