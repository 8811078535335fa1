"""The benchmark commands run end to end (figures come from them; no speed is asserted)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from click.testing import CliRunner

from zrep import bench_ceiling
from zrep.bench import _check_errors
from zrep.bench_ceiling import measure_ceiling
from zrep.bench_options import QUICK, options
from zrep.bench_report import cpu_seconds, format_cpu
from zrep.bench_workers import BenchError, LevelResult, WorkerReport, merge, percentile, split
from zrep.cli import main


def test_bench_failover_measures_each_kill():
    result = CliRunner().invoke(main, ["bench", "failover", "--kills", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["kills"] == 2 and len(report["all_ms"]) == 2
    assert 0 < report["median_ms"] <= report["max_ms"] < 15_000


def test_bench_quick_runs_every_phase_and_prints_one_json_object(tmp_path):
    history = tmp_path / "history.jsonl"
    result = CliRunner().invoke(main, ["bench", "--quick", "--json", "--no-history", "--history", str(history)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not history.exists()  # --no-history wins
    assert "bench: sends @64 in flight" in result.stderr  # progress goes to stderr, never to stdout
    assert set(report["sends"]) == {"1", "64", "256"}
    for level in report["sends"].values():
        assert level["per_s"] > 0 and level["errors"] == {}
        assert 0 < level["p50_ms"] <= level["p99_ms"] <= level["max_ms"] < 15_000
    for kind in ("linearizable", "stale"):
        assert report["reads"][kind]["per_s"] > 0
    for level in [*report["sends"].values(), *(report["reads"][k] for k in ("linearizable", "stale"))]:
        cpu = level["cpu_us_per_req"]  # (nodes' CPU comes in 10 ms clock ticks: a quick level may show 0)
        assert set(cpu["nodes"]) == {"1", "2", "3"} and str(cpu["leader"]) in cpu["nodes"]
        assert min(cpu["nodes"].values()) >= 0 and cpu["clients"] > 0
    assert 0 < report["failover"]["median_ms"] <= report["failover"]["max_ms"] < 15_000
    assert report["catchup_per_s"] > 0 and report["catchup"]["entries"] >= 2_000
    assert report["memory"]["messages"] >= 5_000
    assert 1 < report["rss_mb_per_node"] == max(report["memory"]["rss_mb"].values()) < 4096
    assert report["cluster"]["fsync"] is True and report["cluster"]["nodes"] == 3
    assert report["wire"] == "batched"  # the load workers batch unless --no-batch
    assert "cores" in report["machine"] and report["date"].endswith("Z")
    floor = report["floor"]
    assert 0 < floor["rtt"]["p50_ms"] <= floor["rtt"]["p99_ms"] < 1_000 and floor["fsync_per_s"] > 0
    assert floor["send_floor_ms"] == pytest.approx(2 * floor["rtt"]["p50_ms"] + 1000 / floor["fsync_per_s"], abs=0.01)
    assert 0 < floor["fsync_each_of_3_per_s"] < 10 * floor["fsync_per_s"]  # each of 3 at once: not 0, not absurd
    ceiling = floor["ceiling"]  # --quick: as many bare sends as requests per level
    assert ceiling["sends"] == QUICK["count"] and ceiling["per_s"] > 0 and 0 < ceiling["p50_ms"] <= ceiling["p99_ms"]


def test_bench_appends_one_history_line_per_run(tmp_path):
    history = tmp_path / "bench" / "history.jsonl"
    for _ in range(2):
        result = CliRunner().invoke(main, ["bench", "--only", "reads", "--count", "40", "--warmup", "0",
                                           "--history", str(history)])
        assert result.exit_code == 0, result.output
        assert "linearizable reads at the leader, 64 in flight" in result.stdout  # the readable report
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["sends"] is None and lines[0]["reads"]["stale"]["per_s"] > 0
    assert "commit" in lines[0] and lines[0]["options"]["phases"] == ["reads"]


def test_bench_floor_alone_starts_no_cluster_and_says_what_it_measured(tmp_path):
    result = CliRunner().invoke(main, ["bench", "floor", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "zmq round trip between two processes: p50" in result.stdout and "send floor" in result.stdout
    assert list(tmp_path.iterdir()) == []  # its scratch file is gone
    result = CliRunner().invoke(main, ["bench", "--only", "floor", "--json", "--no-history"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["floor"]["send_floor_ms"] > 0 and report["cluster"] is None and report["sends"] is None


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def test_bench_ceiling_answers_each_send_and_leaves_no_process_or_file(tmp_path):
    result = measure_ceiling(str(tmp_path), sends=50, warmup=5)
    assert result["sends"] == 50 and result["per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"] < 10_000
    cpu = result["cpu_us_per_send"]  # the nodes' CPU comes in 10 ms ticks: 50 sends may show 0
    assert cpu["client"] > 0 and cpu["leader"] >= 0 and len(cpu["followers"]) == 2
    assert list(tmp_path.iterdir()) == [] and _processes_naming(str(tmp_path)) == []


def test_bench_ceiling_says_so_when_its_bare_leader_cannot_start(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # the leader's port, already in use: the bare leader exits at once
    real = bench_ceiling.free_ports
    monkeypatch.setattr(bench_ceiling, "free_ports", lambda host, n, seen: [taken.getsockname()[1]] + real(host, 2, seen))
    with taken, pytest.raises(RuntimeError, match="exited"):
        measure_ceiling(str(tmp_path), sends=5, warmup=0)
    assert _processes_naming(str(tmp_path)) == []


def test_only_and_skip_together_is_a_usage_error():
    result = CliRunner().invoke(main, ["bench", "--only", "reads", "--skip", "sends"])
    assert result.exit_code == 2 and "not both" in result.stderr


# ---------------------------------------------------------------- the pure parts


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 50) == percentile([7.0], 99) == 7.0
    assert percentile([1, 2], 50) == 1 and percentile([1, 2], 99) == 2
    with pytest.raises(ValueError):
        percentile([], 50)


def test_merge_pools_samples_counts_errors_and_spans_the_wall_window():
    a = WorkerReport(3, {"TIMEOUT": 1}, start=10.0, end=11.0, latencies_ms=[1.0, 2.0, 9.0])
    b = WorkerReport(2, {"TIMEOUT": 2, "NOT_LEADER": 1}, start=10.5, end=12.0, latencies_ms=[3.0, 4.0])
    r = merge([a, b])
    assert (r.acked, r.failed, r.seconds, r.per_s) == (5, 4, 2.0, 2.5)  # 5 acks over 10.0 .. 12.0
    assert r.errors == {"NOT_LEADER": 1, "TIMEOUT": 3}
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (3.0, 9.0, 9.0)
    counts_only = merge([WorkerReport(4, {}, 0.0, 2.0, [])])
    assert counts_only.p50_ms is None and "p50_ms" not in counts_only.to_json()
    assert merge([WorkerReport(1, {}, 0.0, 1.0, [], cpu_s=0.25), WorkerReport(1, {}, 0.0, 1.0, [], cpu_s=0.5)]).client_cpu_s == 0.75


def test_cpu_per_request_reads_in_the_text_report():
    cpu = {"leader": 2, "nodes": {"1": 35.2, "2": 67.0, "3": 34.6}, "clients": 21.0}
    assert format_cpu(cpu) == "leader 67, followers 35 + 35, clients 21"
    assert cpu_seconds(os.getpid()) > 0


def test_split_shares_differ_by_at_most_one():
    assert split(256, 2) == [128, 128] and split(7, 3) == [3, 2, 2] and split(1, 2) == [1, 0]
    assert sum(split(100_001, 7)) == 100_001


def test_quick_sets_small_counts_and_given_options_win():
    assert options().messages == 1_000_000
    quick = options(quick=True, kills=3, seconds=None)
    assert quick.messages == QUICK["messages"] and quick.seconds == QUICK["seconds"] and quick.kills == 3


def test_too_many_errors_fail_the_run_with_one_line():
    ok = LevelResult(999, {"TIMEOUT": 1}, 1.0, 999.0, None, None, None)
    _check_errors("sends", ok, 0.01)
    bad = LevelResult(90, {"NOT_LEADER": 10}, 1.0, 90.0, None, None, None)
    with pytest.raises(BenchError, match=r"sends: 10 of 100 requests failed \(NOT_LEADER: 10\)"):
        _check_errors("sends", bad, 0.01)
    with pytest.raises(BenchError, match="no request was answered OK"):
        _check_errors("reads", LevelResult(0, {}, 1.0, 0.0, None, None, None), 0.01)
