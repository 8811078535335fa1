"""`SimPlan`: everything about one simulated run, derived from one seed.

The same seed gives the same plan, the same faults and the same delays, so a
failing seed replays exactly. Must not import os, time or zmq.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zrep.core.ready import Timing
from zrep.sim.network import LinkFaults


@dataclass(frozen=True)
class SimPlan:
    seed: int
    nodes: int
    fault_ticks: int  # faults are injected during this many ticks
    heal_ticks: int  # then everything heals; liveness must follow within this bound
    link: LinkFaults
    timing: Timing
    crash_p: float  # per tick: SIGKILL a node
    sync_crash_p: float  # per tick: arm a crash inside a node's next fsync
    restart_ticks: tuple[int, int]
    churn_p: float  # per tick, while a leader is new: kill it (a leader dying mid-takeover)
    unflushed_loss: float  # share of a dying node's in-flight messages that never leave it
    kill_on_commit_p: float  # a leader whose commit index just moved dies before telling anyone
    pause_p: float
    pause_ticks: tuple[int, int]
    partition_p: float
    partition_ticks: tuple[int, int]
    speeds: tuple[float, ...]  # ticks per global tick, per node
    clients: int
    op_p: float  # per tick, per idle client: start an operation
    bugs: frozenset[str] = frozenset()
    # Snapshots (drawn from a generator of their own, so the draws above stay as they were):
    snapshot_p: float = 0.0  # per tick, per node: snapshot the store (then compact the log)
    keep_entries: int = 0  # entries a compaction keeps below the snapshot index
    chunk_bytes: int = 256  # snapshot chunk size when shipping
    window_chunks: int = 2
    compact_crash_p: float = 0.0  # a compaction dies before or after its log rewrite
    install_crash_p: float = 0.0  # an install dies between the snapshot's rename and the log rewrite
    wipe_p: float = 0.0  # per tick: wipe a dead node's disk (while every configuration keeps a quorum of intact disks)
    admin_p: float = 0.0  # per tick, with a leader: the operator asks for a membership change
    # Disconnect hints (the real node's socket monitor; drawn from a generator of their own):
    hint_p: float = 0.0  # a peer of a dying process hears its connection close (else the hint is lost)
    hint_late_p: float = 0.0  # ... but only after hint_late_ticks (a slow monitor, a busy loop)
    hint_late_ticks: tuple[int, int] = (1, 1)
    false_hint_p: float = 0.0  # per tick: a live node hears a live peer's connection close (a flapping link)
    stall_hints: bool = False  # a pause or cut longer than the keepalive timeout closes the connections

    @classmethod
    def from_seed(cls, seed: int, nodes: int = 3, bugs: frozenset[str] = frozenset(), fault_ticks: int = 600) -> "SimPlan":
        rng = random.Random(f"plan-{seed}-{nodes}")
        max_delay = rng.choice((1, 2, 2, 3, 4))
        link = LinkFaults(
            loss=rng.choice((0.0, 0.01, 0.05, 0.15)),
            dup=rng.choice((0.0, 0.02, 0.1)),
            min_delay=1,
            max_delay=max_delay,
        )
        heartbeat = max(2, max_delay + 1)
        timing = Timing(
            heartbeat_ticks=heartbeat,
            election_ticks=8 * heartbeat,
            answer_ticks=2 * max_delay + 1,
            max_inflight=rng.choice((1, 4, 64)),
            max_batch_entries=rng.choice((1, 2, 64)),  # 1: a new leader's old entries travel apart from its no-op
            max_batch_bytes=1 << 20,
        )
        # One seed in four is "leader churn": leaders die right after they win or
        # commit, taking their unsent messages with them, and entries travel one
        # per append. That is where Raft's figure 8 lives.
        churn = rng.random() < 0.25
        if churn:
            timing = Timing(timing.heartbeat_ticks, timing.election_ticks, timing.answer_ticks,
                            max_inflight=timing.max_inflight, max_batch_entries=1)
        uneven = rng.random() < 0.3
        speeds = tuple(rng.uniform(0.6, 1.4) if uneven else 1.0 for _ in range(nodes))
        return cls(
            seed=seed,
            nodes=nodes,
            fault_ticks=fault_ticks,
            heal_ticks=60 * timing.election_ticks,
            link=link,
            timing=timing,
            crash_p=rng.choice((0.0, 0.005, 0.01, 0.02)),
            sync_crash_p=rng.choice((0.0, 0.005, 0.02)),
            restart_ticks=(1, 10) if churn else (1, rng.choice((5, 40, 150))),
            churn_p=0.3 if churn else rng.choice((0.0, 0.0, 0.05)),
            kill_on_commit_p=0.3 if churn else rng.choice((0.0, 0.0, 0.1)),
            unflushed_loss=1.0 if churn else rng.choice((0.0, 0.5, 1.0)),
            pause_p=rng.choice((0.0, 0.003, 0.01)),
            pause_ticks=(timing.election_ticks // 2, 3 * timing.election_ticks),
            partition_p=rng.choice((0.0, 0.005, 0.02)),
            partition_ticks=(timing.election_ticks // 2, 5 * timing.election_ticks),
            speeds=speeds,
            clients=rng.choice((1, 2, 4)),
            op_p=rng.choice((0.1, 0.3, 0.8)),
            bugs=bugs,
            **_snapshot_draws(random.Random(f"snap-plan-{seed}-{nodes}")),
            **_hint_draws(random.Random(f"hint-plan-{seed}-{nodes}"), timing.election_ticks),
            admin_p=random.Random(f"admin-plan-{seed}-{nodes}").choice((0.0, 0.005, 0.02, 0.05)),
        )


def _snapshot_draws(rng: random.Random) -> dict[str, float | int]:
    on = rng.random() < 0.75  # a quarter of the seeds never snapshot: the log alone still works
    return {
        "snapshot_p": rng.choice((0.01, 0.05, 0.2)) if on else 0.0,
        "keep_entries": rng.choice((0, 1, 5, 20)),
        "chunk_bytes": rng.choice((64, 256, 4096)),
        "window_chunks": rng.choice((1, 2, 4)),
        "compact_crash_p": rng.choice((0.0, 0.02, 0.1)) if on else 0.0,
        "install_crash_p": rng.choice((0.0, 0.2)) if on else 0.0,
        "wipe_p": rng.choice((0.0, 0.01, 0.05)) if on else 0.0,
    }


def _hint_draws(rng: random.Random, election_ticks: int) -> dict[str, object]:
    """One seed in five has no hints at all (the timeout path alone); the rest mix true,
    lost, late and false ones."""
    on = rng.random() < 0.8
    return {
        "hint_p": rng.choice((0.5, 0.9, 1.0)) if on else 0.0,
        "hint_late_p": rng.choice((0.0, 0.1, 0.3)) if on else 0.0,
        "hint_late_ticks": (election_ticks // 4, 3 * election_ticks),
        "false_hint_p": rng.choice((0.0, 0.002, 0.01, 0.05)) if on else 0.0,
        "stall_hints": on and rng.random() < 0.5,
    }
