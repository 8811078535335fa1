"""The durable WAL: crash recovery, torn tails, corruption, storage failures, inspect."""

from __future__ import annotations

import errno
import json
import os
import random
import tempfile
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import zrep.storage.wal as wal_module
from zrep.core.messages import Entry, HardState
from zrep.errors import CorruptLogError, InvariantError, StorageError
from zrep.cli.log import log
from zrep.storage.wal import Wal
from zrep.storage.wal_format import Commit, Scan, SnapshotMark, Truncate, encode_record, written_tail, zeros_from


def write_file(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def log_bytes(path) -> bytes:
    """A WAL file's records, without the zeros it preallocates after them (checked to be zeros)."""
    data = read_file(path)
    scan = Scan(data)
    for _ in scan:
        pass
    assert scan.stop is not None and zeros_from(data, scan.stop.offset), "something other than zeros follows"
    return data[:scan.stop.offset]


def open_fresh(path, data: bytes):
    write_file(path, data)
    return Wal.open(path)


# -- the crash property ----------------------------------------------------------


@dataclass
class Model:
    """What replay must return after each record boundary, built without the Wal."""

    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState = field(default_factory=HardState)
    commit: int = 0
    offset: int = 0  # bytes written or buffered so far
    written: int = 0  # bytes handed to the file by sync()
    synced: int = 0
    needs_flush: bool = False
    boundaries: list[tuple[int, tuple]] = field(default_factory=lambda: [(0, ([], HardState(), 0))])

    def record(self, rec, flush: bool = True) -> None:
        self.offset += len(encode_record(rec))
        self.needs_flush = self.needs_flush or flush
        self.boundaries.append((self.offset, (list(self.entries), self.hard_state, self.commit)))

    def state_at(self, cut: int) -> tuple[int, tuple]:
        return max((b for b in self.boundaries if b[0] <= cut), key=lambda b: b[0])


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4), st.integers(0, 1), st.binary(max_size=40)),
        st.tuples(st.just("truncate"), st.integers(0, 50)),
        st.tuples(st.just("hard_state"), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("commit"), st.integers(0, 50)),
        st.tuples(st.just("sync")),
    ),
    max_size=30,
)


def run_ops(wal: Wal, m: Model, steps) -> None:
    for step in steps:
        kind, args = step[0], step[1:]
        if kind == "append":
            count, bump, data = args
            epoch = (m.entries[-1].epoch if m.entries else 1) + bump
            batch = [Entry(epoch, len(m.entries) + 1 + i, data) for i in range(count)]
            wal.append_entries(batch)
            for e in batch:
                m.entries.append(e)
                m.record(e)
        elif kind == "truncate":
            lo, hi = m.commit + 1, len(m.entries) + 1
            start = lo + args[0] % (hi - lo + 1)
            wal.truncate(start)
            del m.entries[start - 1 :]
            m.record(Truncate(start))
        elif kind == "hard_state":
            bump, vote = args
            old = m.hard_state
            if bump == 0 and old.vote not in (0, vote):
                vote = old.vote
            hs = HardState(old.epoch + bump, vote)
            wal.set_hard_state(hs)
            if hs != old:
                m.hard_state = hs
                m.record(hs)
        elif kind == "commit":
            last = len(m.entries)
            if last > m.commit:
                m.commit += 1 + args[0] % (last - m.commit)
                wal.set_commit(m.commit)
                m.record(Commit(m.commit), flush=False)
            else:
                wal.set_commit(m.commit)  # no progress: no record
        else:
            wal.sync()
            m.written = m.offset
            if m.needs_flush:
                m.synced, m.needs_flush = m.offset, False
            assert wal.synced_offset == m.synced


