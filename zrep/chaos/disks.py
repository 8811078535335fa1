"""Each node of a chaos run on its own power-cut disk (zrep.chaos.powerfs).

Job: one PowerMount per node, mounted over the node's data directory
(`cluster.cfg.node_data_dir(i)`, so LocalCluster and the node need no
change) with its backing and journal in RUN/powerfs/node-i; `power_cut`
rolls the given nodes' disks back to what they held at their last fsyncs
and remounts them (the nodes must be dead: the nemesis kills them first).

Invariants:
  * A node only ever starts on its mounted disk: `ensure_mounted` before
    any start, and a mount refuses a non-empty mount point (data written
    beside the mount would hide under it).
  * `close()` unmounts every disk, whatever state the run is in; the mount
    points are listed in the run's state file so `zrep chaos --cleanup`
    unmounts what a killed run left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zrep.chaos.powerfs.mount import PowerFSError, PowerMount, holders
from zrep.local.cluster import LocalCluster

HOLDERS_GONE_S = 3.0  # a killed node's forked snapshot writer dies with it (PDEATHSIG): soon


@dataclass(frozen=True)
class CutOutcome:
    node: int
    dropped_bytes: int
    kept_torn_bytes: int
    names_removed: int
    names_restored: int
    unmount: str  # "clean", or the fallbacks it needed


class Disks:
    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        self.cluster = cluster
        self.mounts = {i: PowerMount(Path(root) / f"node-{i}", cluster.cfg.node_data_dir(i)) for i in cluster.ids}

    @property
    def mountpoints(self) -> list[str]:
        return [str(m.mountpoint) for m in self.mounts.values()]

    def ensure_mounted(self, nodes: list[int] | None = None) -> None:
        """Every given node's disk mounted and alive (a cut one that was never remounted is remounted)."""
        for i in self.cluster.ids if nodes is None else nodes:
            m = self.mounts[i]
            if m.mounted and self._alive(m):
                continue
            m.unmount()  # a daemon left without its mount, or a disk without power
            m.mount()

    @staticmethod
    def _alive(m: PowerMount) -> bool:
        try:
            return not m.status()["dead"]
        except PowerFSError:
            return False

    def power_cut(self, nodes: list[int], seed: int | None) -> list[CutOutcome]:
        """Cut power to the (already dead) nodes' disks, remount them; what each cut dropped."""
        out = []
        for i in nodes:
            if self.cluster.running(i):
                raise PowerFSError(f"node {i} still runs: kill it before cutting its disk")
        for i in nodes:
            m = self.mounts[i]
            self._wait_unheld(m)
            report = m.cut(None if seed is None else seed + i)
            before = len(m.fallbacks)
            m.unmount()
            out.append(CutOutcome(i, report["bytes_dropped"], report["bytes_kept_torn"], report["names_removed"],
                                  report["names_restored"], "; ".join(m.fallbacks[before:]) or "clean"))
        for i in nodes:
            self.mounts[i].mount()
        return out

    @staticmethod
    def _wait_unheld(m: PowerMount) -> None:
        deadline = time.monotonic() + HOLDERS_GONE_S
        while holders(m.mountpoint) and time.monotonic() < deadline:
            time.sleep(0.02)

    def status(self) -> dict[int, dict[str, Any]]:
        return {i: m.status() for i, m in self.mounts.items() if m.mounted}

    def close(self) -> None:
        errors = []
        for m in self.mounts.values():
            try:
                m.unmount()
            except PowerFSError as e:
                errors.append(str(e))
        if errors:
            raise PowerFSError("; ".join(errors))
