"""`SimNetwork`: delays, loses, duplicates and reorders messages, and cuts
links in any shape (one-way cuts included). Every decision comes from the
injected random generator, so one seed replays exactly.
Must not import os, time or zmq.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LinkFaults:
    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 1
    max_delay: int = 2


@dataclass
class SimNetwork:
    rng: random.Random
    faults: LinkFaults = field(default_factory=LinkFaults)
    cut: set[tuple[int, int]] = field(default_factory=set)  # (src, dst) pairs that drop
    _queue: list[tuple[int, int, int, Any]] = field(default_factory=list)
    _seq: int = 0
    sent: int = 0
    dropped: int = 0

    def send(self, now: int, src: int, dst: int, payload: Any) -> None:
        """Queue `payload` from src to dst (0 for clients is fine: ids are the caller's)."""
        self.sent += 1
        if (src, dst) in self.cut or self.rng.random() < self.faults.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.faults.dup else 1
        for _ in range(copies):
            delay = self.rng.randint(self.faults.min_delay, self.faults.max_delay)
            self._seq += 1
            heapq.heappush(self._queue, (now + delay, self._seq, dst, payload))

    def due(self, now: int) -> list[tuple[int, Any]]:
        """(dst, payload) of every message whose time has come, in delivery order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, dst, payload = heapq.heappop(self._queue)
            out.append((dst, payload))
        return out

    def lose_unflushed(self, src: int, p: float) -> int:
        """A process died: each message it sent that is still in flight is lost
        with probability p (ZeroMQ queues outgoing messages in the dying process)."""
        keep, lost = [], 0
        for item in self._queue:
            if item[3] is not None and getattr(item[3], "src", None) == src and self.rng.random() < p:
                lost += 1
            else:
                keep.append(item)
        if lost:
            heapq.heapify(keep)
            self._queue = keep
        return lost

    def isolate(self, group: set[int], everyone: set[int], one_way: bool = False) -> None:
        """Cut `group` off from the rest (only rest -> group when one_way)."""
        for a in group:
            for b in everyone - group:
                self.cut.add((b, a))
                if not one_way:
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def __len__(self) -> int:
        return len(self._queue)
