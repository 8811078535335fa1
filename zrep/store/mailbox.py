"""What the store holds per mailbox and per client, as compact records.

Job: `Mailbox` keeps one mailbox's messages as parallel columns (no Python
object per message); `ClientRecord` keeps one client's exactly-once answers.
Invariants: offsets are base + position and never reused; a deleted message
keeps its slot with body None; pure (no clock, I/O or randomness).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from typing import Any

from zrep.wire.client_messages import Message

ANSWER_OVERHEAD = 64  # rough per-answer bookkeeping, so the byte budget tracks memory


class Mailbox:
    """Messages of one mailbox as parallel columns: no object per message.

    Position p holds offset base + p; a deleted message keeps its slot with
    body None. Leading holes are cut off now and then, since consumers usually
    delete from the front.
    """

    __slots__ = ("base", "head", "senders", "bodies", "indexes", "live", "bytes")
    _TRIM_MIN = 1024

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.head = 0  # positions < head are all holes
        self.senders: list[str] = []
        self.bodies: list[bytes | None] = []
        self.indexes = array("q")  # 8 bytes per message, no int objects
        self.live = 0
        self.bytes = 0  # body bytes of the live messages (not state: derived, never in a snapshot)

    @property
    def next_offset(self) -> int:
        return self.base + len(self.bodies)

    def append(self, sender: str, body: bytes, index: int) -> int:
        self.senders.append(sender)
        self.bodies.append(body)
        self.indexes.append(index)
        self.live += 1
        self.bytes += len(body)
        return self.next_offset - 1

    def pad_to(self, offset: int) -> None:
        """Holes up to (not including) `offset`; used when restoring."""
        gap = offset - self.next_offset
        self.senders.extend([""] * gap)
        self.bodies.extend([None] * gap)
        self.indexes.extend([0] * gap)

    def is_live(self, offset: int) -> bool:
        p = offset - self.base
        return 0 <= p < len(self.bodies) and self.bodies[p] is not None

    def delete(self, offset: int) -> None:
        p = offset - self.base
        self.bytes -= len(self.bodies[p])  # type: ignore[arg-type]  (callers delete live offsets only)
        self.bodies[p] = None
        self.senders[p] = ""
        self.indexes[p] = 0
        self.live -= 1

    def trim(self) -> None:
        n = len(self.bodies)
        while self.head < n and self.bodies[self.head] is None:
            self.head += 1
        # Amortised O(1): cut only when the holes are at least half the columns.
        if self.head >= self._TRIM_MIN and 2 * self.head >= n:
            h = self.head
            del self.senders[:h], self.bodies[:h], self.indexes[:h]
            self.base += h
            self.head = 0

    def columns(self, name: str) -> list[Any]:
        """The snapshot record (Store.to_bytes): live messages first to last, holes between kept."""
        first, last = self.head, len(self.bodies) - 1
        while first <= last and self.bodies[first] is None:
            first += 1
        while last >= first and self.bodies[last] is None:
            last -= 1
        end = last + 1
        indexes = self.indexes[first:end]
        if sys.byteorder == "big":
            indexes.byteswap()
        return [name, self.next_offset, self.live, self.base + first, self.senders[first:end],
                self.bodies[first:end], indexes.tobytes()]

    def messages(self, after: int = -1) -> Iterator[Message]:
        start = max(after + 1 - self.base, self.head)
        for p in range(start, len(self.bodies)):
            body = self.bodies[p]
            if body is not None:
                yield Message(self.base + p, self.senders[p], body, self.indexes[p])


class ClientRecord:
    """One client's exactly-once record: answers kept for seq >= low."""

    __slots__ = ("low", "last_index", "answers", "seqs", "cost")

    def __init__(self, low: int) -> None:
        self.low = low
        self.last_index = 0  # log index of its last applied command (LRU key)
        self.answers: dict[int, bytes] = {}  # seq -> packed answer (immutable, compact)
        self.seqs: list[int] = []  # min-heap of the keys of `answers`
        self.cost = 0  # bytes charged to the answer budget
