"""Log compaction and snapshot shipping (DESIGN 4).

The promises checked: after a snapshot the WAL drops its prefix and a restart
from snapshot + compacted WAL serves exactly what the others serve; a
follower the leader's log cannot serve any more gets the snapshot in chunks
(checked end to end, installed durably before it is acknowledged); a wiped
node re-syncs completely; a compacted WAL whose snapshot is unusable refuses
to start with one line that says what to do.
"""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import LocalCluster, wait_until
from stores import filled_store
from test_node_real import Acked, MakeCluster, assert_exactly_once, send_seq

from zrep.core.log import LogView
from zrep.core.messages import (
    Append,
    AppendAck,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotAck,
    Promise,
)
from zrep.core.ready import ShipOrder
from zrep.core.replica import Replica
from zrep.errors import DecodeError
from zrep.node.start import EXIT_NO_SNAPSHOT, WAL_NAME
from zrep.service.shipping import Receiver, Shipper
from zrep.sim.snapshots import BufferSink, BytesSource
from zrep.cli.log import log as log_cli
from zrep.storage.snapshot_files import SNAPSHOT_NAME, load_snapshot, write_snapshot
from zrep.storage.wal import REWRITE_SUFFIX, Replay, Wal, read_log, replay_buffer
from zrep.store.snapshot import encode_snapshot
from zrep.store.store import StoreLimits
from zrep.wire.codec import decode, encode

KEEP = 50  # snapshot_entries of the real clusters here: also the tail the log keeps


# ------------------------------------------------------------------ the WAL rewrite


def entries(lo: int, hi: int, epoch: int = 1) -> list[Entry]:
    return [Entry(epoch, i, b"e%d" % i) for i in range(lo, hi + 1)]


