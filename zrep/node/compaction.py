"""The node's snapshot and compaction schedule (DESIGN 4).

Job: decide when to snapshot the store (in a child, zrep.storage.snapshot_writer),
note a finished snapshot, compact the log and rewrite the WAL below it, take
the install of a leader's snapshot into account, and write one at a clean stop.
Owns: the writer, the index of the durable snapshot, when the next is due, and
how many compactions ran.

Invariants:
  * Once a snapshot of index S is durable, the log keeps only the entries after
    S - snapshot_entries (a follower a little behind is still served from the
    log); the WAL is rewritten to match (zrep.storage.wal.Wal.rewrite), between
    loop turns, only when every entry of the log is on disk.
  * Nodes snapshot and compact in turn (`snapshot_phase`), not at one index, so
    the CPU spike and the pause of a compaction never hit a majority at once.
  * A failed snapshot only costs the log's length: every entry since the last
    durable one stays in the log.
  * Each snapshot, failure, compaction and install is an event on the node's
    timeline (zrep.node.journal) and counted in NodeStats.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from zrep.config import ClusterConfig
from zrep.core.replica import Replica
from zrep.errors import InvariantError
from zrep.node.journal import Journal
from zrep.node.stats import NodeStats
from zrep.service.service import Service
from zrep.storage.snapshot_files import Snapshot, snapshot_path, write_snapshot
from zrep.storage.snapshot_writer import SnapshotWriter
from zrep.storage.wal import Wal

SNAPSHOT_STORE_FRACTION = 4  # between snapshots, at least (messages held) / this applied entries


def snapshot_phase(node_id: int, member_ids: Sequence[int], every: int) -> int:
    """How many entries after the first node's this node takes its snapshots: the nodes
    snapshot (fork, pack, then compact and rewrite their WAL) in turn, not all at the
    same index, so the CPU spike and the loop's pause of a compaction hit one node at a
    time and never a whole majority at once."""
    ids = sorted(member_ids)
    return ids.index(node_id) * every // len(ids)


class Compaction:
    """When to snapshot and compact, and doing it; `writer` is None when snapshots are off."""

    def __init__(self, cfg: ClusterConfig, node_id: int, replica: Replica, service: Service, wal: Wal,
                 journal: Journal, stats: NodeStats, snapshot: Snapshot | None) -> None:
        self.cfg = cfg
        self.id = node_id
        self.replica = replica
        self.service = service
        self.wal = wal
        self.journal = journal
        self.say = journal.say
        self.stats = stats
        self.writer = SnapshotWriter(cfg.node_data_dir(node_id)) if cfg.snapshot_entries else None
        self.index = snapshot.index if snapshot else 0  # the durable snapshot's
        # A node that has none yet takes its first one at its own phase; later ones keep it.
        phase = 0 if snapshot else snapshot_phase(node_id, [n.id for n in cfg.nodes], cfg.snapshot_entries)
        self.due_at = self.index + cfg.snapshot_entries + phase
        self.compactions = 0
        if snapshot is not None:
            self._measure()

    @property
    def writing(self) -> bool:
        return self.writer is not None and self.writer.running

    def close(self) -> None:
        if self.writer is not None:
            self.writer.stop()

    def turn(self) -> None:
        """Once a tick: note a finished snapshot, start one when due."""
        writer = self.writer
        if writer is None:
            return
        done = writer.poll()
        if done is not None:
            if done.error:
                self.stats.snapshot_failures += 1
                self.journal.event("snapshot_failed", f"warning: snapshot of index {done.index} failed: {done.error}; "
                                   f"the log still holds every entry since the last one, next try after "
                                   f"{self.cfg.snapshot_entries:,} more", level="warning", index=done.index)
            else:
                self.index = done.index
                self.stats.snapshots += 1
                self.stats.snapshot_seconds += done.seconds
                self._measure()
                self.journal.event("snapshot", f"snapshot of index {done.index} written in {done.seconds:.2f} s",
                                   index=done.index, seconds=round(done.seconds, 3))
        store = self.service.store
        if writer.running or store.applied_index < self.due_at:
            return
        # A snapshot rewrites every stored message: waiting for a quarter as many new entries
        # bounds the bytes written to ~4x the log's, and a restart to a quarter of the store.
        gap = max(self.cfg.snapshot_entries, store.message_count() // SNAPSHOT_STORE_FRACTION)
        due = self.index + gap
        if store.applied_index < due:
            self.due_at = due
            return
        self.due_at = store.applied_index + self.cfg.snapshot_entries
        epoch = self.replica.log.epoch_at(store.applied_index)
        if epoch is None:
            raise InvariantError(f"applied index {store.applied_index} is not in the log")
        try:
            writer.start(store, epoch)
        except OSError as e:  # no memory or processes left for a child: the log still has it all
            self.say(f"warning: cannot start a snapshot ({e}); next try after {self.cfg.snapshot_entries:,} "
                     "more entries")

    def due(self) -> bool:
        keep = self.cfg.snapshot_entries
        return keep > 0 and self.index - keep >= self.replica.log.first_index - 1 + keep

    def compact(self) -> None:
        """Drop the log up to S - snapshot_entries, S the durable snapshot (at least
        snapshot_entries entries at once, so the WAL is rewritten once per snapshot)."""
        rep, wal = self.replica, self.wal
        if rep.log.last_index != wal.last_index:
            return  # entries not yet on disk (cannot happen right after Service.process): next turn
        upto = self.index - self.cfg.snapshot_entries
        started = time.monotonic()
        epoch = rep.log.epoch_at(upto)
        if epoch is None:
            raise InvariantError(f"compaction point {upto} is not in the log {rep.log.first_index}..")
        size = wal.rewrite(upto + 1, epoch)  # keeps its own records after upto, byte for byte
        rep.compact(upto)
        self.compactions += 1
        seconds = time.monotonic() - started
        self.stats.compactions += 1
        self.stats.compaction_seconds += seconds
        self.journal.event("compaction", f"log compacted up to {upto} (snapshot {self.index}): the WAL holds "
                           f"{rep.log.first_index}..{rep.log.last_index}, {size:,} bytes, rewritten in "
                           f"{seconds * 1000:.1f} ms", upto=upto, bytes=size, ms=round(seconds * 1000, 1))

    def _measure(self) -> None:
        """The durable snapshot's size: the store's bytes as of its index (once per snapshot, a stat)."""
        try:
            self.stats.snapshot_bytes = os.stat(snapshot_path(self.cfg.node_data_dir(self.id))).st_size
        except OSError:
            pass

    def before_install(self) -> None:
        if self.writer is not None:
            self.writer.stop()  # its older snapshot must not land over the one being installed

    def installed(self, snap: Snapshot) -> None:
        self.stats.installs += 1
        self._measure()
        self.index = snap.index
        self.due_at = snap.index + self.cfg.snapshot_entries  # (the core's note says it happened)

    def on_stop(self) -> None:
        """A clean stop writes the store as it stands (here, not in a child: nothing is
        left to serve), so the next start applies nothing. Failing only costs that."""
        store = self.service.store
        if self.writer is None or store.applied_index <= self.index:
            return
        self.writer.stop()
        started = time.monotonic()
        epoch = self.replica.log.epoch_at(store.applied_index)
        try:
            if epoch is None:
                raise InvariantError(f"applied index {store.applied_index} is not in the log")
            write_snapshot(self.cfg.node_data_dir(self.id), store.applied_index, epoch, store.to_bytes())
        except (OSError, InvariantError) as e:
            self.say(f"warning: snapshot at stop failed: {e}; the next start applies the log after "
                     f"index {self.index}")
            return
        self.index = store.applied_index
        self.stats.snapshots += 1
        self._measure()
        self.journal.event("snapshot", f"snapshot of index {store.applied_index} written at stop in "
                           f"{time.monotonic() - started:.2f} s", index=store.applied_index)
