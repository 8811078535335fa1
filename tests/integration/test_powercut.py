"""Real nodes on power-cut disks (zrep.chaos.disks): when every node loses power at once, no
acknowledged write is lost and every node starts again; the planted storage bugs that break
that (zrep.storage.bugs) are caught by the same run.

Each node's data directory is its own power-cut file system. Writes are acknowledged by a
majority; then every node is SIGKILLed, its disk loses what was not fsynced, it is remounted
and restarted, and every acknowledged message must be read back at its offset. Skipped with
the reason where /dev/fuse, root, fusermount or fusepy is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import ClusterError, LocalCluster, wait_until
from test_node_real import Acked, send_seq

from zrep.chaos.disks import Disks
from zrep.chaos.powerfs.mount import unavailable
from zrep.storage import bugs

WHY = unavailable()
pytestmark = pytest.mark.skipif(bool(WHY), reason=f"power-cut file system unavailable: {WHY}")
SNAPSHOT_ENTRIES = 20  # small: snapshots and WAL compactions happen before the cut


@pytest.fixture
def on_disks(make_cluster: Callable[..., LocalCluster],
             tmp_path: Path) -> Iterator[Callable[..., tuple[LocalCluster, Disks]]]:
    made: list[tuple[LocalCluster, Disks]] = []

    def make(planted: tuple[str, ...] = ()) -> tuple[LocalCluster, Disks]:
        c = make_cluster(start=False, snapshot_entries=SNAPSHOT_ENTRIES, bugs=planted)
        d = Disks(c, tmp_path / f"powerfs-{len(made)}")
        made.append((c, d))
        d.ensure_mounted()
        c.start()
        return c, d

    try:
        yield make
    finally:
        for c, d in made:
            c.stop_all(signal.SIGKILL)
            d.close()


def cut_every_node(c: LocalCluster, d: Disks) -> int:
    """SIGKILL every node at one instant, cut every disk, remount, restart; bytes dropped."""
    c.signal_nodes(c.ids, signal.SIGKILL)
    for i in c.ids:
        c.kill(i, signal.SIGKILL)
    dropped = sum(o.dropped_bytes for o in d.power_cut(list(c.ids), seed=None))
    c.start()
    return dropped


def lost_after_cut(c: LocalCluster, d: Disks, acked: Acked) -> list[str]:
    """What went wrong after an all-node power cut: acknowledged bodies missing, nodes that did not start."""
    cut_every_node(c, d)
    try:
        c.wait_for_leader(15)
        boxes = sorted({box for box, _ in acked.values()})
        at = {box: {offset: body for offset, _, body, _ in c.read(box, timeout=15)} for box in boxes}
    except ClusterError as e:
        return [f"no leader or no read after the cut: {e}"] + [life.describe() for life in c.unexpected_exits()]
    missing = [f"{body!r} at {box}@{offset}" for body, (box, offset) in acked.items() if at[box].get(offset) != body]
    return missing + [life.describe() for life in c.unexpected_exits()]


def load_until_compacted(c: LocalCluster, acked: Acked) -> None:
    """Acknowledged sends until every node compacted its WAL, then a few more (on the new file)."""
    c.wait_for_leader(15)
    seq = 0
    while not all("log compacted" in c.node_log(i) for i in c.ids):
        send_seq(c, "pc", range(seq + 1, seq + 21), lambda s: f"box{s % 2}", acked)
        seq += 20
        assert seq <= 400, "no WAL compaction on every node after 400 sends"
    send_seq(c, "pc", range(seq + 1, seq + 11), lambda s: f"box{s % 2}", acked)


def test_an_all_node_power_cut_loses_nothing_acknowledged(on_disks: Callable[..., tuple[LocalCluster, Disks]]) -> None:
    c, d = on_disks()
    acked: Acked = {}
    load_until_compacted(c, acked)
    assert lost_after_cut(c, d, acked) == []
    wait_until("every node up after the cut", lambda: len(c.statuses()) == 3, 15)


@pytest.mark.parametrize("bug", [bugs.WAL_ACK_BEFORE_FSYNC, bugs.RENAME_WITHOUT_DIR_FSYNC])
def test_a_planted_storage_bug_loses_acknowledged_writes_in_the_same_run(
        on_disks: Callable[..., tuple[LocalCluster, Disks]], bug: str) -> None:
    c, d = on_disks((bug,))
    acked: Acked = {}
    load_until_compacted(c, acked)
    lost = lost_after_cut(c, d, acked)
    for _ in range(2):  # a late flush may land just before the cut (a few % of runs): cut again
        if lost:
            break
        after = len(acked)
        send_seq(c, "pc", range(after + 1, after + 11), lambda s: f"box{s % 2}", acked)
        lost = lost_after_cut(c, d, acked)
    assert lost, f"{bug}: nothing lost in three all-node power cuts"


def test_a_node_that_loses_power_right_after_a_snapshot_install_starts_and_catches_up(
        on_disks: Callable[..., tuple[LocalCluster, Disks]]) -> None:
    c, d = on_disks()
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "pi", range(1, 11), lambda s: "box", acked)
    f = next(i for i in c.ids if i != lead)
    c.kill(f, signal.SIGKILL)
    d.power_cut([f], seed=None)
    send_seq(c, "pi", range(11, 91), lambda s: "box", acked)  # the others compact past f's log
    wait_until("the leader to compact", lambda: "log compacted" in c.node_log(lead), 15)
    c.start(f)
    wait_until(f"node {f} to install a snapshot",
               lambda: c.statuses([f]).get(f, {}).get("snapshot_shipping", {}).get("installed", 0) >= 1, 20)
    c.kill(f, signal.SIGKILL)  # power lost right after the install's renames
    d.power_cut([f], seed=None)
    c.start(f)
    send_seq(c, "pi", range(91, 101), lambda s: "box", acked)
    c.wait_converged(20)
    assert [life.describe() for life in c.unexpected_exits()] == []
    rows = {offset: body for offset, _, body, _ in c.read("box", node=f, stale=True)}
    assert [body for body, (_, offset) in acked.items() if rows.get(offset) != body] == []


# ------------------------------------------------------------------ the chaos tool's power cuts

REPO = Path(__file__).resolve().parents[2]


def mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(root))]


def test_a_power_cut_chaos_run_passes_and_unmounts_every_disk(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "zrep", "chaos", "--power-cut", "--duration", "5", "--seed", "4", "--json",
           "--dir", str(run_dir), "--keep"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report is not None and report["faults"].get("power-cut", 0) >= 1, report
    assert report["settings"]["faults"] == ["power-cut"]
    assert mounts_under(tmp_path) == []


def test_an_interrupted_power_cut_run_unmounts_every_disk(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "zrep", "chaos", "--power-cut", "--duration", "60", "--seed", "5",
           "--dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        wait_until("the run's disks mounted and nodes serving",
                   lambda: len(mounts_under(tmp_path)) == 3 and (run_dir / "history.jsonl").exists()
                   and (run_dir / "history.jsonl").stat().st_size > 2000, 60, interval=0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert mounts_under(tmp_path) == []


def test_a_disk_left_without_power_is_remounted_before_its_node_starts(
        on_disks: Callable[..., tuple[LocalCluster, Disks]]) -> None:
    c, d = on_disks()
    c.wait_for_leader(15)
    c.kill(1, signal.SIGKILL)
    d.mounts[1].cut()  # as if the nemesis failed between the cut and the remount
    d.ensure_mounted([1])
    assert d.mounts[1].status()["dead"] is False
    c.start(1)
    c.wait_converged(15)