def test_a_rewritten_wal_replays_to_the_kept_tail_and_takes_appends(tmp_path: Path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.set_hard_state(HardState(2, 1))
    wal.append_entries(entries(1, 100))
    wal.set_commit(90)
    wal.sync()
    before = (tmp_path / "wal").stat().st_size
    size = wal.rewrite(81, 1)
    assert size == (tmp_path / "wal").stat().st_size < before / 3
    wal.append_entries([Entry(2, 101, b"new")])
    wal.sync()
    wal.close()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert (replay.first_index, replay.prev_epoch, replay.commit) == (81, 1, 90)
    assert replay.hard_state == HardState(2, 1)
    assert [e.index for e in replay.entries] == list(range(81, 102))


def test_a_rewrite_after_a_truncation_keeps_the_last_write_of_each_entry_and_can_drop_all(tmp_path: Path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.append_entries(entries(1, 20))
    wal.sync()
    wal.truncate(15)
    wal.append_entries(entries(15, 25, epoch=2))
    wal.set_hard_state(HardState(2, 3))
    wal.sync()
    wal.rewrite(16, 2)
    wal.append_entries([Entry(2, 26, b"x")])
    wal.close()
    wal, replay = Wal.open(tmp_path / "wal")
    assert [(e.epoch, e.index) for e in replay.entries] == [(2, i) for i in range(16, 27)]
    assert replay.hard_state == HardState(2, 3)
    wal.rewrite(41, 3, keep=False)  # a snapshot past the log: nothing is kept
    wal.close()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert (replay.first_index, replay.prev_epoch, replay.entries, replay.commit) == (41, 3, [], 40)


def test_a_crash_before_the_rename_leaves_the_old_wal_and_the_leftover_is_removed(tmp_path: Path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.append_entries(entries(1, 10))
    wal.sync()
    wal.close()
    old = (tmp_path / "wal").read_bytes()
    (tmp_path / ("wal" + REWRITE_SUFFIX)).write_bytes(b"half a new file")  # died mid-rewrite
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert len(replay.entries) == 10 and (tmp_path / "wal").read_bytes() == old
    assert not (tmp_path / ("wal" + REWRITE_SUFFIX)).exists()


def test_log_inspect_reads_a_compacted_wal(tmp_path: Path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.append_entries(entries(1, 30))
    wal.set_commit(30)
    wal.sync()
    wal.rewrite(21, 1)
    wal.close()
    out = CliRunner().invoke(log_cli, ["inspect", str(tmp_path / "wal")])
    assert out.exit_code == 0, out.output
    assert "SNAPSHOT_MARK" in out.output and "entries 21..30" in out.output and "compacted" in out.output


# ------------------------------------------------------------------ a compacted log needs its snapshot


def compacted_replay(first: int, last: int, prev_epoch: int = 1) -> Replay:
    return Replay(HardState(1, 0), entries(first, last), first, first - 1, 0, [], prev_epoch)


@pytest.mark.parametrize("setup, expect", [
    ("missing", "is missing"),
    ("corrupt", "checksum mismatch"),
    ("behind", "holds entries up to 10 only, the log starts at 21"),
    ("limits", "other store limits"),
])
def test_a_compacted_log_names_what_is_wrong_with_its_snapshot(tmp_path: Path, setup: str, expect: str) -> None:
    if setup != "missing":
        n = 10 if setup == "behind" else 20
        write_snapshot(tmp_path, n, 1, filled_store(n, **({"max_body_bytes": 10} if setup == "limits" else {})).to_bytes())
    if setup == "corrupt":
        path = tmp_path / SNAPSHOT_NAME
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    snap, why = load_snapshot(tmp_path, compacted_replay(21, 30), StoreLimits())
    assert snap is None and expect in why


def test_a_snapshot_past_a_compacted_log_is_taken(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 40, 2, filled_store(40).to_bytes())  # an install that died before its WAL rewrite
    snap, why = load_snapshot(tmp_path, compacted_replay(21, 30), StoreLimits())
    assert why == "" and snap is not None and snap.index == 40


# ------------------------------------------------------------------ the core


def test_log_view_compact_keeps_the_boundary_epoch_and_reset_drops_all() -> None:
    view = LogView(entries(1, 5, 1) + [Entry(2, 6, b"")])
    view.compact(5)
    assert (view.first_index, view.prev_epoch, view.last_index, view.epoch_at(5)) == (6, 1, 6, 1)
    assert view.epoch_at(4) is None
    view.reset(20, 3)
    assert (view.first_index, view.last_index, view.last_epoch) == (21, 20, 3)


def test_a_leader_ships_the_snapshot_to_a_follower_behind_its_log_and_appends_after_the_install() -> None:
    r = Replica(1, (1, 2, 3), rng=random.Random(1), hard_state=HardState(1, 0), log=LogView(entries(1, 30, 1)),
                commit=30, applied=30)
    r.compact(20)
    r._become_candidate()  # claims epoch 2
    r.step(Promise(2, 1, 2, True))
    assert r.role == 3
    r.ready()
    # Follower 2 says it has only 5 entries: the leader no longer holds 6.
    r.step(AppendAck(2, 1, 2, False, 5, 0, 30))
    ready = r.ready()
    assert ShipOrder(2, 0, 0) in ready.ship
    assert not [m for m in ready.messages if getattr(m, "dst", 0) == 2 and type(m).__name__ == "Append"]
    r.step(InstallSnapshotAck(2, 1, 2, 25, 4096, False))
    assert r.ready().ship == (ShipOrder(2, 25, 4096, False),)
    r.step(InstallSnapshotAck(2, 1, 1, 25, 0, True))  # an older epoch's ack: ignored
    assert r.tracker[2].snapshot
    r.step(InstallSnapshotAck(2, 1, 2, 25, 9000, True))
    ready = r.ready()
    appends = [m for m in ready.messages if type(m).__name__ == "Append" and m.dst == 2]
    assert appends and appends[0].prev_index == 25 and r.tracker[2].match == 25


def test_a_follower_fences_stale_chunks_and_acks_an_install_only_when_told_it_is_durable() -> None:
    f = Replica(2, (1, 2, 3), rng=random.Random(2), hard_state=HardState(3, 1), log=LogView(entries(1, 4, 1)))
    stale = InstallSnapshot(1, 2, 2, 40, 2, 0, b"x", True)
    f.step(stale)
    ready = f.ready()
    assert ready.chunks == () and ready.messages == (InstallSnapshotAck(2, 1, 3, 40, 0, False),)
    chunk = InstallSnapshot(1, 2, 3, 40, 2, 0, b"x", True)
    f.step(chunk)
    ready = f.ready()
    assert ready.chunks == (chunk,) and ready.after_persist == ()  # nothing acked yet
    f.snapshot_installed(chunk, True)
    ready = f.ready()
    assert ready.after_persist == (InstallSnapshotAck(2, 1, 3, 40, 1, True),)
    assert (f.log.first_index, f.log.last_index, f.commit, f.applied) == (41, 40, 40, 40)


# ------------------------------------------------------------------ shipping bytes


class Buffer(BufferSink):
    """The simulator's sink, remembering whether the receiver made the received file durable."""

    durable = False

    def begin(self) -> None:
        super().begin()
        self.durable = False

    def make_durable(self) -> None:
        self.durable = True


def test_chunks_stay_in_the_window_and_only_the_expected_offset_is_taken() -> None:
    data = encode_snapshot(30, 2, filled_store(30).to_bytes())
    shipper = Shipper(lambda: BytesSource(data), chunk_bytes=100, window_chunks=3)
    first = shipper.chunks(ShipOrder(2, 0, 0), 1, 5)
    assert [c.offset for c in first] == [0, 100, 200] and all(len(c.data) == 100 for c in first)
    sink = Buffer()
    recv = Receiver(sink, StoreLimits())
    assert recv.receive(first[1]) == (0, None)  # not the start: ask from 0
    assert recv.receive(first[0]) == (100, None)
    assert recv.receive(first[0]) == (100, None)  # a duplicate is not written twice
    # Chunk 100 was refused, so 200 is lost to the follower: the leader's retry resends from its ack.
    offset, snap, resend = 100, None, True
    for _ in range(100):
        before = offset
        for c in shipper.chunks(ShipOrder(2, 30, offset, resend), 1, 5):
            offset, snap = recv.receive(c)
        if snap is not None:
            break
        resend = offset == before
    assert snap is not None and snap.index == 30 and sink.durable
    assert snap.store.digest() == filled_store(30).digest()


def test_a_corrupt_snapshot_is_refused_and_the_transfer_starts_over() -> None:
    data = bytearray(encode_snapshot(30, 2, filled_store(30).to_bytes()))
    data[-5] ^= 0x10
    shipper = Shipper(lambda: BytesSource(bytes(data)), chunk_bytes=len(data), window_chunks=1)
    (chunk,) = shipper.chunks(ShipOrder(2, 0, 0), 1, 5)
    recv = Receiver(Buffer(), StoreLimits())
    assert recv.receive(chunk) == (0, None)
    assert recv.refused == 1 and "checksum" in recv.last_error


def test_a_new_leader_or_a_restarted_follower_starts_the_transfer_over() -> None:
    data = encode_snapshot(30, 2, filled_store(30).to_bytes())
    old = Shipper(lambda: BytesSource(data), chunk_bytes=100, window_chunks=2).chunks(ShipOrder(2, 0, 0), 1, 5)
    recv = Receiver(Buffer(), StoreLimits())
    assert [recv.receive(c)[0] for c in old] == [100, 200]
    new = Shipper(lambda: BytesSource(data), chunk_bytes=100, window_chunks=3).chunks(ShipOrder(2, 0, 0), 3, 6)
    assert recv.receive(new[2]) == (0, None)  # epoch 6's transfer, not from its start: ask for 0
    assert recv.receive(new[0]) == (100, None) and recv.receiving == 30
    restarted = Receiver(Buffer(), StoreLimits())  # a follower that restarted mid-transfer
    assert restarted.receive(new[1]) == (0, None)


def test_chunks_of_an_older_leader_never_reach_the_shell() -> None:
    f = Replica(2, (1, 2, 3), rng=random.Random(2), hard_state=HardState(5, 1), log=LogView(entries(1, 4, 1)))
    f.step(InstallSnapshot(1, 2, 5, 40, 2, 0, b"x", True))
    f.step(Append(3, 2, 6, 4, 1, (), 0, 0))  # leader 3 of epoch 6 before the shell ran
    assert f.ready().chunks == ()


def test_install_snapshot_frames_are_decoded_strictly() -> None:
    good = InstallSnapshot(1, 2, 5, 40, 4, 0, b"abc", False)
    assert decode(encode(good)) == good
    with pytest.raises(ValueError):
        encode(InstallSnapshot(1, 2, 5, 40, 6, 0, b"abc", False))  # index_epoch above the epoch
    with pytest.raises(ValueError):
        encode(InstallSnapshot(1, 2, 5, 40, 4, 0, "abc", False))  # type: ignore[arg-type]
    frame = bytearray(encode(good))
    with pytest.raises(DecodeError):
        decode(bytes(frame[:-2]))


# ------------------------------------------------------------------ real nodes


def wait_compacted(c: LocalCluster, nodes: list[int], past: int = 1) -> None:
    wait_until(f"nodes {nodes} to compact their logs",
               lambda: all(st.get("log_first_index", 1) > past for st in c.statuses(nodes).values())
               and len(c.statuses(nodes)) == len(nodes), 30)


def mailbox_listing(c: LocalCluster, node: int) -> list[Any]:
    return c.request(node, "mailboxes", {"pattern": "*"}).result["mailboxes"]


def assert_same_everywhere(c: LocalCluster, acked: Acked) -> None:
    listings = {i: mailbox_listing(c, i) for i in c.ids}
    assert len({repr(v) for v in listings.values()}) == 1, listings
    for i in c.ids:
        assert_exactly_once(c, acked, node=i)


@pytest.mark.slow
def test_the_wal_shrinks_and_a_killed_node_restarts_from_snapshot_and_compacted_wal(make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=KEEP)
    c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "cmp", range(1, 301), lambda s: f"box{s % 3}", acked, via=lambda s: (s % 3) + 1)
    c.wait_converged(20)
    wait_compacted(c, list(c.ids), past=100)
    victim = 2
    c.kill(victim, signal.SIGKILL)
    wal_path = Path(c.cfg.node_data_dir(victim)) / WAL_NAME
    replay, _ = replay_buffer(read_log(wal_path), str(wal_path))
    assert replay.first_index > 100 and len(replay.entries) <= 3 * KEEP + 10, (replay.first_index, len(replay.entries))
    out = CliRunner().invoke(log_cli, ["inspect", str(wal_path)])
    assert out.exit_code == 0 and "SNAPSHOT_MARK" in out.output and "compacted" in out.output
    c.start(victim)
    digest = c.wait_converged(20)
    assert "store from the snapshot of index" in c.node_log(victim, last_life=True)
    send_seq(c, "cmp", range(301, 321), lambda s: "box0", acked)
    assert c.wait_converged(20) != digest
    assert_same_everywhere(c, acked)


@pytest.mark.slow
def test_a_follower_down_while_the_leader_compacted_catches_up_by_snapshot(make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=KEEP)
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "early", range(1, 21), lambda s: "box", acked)
    c.wait_converged(20)
    behind = next(i for i in c.ids if i != lead)
    its_last = c.status(behind)["last_index"]
    c.kill(behind, signal.SIGKILL)
    send_seq(c, "late", range(1, 301), lambda s: f"box{s % 4}", acked, via=lambda s: lead)
    wait_compacted(c, [lead], past=its_last + 1)
    c.start(behind)
    c.wait_converged(30)
    st = c.status(behind)
    assert st["snapshot_shipping"]["installed"] >= 1 and st["log_first_index"] > its_last + 1
    assert "installed the snapshot of index" in c.node_log(behind, last_life=True)
    assert f"node {behind} needs entry" in c.node_log(lead)
    assert c.status(lead)["snapshot_shipping"]["chunks_sent"] >= 1
    send_seq(c, "after", range(1, 11), lambda s: "box", acked)  # it follows the log again
    c.wait_converged(20)
    assert_same_everywhere(c, acked)


@pytest.mark.slow
def test_a_bad_snapshot_under_a_compacted_wal_refuses_to_start_and_a_wiped_node_resyncs(
        make_cluster: MakeCluster) -> None:
    c = make_cluster(snapshot_entries=KEEP)
    lead = c.wait_for_leader(15)
    acked: Acked = {}
    send_seq(c, "w", range(1, 251), lambda s: f"box{s % 5}", acked, via=lambda s: (s % 3) + 1)
    c.wait_converged(20)
    node = next(i for i in c.ids if i != lead)
    wait_compacted(c, [node], past=KEEP)
    wait_until("no snapshot being written", lambda: not c.status(node)["snapshot_writing"], 20)
    c.kill(node, signal.SIGKILL)
    data_dir = Path(c.cfg.node_data_dir(node))
    snap = data_dir / SNAPSHOT_NAME
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    c.start(node)
    assert c.wait_exit(node, 15) == EXIT_NO_SNAPSHOT
    lines = [ln for ln in c.node_log(node, last_life=True).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "compacted" in lines[0] and "checksum mismatch" in lines[0]
    assert f"wipe its data directory {data_dir}" in lines[0] and "re-syncs" in lines[0]
    snap.unlink()
    c.start(node)
    assert c.wait_exit(node, 15) == EXIT_NO_SNAPSHOT
    assert "is missing" in c.node_log(node, last_life=True)
    send_seq(c, "w", range(251, 301), lambda s: "box1", acked)  # the other two still serve
    shutil.rmtree(data_dir)  # what the line says to do
    c.start(node)
    c.wait_converged(30)
    assert c.status(node)["snapshot_shipping"]["installed"] >= 1
    assert_same_everywhere(c, acked)