def crash(fd: int) -> None:
    raise OSError(errno.EIO, "crashed before the flush")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=ops,
    cut_pick=st.integers(0, 10**9),
    tail_kind=st.sampled_from(["none", "zeros", "garbage"]),
    zeros=st.integers(1, 5000),
    garbage=st.binary(min_size=1, max_size=64),
)
def test_replay_after_a_crash_is_the_synced_state_plus_whole_records(
    tmp_path, steps, cut_pick, tail_kind, zeros, garbage
) -> None:
    work = tempfile.mkdtemp(dir=tmp_path)
    m = Model()
    wal, replay = Wal.open(os.path.join(work, "node", "wal"))
    assert replay.entries == [] and replay.torn_bytes == 0
    run_ops(wal, m, steps)
    # The crash comes inside a last sync, after its write and before its flush,
    # so the file holds every buffered record yet only m.synced bytes are durable.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wal_module, "sync_data", crash)
        try:
            wal.sync()
        except StorageError:
            pass
    raw = read_file(wal.path)  # what the crash leaves; close() below is only cleanup
    on_disk = raw[:m.offset]
    assert zeros_from(raw, m.offset)  # the preallocated rest
    assert wal.synced_offset == m.synced
    wal.close()

    cut = m.synced + cut_pick % (len(on_disk) - m.synced + 1)
    tail = {"none": b"", "zeros": bytes(zeros), "garbage": garbage}[tail_kind]
    crashed = on_disk[:cut] + tail
    path = os.path.join(work, "crashed", "wal")
    # The tail may happen to repeat the bytes that were cut (a zero tail after a
    # record ending in a zero byte): what replay may keep is what agrees with the file.
    agree = next((i for i, (a, b) in enumerate(zip(crashed, on_disk)) if a != b), min(len(crashed), len(on_disk)))
    good_end, (entries, hs, commit) = m.state_at(agree)
    assert good_end >= m.synced
    event(f"whole records past the flush: {good_end > m.synced}; torn: {good_end < len(crashed)}")

    wal2, replay = open_fresh(path, crashed)
    assert (replay.entries, replay.hard_state, replay.commit) == (entries, hs, commit)
    assert replay.torn_bytes == written_tail(crashed, good_end)  # zeros after it are preallocated space
    assert bool(replay.warnings) == (replay.torn_bytes > 0)
    assert wal2.synced_offset == good_end and zeros_from(read_file(path), good_end)
    # The repaired log takes new writes and replays cleanly with them.
    extra = Entry(hs.epoch, len(entries) + 1, b"after")
    wal2.append_entries([extra])
    wal2.sync()
    wal2.close()
    wal3, again = Wal.open(path)
    wal3.close()
    assert again.torn_bytes == 0 and again.warnings == []
    assert (again.entries, again.hard_state, again.commit) == (entries + [extra], hs, commit)


# -- torn tails and corruption at every byte ------------------------------------


def small_log(path) -> tuple[bytes, list[int]]:
    wal, _ = Wal.open(path)
    wal.set_hard_state(HardState(1, 1))
    wal.append_entries([Entry(1, 1, b"first"), Entry(1, 2, b"second entry")])
    wal.set_commit(1)
    wal.sync()
    wal.append_entries([Entry(2, 3, bytes(range(256)) + b"the last one")])
    wal.sync()
    wal.close()
    data = log_bytes(path)
    return data, [offset for offset, _ in Scan(data)]


EXPECTED_BEFORE_LAST = [Entry(1, 1, b"first"), Entry(1, 2, b"second entry")]


@pytest.mark.parametrize("fill", ["cut", "zeros"])
def test_torn_tail_at_every_byte_of_the_last_record(tmp_path, fill) -> None:
    data, offsets = small_log(tmp_path / "orig" / "wal")
    last = offsets[-1]
    path = tmp_path / "torn" / "wal"
    for cut in range(last + 1, len(data)):
        # "zeros": the file kept its full size (and more) but the tail never reached the disk.
        torn = data[:cut] + (bytes(len(data) - cut + 4096) if fill == "zeros" else b"")
        wal, replay = open_fresh(path, torn)
        wal.close()
        assert replay.entries == EXPECTED_BEFORE_LAST, cut
        assert (replay.hard_state, replay.commit) == (HardState(1, 1), 1)
        written = len(data[last:cut].rstrip(b"\0"))  # a cut inside the length's zero bytes left none
        assert replay.torn_bytes == written
        assert len(replay.warnings) == (1 if written else 0)
        assert not written or f"torn tail of {written} bytes at byte {last}" in replay.warnings[0]
        assert log_bytes(path) == data[:last]
        wal, again = Wal.open(path)
        wal.close()
        assert (again.entries, again.torn_bytes, again.warnings) == (EXPECTED_BEFORE_LAST, 0, [])


