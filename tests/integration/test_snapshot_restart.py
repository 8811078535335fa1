"""Store snapshots: the file format, when a snapshot may stand in for the log,
the forked writer, and real nodes that restart from one.

The promise checked: a restart from a snapshot serves exactly what a restart
from the log would (same digest, every acknowledged message once), and a bad
snapshot is never trusted: the node rebuilds from its log instead.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from harness import wait_until
from test_node_real import Acked, MakeCluster, assert_exactly_once, send_seq

from zrep.node.start import WAL_NAME
from zrep.storage.snapshot_files import (
    SNAPSHOT_NAME,
    load_snapshot,
)
from zrep.storage.wal import Wal
from zrep.store.store import Store, StoreLimits

# ------------------------------------------------------------------ real nodes


@pytest.mark.slow
def test_nodes_restart_from_their_snapshots_and_serve_the_same_store(make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=40)
    c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "snap", range(1, 121), lambda s: f"box{s % 3}", acked, via=lambda s: (s % 3) + 1)
    c.wait_converged(20)
    wait_until("every node to write a snapshot",
               lambda: all(st["snapshot_index"] >= 40 and not st["snapshot_writing"]
                           for st in c.statuses().values()) and len(c.statuses()) == 3, 20)
    for i in c.ids:
        c.kill(i, signal.SIGKILL)
    c.start()
    c.wait_for_leader(15)
    for i in c.ids:
        assert "store from the snapshot of index" in c.node_log(i, last_life=True)
    assert_exactly_once(c, acked)
    send_seq(c, "snap", range(121, 131), lambda s: "box0", acked)  # (client, seq) table came back too
    digest = c.wait_converged(20)
    assert_exactly_once(c, acked)
    applied = c.status(1)["store_applied"]
    c.stop_all()
    # What a store rebuilt from the whole log would hold: the snapshots changed nothing.
    for i in c.ids:
        assert store_from_log(Path(c.cfg.node_data_dir(i)), applied).digest() == digest


def store_from_log(data_dir: Path, upto: int) -> Store:
    """The store the log alone builds; a compacted log starts from the snapshot it requires."""
    wal, replay = Wal.open(data_dir / WAL_NAME)
    wal.close()
    store = Store()
    if replay.first_index > 1:
        snap, why = load_snapshot(data_dir, replay, StoreLimits())
        assert snap is not None, why
        store = snap.store
    for e in replay.entries:
        if store.applied_index < e.index <= upto:
            store.apply(e.index, e.data)
    return store


@pytest.mark.slow
def test_a_corrupt_snapshot_is_ignored_and_the_store_rebuilt_from_the_log(make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=30)
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "bad", range(1, 46), lambda s: "box", acked)  # one snapshot (>= 30), too few to compact (60)
    digest = c.wait_converged(20)
    node = next(i for i in c.ids if i != lead)
    wait_until(f"node {node} to write a snapshot",
               lambda: c.status(node)["snapshot_index"] >= 30 and not c.status(node)["snapshot_writing"], 20)
    c.kill(node, signal.SIGKILL)
    path = Path(c.cfg.node_data_dir(node)) / SNAPSHOT_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    c.start(node)
    wait_until(f"node {node} to rebuild its store", lambda: c.status(node)["digest"] == digest, 20)
    log = c.node_log(node, last_life=True)
    assert "snapshot ignored, checksum mismatch" in log and "store from the snapshot" not in log
    assert_exactly_once(c, acked, node=node)


@pytest.mark.slow
def test_a_clean_stop_writes_a_snapshot_and_the_restart_applies_nothing(make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=1_000_000)  # no periodic snapshot in this test
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "stop", range(1, 41), lambda s: "box", acked)
    digest = c.wait_converged(20)
    node = next(i for i in c.ids if i != lead)
    applied = c.status(node)["store_applied"]
    assert c.kill(node, signal.SIGTERM) == 0
    assert f"snapshot of index {applied} written at stop" in c.node_log(node, last_life=True)
    c.start(node)
    wait_until(f"node {node} to serve", lambda: c.status(node)["digest"] == digest, 20)
    assert f"store from the snapshot of index {applied}" in c.node_log(node, last_life=True)
    assert_exactly_once(c, acked, node=node)
