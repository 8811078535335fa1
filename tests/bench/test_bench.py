"""The benchmark commands run end to end (figures come from them; no speed is asserted)."""

from __future__ import annotations

import os

import pytest

from zrep.bench.options import QUICK, options
from zrep.bench.report import DEFAULT_HISTORY, cpu_seconds, format_cpu
from zrep.bench.suite import _check_errors
from zrep.bench.workers import (
    BenchError,
    LevelResult,
    WorkerReport,
    merge,
    percentile,
    split,
)

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


def test_full_runs_go_to_the_repos_bench_history_by_default():
    # (it once resolved to zrep/bench/history.jsonl, beside the code, where nobody looked)
    assert DEFAULT_HISTORY.parent.name == "bench" and DEFAULT_HISTORY.parent.parent.joinpath("setup.cfg").is_file()
    assert DEFAULT_HISTORY.is_file()
