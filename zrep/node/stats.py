"""What a node counts for its metrics: plain integers and bucket lists, kept by the loop.

Job: the counters and histograms the loop bumps as it works (requests and their
latency per op, answers by outcome, elections, fsyncs, batch sizes, snapshots),
and `MeteredWal`, the node's WAL that times its own fsyncs.

Invariants:
  * Only the loop thread writes here; the metrics thread (zrep.node.metrics)
    only reads, and takes no lock: an int read is atomic under the GIL, a
    bucket list is copied with one C-level `list(...)` call. A scrape can
    therefore never make the loop wait.
  * The hot path costs one `bisect` and a few integer additions per request,
    no allocation beyond the first request of an op.
  * No I/O here (MeteredWal only adds a clock reading around Wal.sync).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from zrep.storage.wal import Wal

LATENCY_BOUNDS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Buckets:
    """A histogram as Prometheus wants it, without prometheus_client on the hot path:
    `counts[i]` observations <= bounds[i] (not cumulative), the last slot is +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """[(le, cumulative count)] ending with +Inf, and the sum: a consistent-enough copy."""
        counts, total = list(self.counts), self.sum
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts):
            running += n
            out.append((bound, running))
        return out, total


@dataclass(slots=True)
class NodeStats:
    """Counters the loop keeps; read by the metrics collector."""

    requests: dict[str, int] = field(default_factory=dict)  # op -> requests taken
    answers: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, OK or error code) -> count
    latency: dict[str, Buckets] = field(default_factory=dict)  # op -> seconds from taken to answered
    turn_requests: Buckets = field(default_factory=lambda: Buckets(SIZE_BOUNDS))  # client requests per loop turn
    wal_batch: Buckets = field(default_factory=lambda: Buckets(SIZE_BOUNDS))  # entries per WAL append
    fsync: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS_S))
    fsync_bytes: int = 0
    leader_changes: int = 0
    elections_started: int = 0
    elections_won: int = 0
    elections_lost: int = 0  # gave up a claim
    elections_stood_aside: int = 0  # a better node or a live leader: did not run
    snapshots: int = 0
    snapshot_failures: int = 0
    snapshot_seconds: float = 0.0
    compactions: int = 0
    compaction_seconds: float = 0.0
    installs: int = 0
    snapshot_bytes: int = 0  # size of the durable snapshot file: the store's bytes as of its index
    store_messages: int = 0  # refreshed by the loop once a second (not per scrape)
    store_bytes: int = 0  # body bytes of the live messages, refreshed with store_messages
    store_mailboxes: int = 0

    def took(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1

    def answered(self, op: str, outcome: str, seconds: float) -> None:
        key = (op, outcome)
        self.answers[key] = self.answers.get(key, 0) + 1
        buckets = self.latency.get(op)
        if buckets is None:
            buckets = self.latency[op] = Buckets(LATENCY_BOUNDS_S)
        buckets.observe(seconds)


class MeteredWal(Wal):
    """The node's WAL: times each sync that flushed (fsync), counts its bytes and append
    batches, and reports a slow one. `Wal.open` builds it (a classmethod: `cls`)."""

    stats: NodeStats | None = None
    on_slow: Callable[[float, int], None] | None = None  # (seconds, bytes) of an fsync over slow_s
    slow_s: float = 0.1

    def append_entries(self, entries):  # type: ignore[no-untyped-def]
        if self.stats is not None:
            self.stats.wal_batch.observe(len(entries))
        super().append_entries(entries)

    def sync(self) -> None:
        before = self.synced_offset
        started = time.perf_counter()
        super().sync()
        after = self.synced_offset
        if after != before and self.stats is not None:
            seconds = time.perf_counter() - started
            flushed = max(0, after - before)
            self.stats.fsync.observe(seconds)
            self.stats.fsync_bytes += flushed
            if seconds > self.slow_s and self.on_slow is not None:
                self.on_slow(seconds, flushed)
