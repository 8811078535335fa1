"""The node's journal (log lines + event ring) and its plain-counter histograms, in-process."""

from __future__ import annotations

import json
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from zrep.node.journal import Journal, note_kind
from zrep.node.stats import LATENCY_BOUNDS_S, Buckets, NodeStats


def test_text_lines_keep_todays_format() -> None:
    lines: list[str] = []
    j = Journal(4, lines.append)
    j.say("started: rpc x")
    j.say("warning: the disk is slow")
    assert [line.split(" ", 1)[1] for line in lines] == ["node 4: started: rpc x", "node 4: warning: the disk is slow"]
    assert [e["event"] for e in j.since()] == ["note", "warning"]
    assert j.since()[1]["level"] == "warning"


def test_json_lines_are_one_object_each_with_the_agreed_keys() -> None:
    lines: list[str] = []
    j = Journal(2, lines.append, "json")
    j.event("leader", "leader is node 2 in epoch 3", leader=2, epoch=3)
    j.say("plain")
    objs = [json.loads(line) for line in lines]
    assert [set(o) for o in objs] == [{"time", "ts", "node", "level", "event", "message", "fields"}] * 2
    assert objs[0]["fields"] == {"leader": 2, "epoch": 3} and objs[0]["event"] == "leader" and objs[0]["node"] == 2
    with pytest.raises(ValueError):
        Journal(1, lines.append, "xml")


def test_the_ring_is_bounded_and_answers_after_a_sequence_number() -> None:
    j = Journal(1, lambda line: None, ring=50)
    for i in range(200):
        j.event("note", f"n{i}")
    kept = j.since()
    assert len(kept) == 50 and kept[0]["seq"] == 151 and kept[-1]["seq"] == 200
    assert [e["seq"] for e in j.since(after_seq=197)] == [198, 199, 200]
    assert j.since(since_t=kept[-1]["t"] + 1) == []


def test_copying_the_ring_while_the_loop_appends_never_fails() -> None:
    j = Journal(1, lambda line: None, ring=100)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                j.since(after_seq=5)
            except BaseException as e:  # noqa: BLE001 (the test reports any)
                errors.append(e)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(50_000):
        j.event("note", "x")
    stop.set()
    t.join()
    assert errors == []


@pytest.mark.parametrize("text, kind", [
    ("suspects leader 3 after 31 ticks; asking peers", "election_started"),
    ("claims epoch 4 with rank (1, 9, 2)", "election_claim"),
    ("is leader with promises from [1, 2]", "election_won"),
    ("got promises from [2] only; giving up the claim", "election_lost"),
    ("a better-ranked node will run; waiting for its Coordinator", "stood_aside"),
    ("a peer still hears a healthy leader; not running", "stood_aside"),
    ("only 1 of 3 answered; not running", "stood_aside"),
    ("following node 2", "following"),
    ("saw epoch 5 from node 1 in Append; stepping down", "stepped_down"),
    ("heard from 1 of 3 nodes in 30 ticks; stepping down", "stepped_down"),
    ("installed the snapshot of index 900 from node 1", "install"),
    ("node 3 needs entry 5 below the log start 100; sending the snapshot", "snapshot_ship"),
    ("node 3 lost entries 4..9 it had acknowledged; resending", "note"),
    ("truncates conflicting suffix from 7", "note"),
])
def test_core_notes_become_timeline_kinds(text: str, kind: str) -> None:
    assert note_kind(text) == kind


def test_buckets_match_prometheus_client_histogram_semantics() -> None:
    b = Buckets(LATENCY_BOUNDS_S)
    values = [0.0001, 0.0005, 0.0007, 0.003, 0.5, 0.5001, 12.0]
    for v in values:
        b.observe(v)
    cumulative, total = b.cumulative()
    assert total == pytest.approx(sum(values))
    as_dict = dict(cumulative)
    assert as_dict["0.0005"] == 2  # le is inclusive
    assert as_dict["0.001"] == 3 and as_dict["0.5"] == 5 and as_dict["1.0"] == 6 and as_dict["+Inf"] == 7

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            fam = HistogramMetricFamily("x_seconds", "x", labels=[])
            fam.add_metric([], cumulative, total)
            yield fam

    reg = CollectorRegistry()
    reg.register(One())  # type: ignore[arg-type]
    (fam,) = text_string_to_metric_families(generate_latest(reg).decode())
    counts = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert counts["+Inf"] == 7 and counts["0.0005"] == 2


def test_stats_count_answers_by_op_and_outcome() -> None:
    s = NodeStats()
    s.took("send")
    s.answered("send", "OK", 0.002)
    s.answered("send", "NO_LEADER", 0.0001)
    assert s.requests == {"send": 1}
    assert s.answers == {("send", "OK"): 1, ("send", "NO_LEADER"): 1}
    assert sum(s.latency["send"].counts) == 2


def test_metered_wal_times_each_flush_counts_its_bytes_and_batches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from zrep.core.messages import Entry
    from zrep.node.stats import MeteredWal

    wal, _ = MeteredWal.open(tmp_path / "wal")
    slow: list[tuple[float, int]] = []
    wal.stats, wal.slow_s, wal.on_slow = NodeStats(), 0.0, lambda s, b: slow.append((s, b))
    try:
        before = wal.synced_offset
        wal.append_entries([Entry(1, 1, b"a" * 100), Entry(1, 2, b"b" * 100)])
        wal.sync()
        wal.append_entries([Entry(1, 3, b"c")])
        wal.set_commit(3)
        wal.sync()
        wal.set_commit(3)
        wal.sync()  # only a commit hint: written, not flushed, so not a flush to time
        stats = wal.stats
        assert sum(stats.fsync.counts) == 2 and stats.fsync.sum > 0
        assert stats.fsync_bytes == wal.synced_offset - before > 200
        assert [b for _, b in slow] == [wal.synced_offset - before - slow[1][1], slow[1][1]]
        assert dict(stats.wal_batch.cumulative()[0])["2"] == 2  # batches of 2 and 1 entries
    finally:
        wal.close()
