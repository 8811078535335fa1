"""`zrep chaos`: the pieces in-process, then whole runs as real processes.

Whole runs (marked slow, in the normal suite):
  * a ~45 s run with a fixed seed and every fault this machine can do
    (partitions only as root with nft, inside a private namespace) passes
    every check, and every fault asked for happened;
  * runs against nodes with a planted bug FAIL, on a safety check, with the
    run itself complete (a finding, not a crash of the tool): a checker
    that cannot fail is not a checker;
  * Ctrl-C ends a run with exit 130, no node process and no rule left;
  * `--cleanup` kills a dead run's nodes, deletes its table and directory.
Every run has a hard timeout and is killed by process group at the end.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from zrep.chaos import netfaults
from zrep.cli.chaos import chaos
from zrep.chaos.history import HistoryWriter, load_history, pair_ops
from zrep.chaos.nemesis import FAULTS, Draw, Nemesis, majority, power_cut_targets, tear_tail
from zrep.chaos.report import Check, RunReport, from_verify
from zrep.chaos.runner import Options
from zrep.chaos.verify import check
from zrep.chaos.workload import Stats, Worker, WorkloadSettings, client_config
from zrep.client import OutcomeUnknown, Receipt, Rejected, Unavailable
from zrep.core.messages import Entry
from zrep.local.cluster import CLIENT_HOST, LocalCluster
from zrep.storage.wal import Wal
from zrep.storage.wal_format import Scan, StopKind, encode_entry

REPO = Path(__file__).resolve().parents[2]
SANDBOX = netfaults.sandbox_unavailable() == ""  # root, unshare, ip, nft
MAIN_FAULTS = ["kill", "pause", "torn-tail", "restart-all"] + (["partition"] if SANDBOX else [])


# ================================================================ pieces


def test_a_torn_tail_is_a_record_cut_short_after_intact_records(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    records = b"".join(encode_entry(Entry(1, i, b"x" * (i * 7))) for i in range(1, 6))
    for seed in range(40):
        wal.write_bytes(records)
        what = tear_tail(wal, random.Random(seed))
        data = wal.read_bytes()
        assert what.startswith("appended") and data[:len(records)] == records and len(data) > len(records)
        scan = Scan(data)
        assert [o for o, _ in scan] == [o for o, _ in Scan(records)]
        assert scan.stop is not None and scan.stop.kind is StopKind.TORN and scan.stop.offset == len(records)
    # A log that already ends torn is left alone: one torn tail, never two.
    before = wal.read_bytes()
    assert tear_tail(wal, random.Random(1)).startswith("left as it was") and wal.read_bytes() == before


class _Ids:
    def __init__(self, n: int) -> None:
        self.ids = tuple(range(1, n + 1))


@pytest.mark.parametrize("n", [3, 5])
def test_partition_shapes_keep_a_majority_unless_nasty(n: int) -> None:
    for nasty in (False, True):
        seen = set()
        for seed in range(300):
            nem = Nemesis(_Ids(n), list(FAULTS), random.Random(seed), nasty=nasty, net=None,  # type: ignore[arg-type]
                          history=None, stop=threading.Event(), election_timeout_s=0.5)  # type: ignore[arg-type]
            leader = random.Random(seed).choice([None, 1, n])
            shape, pairs, desc, hit = nem._shape(Draw.of(nem.rng, tuple(range(1, n + 1))), leader)
            seen.add(shape)
            assert pairs and all(a != b and 1 <= a <= n and 1 <= b <= n for a, b in pairs), desc
            if shape in ("isolate", "leader-minority", "split"):
                # some side of a majority still talks both ways with itself
                cut_off = {a for a, _ in pairs}
                assert len(cut_off) == n and all((b, a) in pairs for a, b in pairs)
                assert hit == (leader is not None and any((leader, b) in pairs for b in range(1, n + 1))
                               and _side(leader, pairs, n) < majority(n))
            if shape == "no-majority":
                assert all(_side(i, pairs, n) < majority(n) for i in range(1, n + 1)), desc
        assert ("no-majority" in seen) == nasty
        assert {"isolate", "leader-minority", "split", "bridge", "one-way"} <= seen


def _side(node: int, pairs: set[tuple[int, int]], n: int) -> int:
    return sum(1 for j in range(1, n + 1) if j == node or ((node, j) not in pairs and (j, node) not in pairs))


def test_rules_only_ever_name_loopback_addresses() -> None:
    with pytest.raises(netfaults.NetFaultError, match="127.0.0.0/8"):
        netfaults.NetFaults({1: "127.0.0.1", 2: "10.0.0.2"})
    assert "one address per node" in netfaults.partitions_unavailable({1: "127.0.0.1", 2: "127.0.0.1"}) or \
        not netfaults.is_root()
    net = netfaults.NetFaults({1: "127.0.0.1", 2: "127.0.0.2"})
    with pytest.raises(netfaults.NetFaultError, match="distinct nodes"):
        net.cut({(1, 1)})
    assert not net.installed  # refused before nft ran


def test_without_root_partitions_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netfaults, "is_root", lambda: False)
    assert netfaults.partitions_unavailable({1: "127.0.0.1", 2: "127.0.0.2"}) == "partitions need root (nftables)"
    assert netfaults.sandbox_unavailable() == "not root"


def test_options_survive_the_trip_into_the_namespace(tmp_path: Path) -> None:
    opts = Options(nodes=5, duration_s=12.5, seed=9, clients=3, mailboxes=2, faults=("kill", "partition"),
                   nasty=True, history=str(tmp_path / "h.jsonl"), keep=True, dir=str(tmp_path / "d"), as_json=True,
                   bugs=("never_truncate",), netns=False, recovery_s=7.0, heartbeat_ms=40, election_timeout_ms=400,
                   snapshot_entries=77)
    ctx = chaos.make_context("chaos", opts.argv())
    p = ctx.params
    assert (p["nodes"], p["duration_s"], p["seed"], p["clients"], p["mailboxes"]) == ("5", 12.5, 9, 3, 2)
    assert p["faults"] == ("kill", "partition") and p["nasty"] and p["keep"] and p["as_json"] and p["no_netns"]
    assert p["bugs"] == ("never_truncate",) and p["recovery_s"] == 7.0 and p["election_timeout_ms"] == 400
    assert p["snapshot_entries"] == 77
    assert p["history"] == str(tmp_path / "h.jsonl") and p["run_dir"] == str(tmp_path / "d")


def test_zrep_lists_chaos_and_verify() -> None:
    from zrep.cli import main

    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "chaos" in top.output and "verify" in top.output
    for command in ("chaos", "verify"):
        assert runner.invoke(main, [command, "--help"]).exit_code == 0


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(chaos, ["--faults", "kill,meteor"]).exit_code == 2
    assert runner.invoke(chaos, ["--nodes", "4"]).exit_code == 2
    assert runner.invoke(chaos, ["--duration", "0"]).exit_code == 2


# ---------------------------------------------------------------- workload outcomes


class _FakeClient:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls = 0

    def _next(self) -> Any:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def send(self, box: str, body: str) -> Any:
        return self._next()

    def delete(self, box: str, offsets: list[int]) -> Any:
        return self._next()

    def read(self, box: str, **kw: Any) -> Any:
        return self._next()

    def close(self) -> None:
        pass


RECEIPT = Receipt("box-0", 3, 17, 2, [1, 2], None, 1)


@pytest.mark.parametrize("script,outcome,calls", [
    ([RECEIPT], "ok", 1),
    ([OutcomeUnknown("t"), OutcomeUnknown("t"), RECEIPT], "ok", 3),  # retried, same (client, seq)
    ([Unavailable("no leader")], "fail", 1),  # nothing accepted
    ([Rejected("BAD_MAILBOX", "no")], "fail", 1),
    ([OutcomeUnknown("t"), Unavailable("no leader")], "info", 2),  # the first attempt may have landed
    ([OutcomeUnknown("t")] * 3, "info", 3),  # retries are bounded
    ([RuntimeError("bug")], "info", 1),  # an error of ours: unknown, never fail
])
def test_a_write_fails_only_when_nothing_can_have_happened(tmp_path: Path, script: list[Any], outcome: str,
                                                           calls: int) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=1, start=False)
    cluster.close()
    cfg = cluster.cfg
    history = HistoryWriter(tmp_path / "h.jsonl")
    w = Worker(0, WorkloadSettings(1, ("box-0",), 1, "t"), cfg, history, Stats(), threading.Event())
    w.client.close()
    fake = _FakeClient(list(script))
    w.client = fake  # type: ignore[assignment]
    w._op_send("box-0")
    history.close()
    [op] = pair_ops(load_history(tmp_path / "h.jsonl"))
    assert (op.type, fake.calls) == (outcome, calls)
    if outcome == "ok":
        assert (op.extras["offset"], op.extras["index"], op.extras["epoch"]) == (3, 17, 2)


def test_clients_get_a_source_address_apart_from_every_node(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, hosts=["127.0.0.1", "127.0.0.2", "127.0.0.3"], start=False)
    try:
        cc = client_config(c.cfg, CLIENT_HOST)
        assert all(n.rpc.startswith(f"tcp://{CLIENT_HOST}:0;127.0.0.{n.id}:") for n in cc.nodes)
        assert client_config(c.cfg, None) is c.cfg
    finally:
        c.close()


def test_a_check_verify_skipped_has_not_passed() -> None:
    report = check([], None)  # no final state: (a) cannot be shown
    checks = {c.name: c for c in from_verify(report)}
    assert not checks["acknowledged_sends_durable"].passed and checks["acknowledged_sends_durable"].skipped
    run = RunReport({}, {}, [], {}, {}, 0.0, [], list(checks.values()), {})
    assert not run.ok and "SKIP" in run.format()
    assert not RunReport({}, {}, [], {}, {}, 0.0, [], [], {}).ok  # no checks: nothing shown
    assert RunReport({}, {}, [], {}, {}, 0.0, [], [Check("x", True, "d")], {}).ok


@pytest.mark.parametrize("n", [3, 5])
def test_power_cuts_often_take_every_node_else_a_minority(n: int) -> None:
    ids = list(range(1, n + 1))
    scopes: dict[str, int] = {}
    torn = 0
    for seed in range(400):
        d = Draw.of(random.Random(seed), tuple(ids))
        nodes, scope, torn_seed = power_cut_targets(d, ids, leader=1)
        scopes[scope] = scopes.get(scope, 0) + 1
        torn += torn_seed is not None
        if scope == "all":
            assert nodes == ids
        else:
            assert 1 <= len(nodes) < majority(n) and set(nodes) <= set(ids)
    assert 150 <= scopes["all"] <= 250  # about half: the case that proves durability
    assert scopes.get("one", 0) > 0 and (scopes.get("minority", 0) > 0) == (n == 5)
    assert 60 <= torn <= 180


def test_power_cuts_say_why_they_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from zrep.chaos.powerfs import mount

    real_exists = os.path.exists
    monkeypatch.setattr(mount.os.path, "exists", lambda p: False if p == "/dev/fuse" else real_exists(p))
    assert "no /dev/fuse" in mount.unavailable()
    monkeypatch.setattr(mount.os.path, "exists", lambda p: True if p == "/dev/fuse" else real_exists(p))
    monkeypatch.setattr(mount.os, "geteuid", lambda: 1000)
    assert "need root" in mount.unavailable()


def test_the_report_counts_power_cuts_by_scope() -> None:
    from zrep.chaos.report import power_cut_summary

    log = [{"kind": "power-cut", "scope": "all", "nodes": [1, 2, 3], "torn_seed": 5,
            "dropped_bytes": {"1": 10, "2": 0, "3": 7}, "kept_torn_bytes": {"1": 3, "2": 0, "3": 0}},
           {"kind": "power-cut", "scope": "one", "nodes": [2], "torn_seed": None, "dropped_bytes": {"2": 1},
            "kept_torn_bytes": {"2": 0}},
           {"kind": "kill", "nodes": [1]}]
    assert power_cut_summary(log) == {"cuts": 2, "all_nodes": 1, "one_node": 1, "minority": 0, "torn": 1,
                                      "disks_cut": 4, "unsynced_bytes_dropped": 18, "torn_bytes_kept": 3}


def test_a_torn_tail_lands_right_after_the_last_record_of_a_preallocated_wal(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal, _ = Wal.open(path)
    entries = [Entry(1, i, b"y" * i) for i in range(1, 6)]
    wal.append_entries(entries)
    wal.sync()
    end = wal.synced_offset
    wal.close()
    for seed in range(20):
        what = tear_tail(path, random.Random(seed))
        assert what.endswith(f"after byte {end}"), what
        wal, replay = Wal.open(path)  # the node's own repair: cut it, and say so
        wal.close()
        assert replay.entries == entries and replay.torn_bytes > 0 and "torn tail" in replay.warnings[0]
