"""The in-memory view of one replica's log.

Invariants: entries are contiguous from `first_index` to `last_index`; every
entry's epoch is >= the epoch of the entry before it; `prev_epoch` is the
epoch of the entry just before `first_index` (0 for an empty prefix, or the
epoch at a snapshot's boundary once a snapshot dropped the prefix); a prefix
is dropped (`compact`, `reset`) only once a snapshot that holds it is durable,
which the shell guarantees before it asks. The view only changes in memory;
the shell persists what the Ready says.

Entries are kept as two columns (epochs in an int64 array, data in a list of
bytes), not as Entry objects: a million entries cost ~8 bytes plus their data
each, and nothing in the log is tracked by the cyclic garbage collector, whose
full passes would otherwise walk every entry (a pause that grows with the log).
Entry objects are made on the way out (`entry`, `slice`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from zrep.core.messages import Entry, entry_of
from zrep.errors import InvariantError


class LogView:
    __slots__ = ("_epochs", "_data", "first_index", "prev_epoch")

    def __init__(self, entries: Sequence[Entry] = (), first_index: int = 1, prev_epoch: int = 0) -> None:
        self._epochs = array("q")
        self._data: list[bytes] = []
        self.first_index = first_index
        self.prev_epoch = prev_epoch
        for offset, entry in enumerate(entries):
            if entry.index != first_index + offset:
                raise InvariantError(f"log view: entry {entry.index} at position {first_index + offset}")
            self._epochs.append(entry.epoch)
            self._data.append(entry.data)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self._data) - 1

    @property
    def last_epoch(self) -> int:
        return self._epochs[-1] if self._data else self.prev_epoch

    def epoch_at(self, index: int) -> int | None:
        """Epoch of the entry at `index`; None when the view does not hold it."""
        pos = index - self.first_index
        if 0 <= pos < len(self._data):
            return self._epochs[pos]
        if pos == -1:
            return self.prev_epoch
        return None

    def matches(self, index: int, epoch: int) -> bool:
        return self.epoch_at(index) == epoch

    def entry(self, index: int) -> Entry:
        if not self.first_index <= index <= self.last_index:
            raise InvariantError(f"log view: no entry {index} in [{self.first_index}, {self.last_index}]")
        pos = index - self.first_index
        return Entry(self._epochs[pos], index, self._data[pos])

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi inclusive (clipped to the view), stopping once `max_bytes`
        of data is reached (at least one entry is always returned)."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index)
        if lo > hi:
            return []
        first = self.first_index
        data = self._data[lo - first : hi - first + 1]
        if max_bytes is not None:
            total = 0
            for n, d in enumerate(data):
                total += len(d) + 16
                if total > max_bytes and n > 0:
                    data = data[:n]
                    break
        epochs = self._epochs[lo - first : lo - first + len(data)]
        return list(map(entry_of, zip(epochs, range(lo, lo + len(data)), data)))

    def append(self, entry: Entry) -> None:
        self.extend((entry,))

    def extend(self, entries: Sequence[Entry]) -> None:
        """Append a run of entries (the same checks as `append`, in one pass)."""
        expect, floor = self.last_index + 1, self.last_epoch
        epochs, data = [], []
        for epoch, index, d in entries:
            if index != expect:
                raise InvariantError(f"log view: append of {index} after {expect - 1}")
            if epoch < floor:
                raise InvariantError(f"log view: epoch {epoch} after epoch {floor}")
            epochs.append(epoch)
            data.append(d)
            expect, floor = expect + 1, epoch
        self._epochs.extend(epochs)
        self._data.extend(data)

    def find(self, lo: int, hi: int, marker: bytes) -> list[int]:
        """Indexes in lo..hi (clipped to the view) whose data starts with `marker`."""
        first = self.first_index
        lo, hi = max(lo, first), min(hi, self.last_index)
        data = self._data
        return [first + i for i in range(lo - first, hi - first + 1) if data[i][:1] == marker]

    def data_at(self, index: int) -> bytes:
        return self._data[index - self.first_index]

    def truncate_from(self, index: int) -> None:
        """Drop entries >= index. The caller guarantees none of them is committed."""
        if index < self.first_index:
            raise InvariantError(f"log view: truncate to {index} below first index {self.first_index}")
        del self._epochs[index - self.first_index :], self._data[index - self.first_index :]

    def compact(self, index: int) -> None:
        """Drop entries <= index (held by a durable snapshot); entry `index` stays known by its epoch."""
        if not self.first_index - 1 <= index <= self.last_index:
            raise InvariantError(f"log view: compact to {index} outside [{self.first_index - 1}, {self.last_index}]")
        pos = index - self.first_index + 1
        self.prev_epoch = self.epoch_at(index)  # type: ignore[assignment]  # in range: checked above
        del self._epochs[:pos], self._data[:pos]
        self.first_index = index + 1

    def reset(self, index: int, epoch: int) -> None:
        """Drop every entry: the log now starts after a snapshot of (index, epoch)."""
        del self._epochs[:], self._data[:]
        self.first_index, self.prev_epoch = index + 1, epoch

    def conflict_hint(self, index: int, floor: int) -> int:
        """For a mismatch at `index`: the last index before the run of entries
        sharing index's epoch (fast back-off: skip a whole epoch per round trip),
        never below `floor` (entries up to the commit index are known to match)."""
        epoch = self.epoch_at(index)
        i = min(index, self.last_index)
        while i > floor and i >= self.first_index and self.epoch_at(i) == epoch:
            i -= 1
        return max(i, floor)
