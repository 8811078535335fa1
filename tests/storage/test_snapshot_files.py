"""Store snapshots: the file format, when a snapshot may stand in for the log,
the forked writer, and real nodes that restart from one.

The promise checked: a restart from a snapshot serves exactly what a restart
from the log would (same digest, every acknowledged message once), and a bad
snapshot is never trusted: the node rebuilds from its log instead.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from stores import filled_store

from zrep.core.messages import Entry, HardState
from zrep.errors import DecodeError
from zrep.local.cluster import wait_until
from zrep.storage import snapshot_writer
from zrep.storage.snapshot_files import (
    SNAPSHOT_NAME,
    TMP_PREFIX,
    decode_snapshot,
    encode_snapshot,
    load_snapshot,
    remove_stale_tmp,
    write_snapshot,
)
from zrep.storage.snapshot_writer import SnapshotWriter
from zrep.storage.wal import Replay
from zrep.store.commands import pack_send
from zrep.store.store import StoreLimits


def replay_of(epochs: list[int], first_index: int = 1, prev_epoch: int = 0) -> Replay:
    entries = [Entry(e, first_index + k, b"") for k, e in enumerate(epochs)]
    return Replay(HardState(max(epochs, default=0), 0), entries, first_index, 0, 0, [], prev_epoch)


def wait_child_done(w: SnapshotWriter, timeout: float = 30.0) -> snapshot_writer.Written:
    out: list[snapshot_writer.Written] = []

    def done() -> bool:
        r = w.poll()
        if r is not None:
            out.append(r)
        return bool(out)

    wait_until("the snapshot child to exit", done, timeout, interval=0.01)
    return out[0]


# ------------------------------------------------------------------ the file


def test_a_snapshot_round_trips_to_an_equal_store() -> None:
    s = filled_store(50)
    snap = decode_snapshot(encode_snapshot(50, 3, s.to_bytes()))
    assert (snap.index, snap.epoch) == (50, 3)
    assert snap.store.digest() == s.digest() and snap.store.read("box1") == s.read("box1")


def test_every_torn_or_flipped_snapshot_is_refused_with_a_decode_error() -> None:
    data = encode_snapshot(20, 1, filled_store(20).to_bytes())
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_snapshot(data[:cut])
    for at in range(0, len(data), 7):
        bad = bytearray(data)
        bad[at] ^= 0x40
        with pytest.raises(DecodeError):
            decode_snapshot(bytes(bad))


def test_a_header_that_disagrees_with_the_store_is_refused() -> None:
    body = filled_store(5).to_bytes()
    with pytest.raises(DecodeError, match="applied 5, the header says 6"):
        decode_snapshot(encode_snapshot(6, 1, body))


def test_write_replaces_the_file_atomically_and_stale_temporaries_are_removed(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 3, 1, filled_store(3).to_bytes())
    write_snapshot(tmp_path, 7, 2, filled_store(7).to_bytes())
    assert decode_snapshot((tmp_path / SNAPSHOT_NAME).read_bytes()).index == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]
    (tmp_path / f"{TMP_PREFIX}12345").write_bytes(b"half a snapshot")
    remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]


# ------------------------------------------------------------------ may it stand in for the log?


def test_load_takes_a_snapshot_that_matches_the_log(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 4, 2, filled_store(4).to_bytes())
    snap, why = load_snapshot(tmp_path, replay_of([1, 1, 2, 2, 2]), StoreLimits())
    assert why == "" and snap is not None and snap.index == 4


@pytest.mark.parametrize("epochs, limits, expect", [
    ([1, 1, 2], StoreLimits(), "the log holds 1..3"),  # the log lost its tail (a disk that lied)
    ([1, 1, 1, 1, 1], StoreLimits(), "the log has epoch 1 there"),  # diverged from the snapshot
    ([1, 1, 2, 2, 2], StoreLimits(max_body_bytes=10), "other store limits"),  # answers would differ
])
def test_load_refuses_a_snapshot_the_log_or_config_contradicts(tmp_path: Path, epochs: list[int],
                                                                limits: StoreLimits, expect: str) -> None:
    write_snapshot(tmp_path, 4, 2, filled_store(4).to_bytes())
    snap, why = load_snapshot(tmp_path, replay_of(epochs), limits)
    assert snap is None and expect in why and "rebuilding the store from the log" in why


def test_load_without_a_file_is_silent_and_a_corrupt_file_is_named(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path, replay_of([1]), StoreLimits()) == (None, "")
    (tmp_path / SNAPSHOT_NAME).write_bytes(b"ZREPSNAP garbage")
    snap, why = load_snapshot(tmp_path, replay_of([1]), StoreLimits())
    assert snap is None and SNAPSHOT_NAME in why and "ignored" in why


# ------------------------------------------------------------------ the forked writer


def test_the_child_writes_the_store_as_it_was_at_the_fork(tmp_path: Path) -> None:
    store = filled_store(2000)
    at_fork = store.digest()
    w = SnapshotWriter(tmp_path)
    w.start(store, epoch=4)
    store.apply(2001, pack_send("c", 2001, 2001, "", "box0", b"after the fork"))  # copy-on-write keeps it out
    done = wait_child_done(w)
    assert done.error == "" and done.index == 2000 and not w.running
    snap = decode_snapshot((tmp_path / SNAPSHOT_NAME).read_bytes())
    assert (snap.index, snap.epoch, snap.store.digest()) == (2000, 4, at_fork)


def test_a_failed_write_comes_back_as_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    w = SnapshotWriter(not_a_dir)
    w.start(filled_store(3), epoch=1)
    done = wait_child_done(w)
    assert "NotADirectoryError" in done.error and "\n" not in done.error


def test_the_child_keeps_none_of_the_parents_descriptors_and_stop_kills_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(*args: object) -> None:  # runs in the child only: hold it while we look at it
        time.sleep(60)

    monkeypatch.setattr(snapshot_writer, "write_snapshot", stuck)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    w = SnapshotWriter(tmp_path)
    try:
        w.start(filled_store(3), epoch=1)
        child = w._pid
        fd_dir = Path(f"/proc/{child}/fd")

        def closed() -> bool:  # the child closes them first thing after the fork
            try:
                return sorted(int(p.name) for p in fd_dir.iterdir()) == [0, 1, 2, _write_end(child)]
            except (FileNotFoundError, ValueError):
                return False

        wait_until("the child to close the inherited descriptors", closed, 10)
    finally:
        w.stop()
        listening.close()
    assert not w.running
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def _write_end(pid: int) -> int:
    """The one descriptor besides stdio the child keeps: the pipe it reports errors on."""
    fds = [int(p.name) for p in Path(f"/proc/{pid}/fd").iterdir() if int(p.name) > 2]
    pipes = [fd for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")]
    return pipes[0] if len(pipes) == 1 else -1