def test_flipped_bit_in_an_earlier_record_is_corruption_at_its_offset(tmp_path) -> None:
    data, offsets = small_log(tmp_path / "orig" / "wal")
    path = tmp_path / "bad" / "wal"
    for record_no in (0, 1, 2):  # hard state, first entry, second entry
        start, end = offsets[record_no], offsets[record_no + 1]
        for bit in range((end - start) * 8):
            damaged = bytearray(data)
            damaged[start + bit // 8] ^= 1 << (bit % 8)
            write_file(path, bytes(damaged))
            with pytest.raises(CorruptLogError) as info:
                Wal.open(path)
            assert (info.value.offset, info.value.path) == (start, str(path)), (record_no, bit)
            assert read_file(path) == bytes(damaged)  # never "repaired"


def test_bad_last_record_is_indistinguishable_from_a_torn_write(tmp_path) -> None:
    # The documented limit of the rule: bit rot in the very last record is cut.
    data, offsets = small_log(tmp_path / "orig" / "wal")
    damaged = bytearray(data)
    damaged[-1] ^= 1
    wal, replay = open_fresh(tmp_path / "bad" / "wal", bytes(damaged))
    wal.close()
    assert replay.entries == EXPECTED_BEFORE_LAST and replay.torn_bytes == len(data) - offsets[-1]


# -- replay semantics ---------------------------------------------------------------


def records_file(*records) -> tuple[bytes, list[int]]:
    frames = [encode_record(r) for r in records]
    return b"".join(frames), [sum(map(len, frames[:i])) for i in range(len(frames))]


@pytest.mark.parametrize(
    "records, bad, reason",
    [
        ([Entry(1, 1, b""), Entry(1, 3, b"")], 1, "does not follow"),
        ([Entry(1, 2, b"")], 0, "does not follow"),
        ([Entry(1, 1, b""), Truncate(3)], 1, "outside the log"),
        ([Entry(1, 1, b""), Commit(1), Truncate(1)], 2, "committed"),
        ([Commit(1)], 0, "beyond the last entry"),
        ([HardState(2, 1), HardState(1, 1)], 1, "goes back"),
        ([HardState(2, 1), HardState(2, 3)], 1, "vote changes"),
        ([SnapshotMark(5, 1), SnapshotMark(3, 1)], 1, "behind the log start"),
        ([Entry(1, 1, b""), Entry(1, 2, b""), Commit(2), SnapshotMark(2, 9)], 3, "committed"),
    ],
)
def test_replay_refuses_records_that_break_the_rules(tmp_path, records, bad, reason) -> None:
    data, offsets = records_file(*records)
    write_file(tmp_path / "wal", data)
    with pytest.raises(CorruptLogError, match=reason) as info:
        Wal.open(tmp_path / "wal")
    assert info.value.offset == offsets[bad]


def test_truncate_then_restart_the_index(tmp_path) -> None:
    data, _ = records_file(Entry(1, 1, b"a"), Entry(1, 2, b"b"), Entry(1, 3, b"c"), Truncate(2), Entry(2, 2, b"B"))
    wal, replay = open_fresh(tmp_path / "wal", data)
    assert replay.entries == [Entry(1, 1, b"a"), Entry(2, 2, b"B")]
    wal.append_entries([Entry(2, 3, b"C")])
    with pytest.raises(InvariantError):
        wal.append_entries([Entry(2, 5, b"gap")])
    wal.close()


def test_log_may_start_above_one(tmp_path) -> None:
    data, _ = records_file(SnapshotMark(5, 2), Entry(2, 5, b"e5"), Entry(3, 6, b"e6"))
    wal, replay = open_fresh(tmp_path / "wal", data)
    assert (replay.first_index, replay.prev_epoch, replay.commit) == (5, 2, 4)
    assert [e.index for e in replay.entries] == [5, 6]
    with pytest.raises(InvariantError):
        wal.truncate(4)  # inside the snapshot
    wal.append_entries([Entry(3, 7, b"e7")])
    wal.close()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert [e.index for e in replay.entries] == [5, 6, 7]


def test_snapshot_mark_keeps_a_matching_suffix_and_drops_a_conflicting_log(tmp_path) -> None:
    entries = [Entry(1, 1, b""), Entry(1, 2, b""), Entry(2, 3, b""), Entry(2, 4, b"")]
    data, _ = records_file(*entries, SnapshotMark(3, 1))
    wal, replay = open_fresh(tmp_path / "a" / "wal", data)
    wal.close()
    assert (replay.first_index, replay.entries, replay.commit) == (3, entries[2:], 2)
    data, _ = records_file(*entries, SnapshotMark(3, 5))  # entry 2 had epoch 1, not 5
    wal, replay = open_fresh(tmp_path / "b" / "wal", data)
    wal.close()
    assert (replay.first_index, replay.entries, replay.prev_epoch) == (3, [], 5)


# -- the writer -------------------------------------------------------------------


def test_new_file_and_directories_are_flushed(tmp_path, monkeypatch) -> None:
    flushed_dirs: list[str] = []
    real = wal_module.sync_dir
    monkeypatch.setattr(wal_module, "sync_dir", lambda p: (flushed_dirs.append(p), real(p)))
    path = tmp_path / "a" / "b" / "wal"
    wal, replay = Wal.open(path)
    wal.close()
    assert os.path.isfile(path) and replay.entries == [] and replay.first_index == 1
    assert {str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")} <= set(flushed_dirs)


def test_writer_refuses_what_replay_would_reject(tmp_path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.append_entries([Entry(1, 1, b""), Entry(1, 2, b"")])
    wal.set_hard_state(HardState(2, 1))
    wal.set_commit(1)
    for call in (
        lambda: wal.append_entries([Entry(1, 4, b"")]),
        lambda: wal.append_entries([Entry(1, 3, b""), Entry(1, 3, b"")]),
        lambda: wal.truncate(1),  # committed
        lambda: wal.truncate(4),
        lambda: wal.set_hard_state(HardState(1, 1)),
        lambda: wal.set_hard_state(HardState(2, 3)),
        lambda: wal.set_commit(3),
    ):
        with pytest.raises(InvariantError):
            call()
    assert wal.last_index == 2  # a refused batch left nothing behind
    wal.close()
    with pytest.raises(InvariantError, match="closed"):
        wal.sync()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert (len(replay.entries), replay.hard_state, replay.commit) == (2, HardState(2, 1), 1)


def test_second_open_of_the_same_file_is_refused(tmp_path) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    with pytest.raises(StorageError, match="in use"):
        Wal.open(tmp_path / "wal")
    wal.close()
    Wal.open(tmp_path / "wal")[0].close()


def count_flushes(monkeypatch, fail: bool = False) -> list[int]:
    calls: list[int] = []

    def flush(fd: int) -> None:
        calls.append(fd)
        if fail:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", flush, raising=False)
    monkeypatch.setattr(os, "fsync", flush)
    return calls


def test_group_commit_is_one_write_and_one_flush_and_hints_flush_nothing(tmp_path, monkeypatch) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    flushes = count_flushes(monkeypatch)
    writes: list[int] = []
    real_write = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, b, at: (writes.append(len(b)), real_write(fd, b, at))[1])
    wal.append_entries([Entry(1, i, b"x" * 100) for i in range(1, 101)])
    wal.set_hard_state(HardState(1, 1))
    assert wal.synced_offset == 0 and log_bytes(wal.path) == b""  # buffered only
    wal.sync()
    assert (len(writes), len(flushes)) == (1, 1)
    synced = wal.synced_offset
    assert synced == len(log_bytes(wal.path))
    wal.set_commit(50)
    wal.sync()
    assert (len(writes), len(flushes), wal.synced_offset) == (2, 1, synced)
    wal.sync()  # nothing buffered: no syscall at all
    assert (len(writes), len(flushes)) == (2, 1)
    wal.close()  # a clean close keeps the hint
    assert len(flushes) == 2


def test_failed_flush_is_never_retried_and_poisons_the_wal(tmp_path, monkeypatch) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    flushes = count_flushes(monkeypatch, fail=True)
    wal.append_entries([Entry(1, 1, b"x")])
    with pytest.raises(StorageError, match="fsync failed"):
        wal.sync()
    assert wal.synced_offset == 0
    for call in (
        wal.sync,
        lambda: wal.append_entries([Entry(1, 2, b"")]),
        lambda: wal.truncate(1),
        lambda: wal.set_hard_state(HardState(1, 1)),
        lambda: wal.set_commit(1),
    ):
        with pytest.raises(StorageError, match="unusable"):
            call()
    wal.close()
    assert len(flushes) == 1


def test_short_writes_are_completed(tmp_path, monkeypatch) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    real_write = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, b, at: real_write(fd, bytes(b[:7]), at))
    entries = [Entry(1, i, bytes([i]) * 50) for i in range(1, 11)]
    wal.append_entries(entries)
    wal.sync()
    wal.close()
    monkeypatch.undo()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert replay.entries == entries


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EIO])
def test_failed_write_after_a_short_write_poisons_the_wal_and_is_cut_on_restart(tmp_path, monkeypatch, code) -> None:
    wal, _ = Wal.open(tmp_path / "wal")
    wal.append_entries([Entry(1, 1, b"kept")])
    wal.sync()
    real_write = os.pwrite
    calls = []

    def half_then_fail(fd: int, b, at: int) -> int:
        calls.append(len(b))
        if len(calls) > 1:
            raise OSError(code, os.strerror(code))
        return real_write(fd, bytes(b[: len(b) // 2]), at)

    monkeypatch.setattr(os, "pwrite", half_then_fail)
    wal.append_entries([Entry(1, 2, b"y" * 100)])
    with pytest.raises(StorageError, match="write failed"):
        wal.sync()
    with pytest.raises(StorageError):
        wal.sync()
    assert len(calls) == 2
    wal.close()
    monkeypatch.undo()
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert replay.entries == [Entry(1, 1, b"kept")] and replay.torn_bytes > 0


def test_unwritable_location_is_a_storage_error(tmp_path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        Wal.open(tmp_path / "file" / "wal")


# -- zrep log inspect ----------------------------------------------------------------


def inspect(path, *args):
    return CliRunner().invoke(log, ["inspect", str(path), *args])


def test_inspect_clean(tmp_path) -> None:
    data, offsets = small_log(tmp_path / "wal")
    result = inspect(tmp_path / "wal")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(offsets) + 1
    assert lines[1].split()[:3] == [str(offsets[1]), "ENTRY", "index=1"]
    assert "b'first'" in lines[1]
    assert lines[-1].startswith(f"clean end at byte {len(data)}: entries 1..3, commit 1")


def test_inspect_torn_reports_the_cut_and_leaves_the_file(tmp_path) -> None:
    data, offsets = small_log(tmp_path / "wal")
    write_file(tmp_path / "wal", data[:-3] + bytes(100))
    result = inspect(tmp_path / "wal")
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == len(offsets)  # the last record is not listed
    assert f"torn tail at byte {offsets[-1]}" in result.output
    assert "would be cut on start" in result.output
    assert read_file(tmp_path / "wal") == data[:-3] + bytes(100)


def test_inspect_corrupt_names_the_byte_and_lists_what_follows(tmp_path) -> None:
    data, offsets = small_log(tmp_path / "wal")
    damaged = bytearray(data)
    damaged[offsets[1] + 10] ^= 0x10
    write_file(tmp_path / "wal", bytes(damaged))
    result = inspect(tmp_path / "wal")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[1].split()[:2] == [str(offsets[1]), "BAD"]
    assert lines[2].split()[:2] == [str(offsets[2]), "ENTRY"]
    assert lines[-1].startswith(f"corruption at byte {offsets[1]}: CRC mismatch")
    assert lines[-1].endswith("(node will refuse to start)")


def test_inspect_json(tmp_path) -> None:
    data, offsets = small_log(tmp_path / "wal")
    write_file(tmp_path / "wal", data + b"\x00" * 8 + b"\x07" + bytes(4096))  # zeros after it: free space
    result = inspect(tmp_path / "wal", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["offset"] for r in rows[:-1]] == offsets
    assert rows[2] == {"offset": offsets[2], "type": "ENTRY", "size": offsets[3] - offsets[2], "index": 2,
                       "epoch": 1, "detail": "12B b'second entry'"}
    assert rows[-1] == {"end": "torn", "offset": len(data), "torn_bytes": 9}


def test_inspect_semantic_corruption(tmp_path) -> None:
    data, offsets = records_file(Entry(1, 1, b""), Entry(1, 3, b""))
    write_file(tmp_path / "wal", data)
    result = inspect(tmp_path / "wal")
    assert result.exit_code == 1
    assert f"corruption at byte {offsets[1]}: entry index 3 does not follow 1" in result.output


def test_random_damage_never_escapes_as_another_error(tmp_path) -> None:
    data, _ = small_log(tmp_path / "orig" / "wal")
    rng = random.Random(7)
    for i in range(200):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        damaged = damaged[: rng.randint(0, len(damaged))]
        try:
            wal, _ = open_fresh(tmp_path / f"r{i}" / "wal", bytes(damaged))
        except CorruptLogError:
            continue
        wal.close()


# -- preallocation -------------------------------------------------------------------


def test_the_file_is_preallocated_and_its_zeros_are_free_space_not_a_torn_tail(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(wal_module, "PREALLOC_BYTES", 4096)  # cross many steps with few records
    path = tmp_path / "wal"
    wal, _ = Wal.open(path)
    assert os.path.getsize(path) == 4096
    entries = [Entry(1, i, bytes([i % 251]) * 300) for i in range(1, 101)]
    for e in entries:
        wal.append_entries([e])
        wal.sync()
        assert os.path.getsize(path) > wal.synced_offset  # always room ahead: no size change to flush
    assert os.path.getsize(path) % 4096 == 0
    wal.close()
    wal, replay = Wal.open(path)
    assert (replay.entries, replay.torn_bytes, replay.warnings) == (entries, 0, [])
    wal.append_entries([Entry(1, 101, b"more")])
    wal.sync()
    wal.close()
    assert len(log_bytes(path)) == wal.synced_offset


def test_a_torn_write_into_the_preallocated_space_is_cut_and_zeroed(tmp_path) -> None:
    path = tmp_path / "wal"
    wal, _ = Wal.open(path)
    wal.append_entries([Entry(1, 1, b"kept")])
    wal.sync()
    end = wal.synced_offset
    wal.close()
    stale = encode_record(Entry(1, 2, b"stale"))  # a write that landed whole, then bytes of another
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(stale[:11])
    wal, replay = Wal.open(path)
    assert replay.entries == [Entry(1, 1, b"kept")] and replay.torn_bytes == 11
    wal.append_entries([Entry(2, 2, b"new")])  # written over the cut bytes
    wal.sync()
    wal.close()
    wal, replay = Wal.open(path)
    wal.close()
    assert replay.entries == [Entry(1, 1, b"kept"), Entry(2, 2, b"new")] and replay.warnings == []


def test_bytes_after_a_hole_are_read_not_taken_for_free_space(tmp_path) -> None:
    # A sparse file whose data resumes after a hole: replay must see that data (here a
    # valid record after the gap: corruption, as a hole inside the log is).
    path = tmp_path / "wal"
    first = encode_record(Entry(1, 1, b"one"))
    with open(path, "wb") as f:
        f.write(first)
        f.seek(1 << 20)
        f.write(encode_record(Entry(1, 2, b"two")))
        f.truncate(4 << 20)
    with pytest.raises(CorruptLogError):
        Wal.open(path)


def test_a_file_system_that_cannot_preallocate_still_gets_every_record(tmp_path, monkeypatch) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    wal, _ = Wal.open(tmp_path / "wal")
    entries = [Entry(1, i, b"x" * 50) for i in range(1, 21)]
    for e in entries:
        wal.append_entries([e])
        wal.sync()
    wal.close()
    assert os.path.getsize(tmp_path / "wal") == wal.synced_offset  # plain appends
    wal, replay = Wal.open(tmp_path / "wal")
    wal.close()
    assert (replay.entries, replay.warnings) == (entries, [])
