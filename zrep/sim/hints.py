"""`SimHints`: disconnect hints as the real node's socket monitor gives them
(zrep.node.transport), for the simulator.

When a process dies, each live peer may hear its connection close at once
(true), later (late) or never (lost); a live link may flap (false); a pause or
a cut that outlasts the keepalive timeout (two election timeouts, as the real
transport's ZMTP heartbeats) closes the connections at both ends (stall). A
hint reaches only the life of the node it was meant for: a restarted process
has new sockets. Every draw comes from the generator given, so a seed replays
exactly. Must not import os, time or zmq.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zrep.sim.plan import SimPlan


@dataclass(frozen=True)
class Hint:
    """The connection to `peer` closed (held in a paused node's inbox like a message)."""

    peer: int


class SimHints:
    def __init__(self, plan: SimPlan, rng: random.Random, count: Callable[[str], None]) -> None:
        self.plan = plan
        self.rng = rng
        self._count = count
        self._queue: list[tuple[int, int, int, int, int]] = []  # (tick, seq, node, its life, peer)
        self._seq = 0

    def _schedule(self, at: int, node: int, life: int, peer: int, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, node, life, peer))
        self._count(kind)

    def death(self, now: int, dead: int, alive: Iterable[tuple[int, int]]) -> None:
        """Process `dead` died; `alive` is (node, life) of every live peer."""
        p, rng = self.plan, self.rng
        if not p.hint_p:
            return
        for node, life in alive:
            if rng.random() >= p.hint_p:
                self._count("hint_lost")
            elif rng.random() < p.hint_late_p:
                self._schedule(now + rng.randint(*p.hint_late_ticks), node, life, dead, "hint_late")
            else:
                self._schedule(now + rng.randint(0, p.link.max_delay), node, life, dead, "hint")

    def stall(self, now: int, pairs: Iterable[tuple[int, int]], lasts: int, life_of: Callable[[int], int | None]) -> None:
        """Connections between `pairs` stall for `lasts` ticks; `life_of(node)` is None for a dead node."""
        keepalive = 2 * self.plan.timing.election_ticks
        if not self.plan.stall_hints or lasts <= keepalive:
            return
        for a, b in pairs:
            for node, peer in ((a, b), (b, a)):
                life = life_of(node)
                if life is not None:
                    self._schedule(now + keepalive, node, life, peer, "hint_stall")

    def flap(self, now: int, alive: list[tuple[int, int]], ids: tuple[int, ...]) -> None:
        """Maybe a false hint: a live node hears a live peer's connection close."""
        p, rng = self.plan, self.rng
        if len(alive) > 1 and p.false_hint_p and rng.random() < p.false_hint_p:
            node, life = rng.choice(alive)
            peer = rng.choice([i for i in ids if i != node])
            self._schedule(now, node, life, peer, "hint_false")

    def due(self, now: int) -> list[tuple[int, int, int]]:
        """(node, life, peer) of every hint whose time has come, in order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, node, life, peer = heapq.heappop(self._queue)
            out.append((node, life, peer))
        return out
