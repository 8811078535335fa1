"""A data directory written before identities is upgraded in place, every message kept (issue 15).

The directories are crafted with today's storage API (Wal, Store, write_snapshot):
acknowledged sends in the log of every node, committed; node 3's log compacted
under a snapshot that carries no configuration. None has an `identity` file. The
new code gives each an identity (mode init) and the provisional seed
configuration, says so in one line, forms the first configuration once all three
run, and serves every message.
"""

from __future__ import annotations

from pathlib import Path

from harness import LocalCluster, wait_until

from zrep.core.messages import Entry, HardState
from zrep.storage.identity import read_identity
from zrep.storage.snapshot_files import write_snapshot
from zrep.storage.wal import Wal
from zrep.store.commands import encode_send
from zrep.store.store import Store

SENDS = 40
SNAPSHOT_AT = 25  # node 3's log starts after this index; the snapshot holds the rest


def legacy_log() -> list[Entry]:
    noop = [Entry(1, 1, b"")]
    return noop + [Entry(1, i + 2, encode_send("old-client", i + 1, i + 1, "s", f"box{i % 3}", b"m%d" % i))
                   for i in range(SENDS)]


def write_legacy_dir(directory: Path, entries: list[Entry], snapshot_at: int | None) -> None:
    wal, _ = Wal.open(directory / "wal")
    try:
        wal.append_entries(entries)
        wal.set_hard_state(HardState(1, 1))
        wal.set_commit(entries[-1].index)
        wal.sync()
        if snapshot_at is not None:
            store = Store()
            store.apply_run(entries[:snapshot_at])
            write_snapshot(directory, snapshot_at, entries[snapshot_at - 1].epoch, store.to_bytes())
            wal.rewrite(snapshot_at + 1, entries[snapshot_at - 1].epoch)
    finally:
        wal.close()


def test_directories_written_before_identities_are_upgraded_with_every_message(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, start=False) as c:
        entries = legacy_log()
        for i in c.ids:
            write_legacy_dir(c.cfg.node_data_dir(i), entries, SNAPSHOT_AT if i == 3 else None)
            assert read_identity(c.cfg.node_data_dir(i)) is None
        c.start()  # no flag: the directories are not fresh
        c.wait_for_leader(20)
        for i in c.ids:
            log = c.node_log(i)
            assert "upgraded" in log and "once every node runs this version" in log, log
            assert read_identity(c.cfg.node_data_dir(i)).mode == "init"
        wait_until("the first configuration formed", lambda: all(
            not s["forming"] and s["config_index"] > entries[-1].index and s["voter"]
            for s in c.statuses().values()) and len(c.statuses()) == 3, 20)
        incs = {s["incarnation"] for s in c.statuses().values()}
        assert len(incs) == 3 and 0 not in incs
        for box in range(3):
            rows = c.read(f"box{box}")
            assert [body for _, _, body, _ in rows] == [b"m%d" % i for i in range(SENDS) if i % 3 == box]
        c.send("new-client", 1, "box0", b"after")  # and it serves writes
        c.wait_converged(20)
