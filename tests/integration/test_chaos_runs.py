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

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zrep.chaos import netfaults
from zrep.chaos.leftovers import node_pids
from zrep.chaos.report import LABELS
from zrep.local.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
SANDBOX = netfaults.sandbox_unavailable() == ""  # root, unshare, ip, nft
MAIN_FAULTS = ["kill", "pause", "torn-tail", "restart-all"] + (["partition"] if SANDBOX else [])



def test_a_node_that_dies_by_itself_is_an_unexpected_exit(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, nodes=1) as c:
        c.wait_for_leader(15)
        c.kill(1)  # ours: expected
        c.start(1)
        c.wait_for_leader(15)
        os.killpg(c.procs[1].pid, signal.SIGKILL)  # not through the cluster: as if it crashed
        c.wait_exit(1)
        c.start(1)
        c.wait_for_leader(15)
        assert c.stop_all() == {1: 0}  # our SIGTERM, exit 0: expected
        [bad] = c.unexpected_exits()
        assert bad.returncode == -signal.SIGKILL and bad.signal is None and "no signal of ours" in bad.describe()
        assert len(c.lives) == 3


# ================================================================ whole runs


def _run(tmp_path: Path, args: list[str], timeout: float, env: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "zrep", "chaos", "--dir", str(tmp_path / "run"), "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chaos run did not end within {timeout}s:\n{err[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (nothing, normally)
        except ProcessLookupError:
            pass
    try:
        report = json.loads(out)
    except ValueError:
        report = None
    return proc.returncode, report, err


def _summary(report: dict[str, Any] | None, err: str) -> str:
    if report is None:
        return f"no report; stderr:\n{err[-3000:]}"
    lines = [f"faults {report['faults']} ops {report['ops']}"]
    for c in report["checks"]:
        lines.append(f"{'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['evidence'][:4]}")
    return "\n".join(lines) + f"\nstderr tail:\n{err[-1500:]}"


@pytest.mark.slow
def test_a_chaos_run_with_every_fault_passes_every_check(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    rc, report, err = _run(tmp_path, ["--duration", "45", "--seed", "7", "--faults", ",".join(MAIN_FAULTS),
                                      "--history", str(history)], 240)
    assert rc == 0, _summary(report, err)
    assert _verify(history) == 0  # the same verdict from `zrep verify` on the files
    assert report is not None and report["ok"]
    for fault in MAIN_FAULTS:
        assert report["faults"].get(fault, 0) >= 1, f"{fault} was asked for and never happened: {report['faults']}"
    names = {c["name"] for c in report["checks"]}
    assert set(LABELS) <= names and all(c["passed"] for c in report["checks"])
    torn = [f for f in report["fault_log"] if f["kind"] == "torn-tail" and "appended" in f["detail"]]
    assert all(f["repaired"] for f in torn), torn  # each node said it cut the torn tail
    assert report["ops"].get("send:ok", 0) > 100 and report["ops"].get("read:ok", 0) > 20
    if SANDBOX:
        assert report["settings"]["sandbox"] == "in a private network namespace"
        assert not _table_on_host()
    assert any(f["took_s"] is not None for f in report["failovers"])


@pytest.mark.slow
def test_a_secure_chaos_run_passes_every_check(tmp_path: Path) -> None:
    """bin/chaos --secure: CURVE on every socket, keys made for the run, the same checks."""
    rc, report, err = _run(tmp_path, ["--secure", "--keep", "--duration", "8", "--seed", "16", "--faults", "kill,pause"],
                           180)
    assert rc == 0, _summary(report, err)
    assert report is not None and report["ok"] and report["ops"].get("send:ok", 0) > 50
    assert report["faults"].get("kill", 0) + report["faults"].get("pause", 0) >= 1
    config = (tmp_path / "run" / "cluster" / "cluster.toml")
    assert 'mode = "curve"' in config.read_text()  # kept (--keep): the run really was secure


@pytest.mark.slow
def test_a_nasty_run_stalls_safely_while_a_majority_is_down(tmp_path: Path) -> None:
    rc, report, err = _run(tmp_path, ["--duration", "20", "--seed", "3", "--nasty",
                                      "--faults", ",".join(MAIN_FAULTS)], 180)
    assert rc == 0, _summary(report, err)
    assert report is not None and report["settings"]["nasty"]
    majority_down = [f for f in report["fault_log"] if f["kind"] in ("kill", "pause") and len(f["nodes"]) >= 2]
    assert majority_down, report["fault_log"]  # 2 of 3 nodes at once: no quorum, and nothing may diverge


# Planted bugs (zrep/core/replica.py BUGS) and the faults that expose them fast.
# Measured on 2 cores (seeds 11, 31-33, 51-60): never_truncate under partitions
# failed 15 of 15 runs (10 of 10 at 15 s, ~19 s each): an isolated leader keeps
# appending client writes, the majority writes others at those indexes, and
# after the heal the old leader keeps its own and applies them ((c), usually
# (a), (d) too). Under kills and pauses alone it failed 2 of 5 (25 s): too
# rare for a test. promise_not_persisted (restart-all, kills) 1 of 3,
# promise_behind_log 0 of 8 (the bully election's Answer round hides it),
# commit_old_epoch 0 of 3 and ack_before_persist 0 of 2 (a SIGKILLed process
# loses no page cache): those belong to the simulator (tests/test_sim.py). Under two CPU
# hogs (a loaded CI machine) seed 11 once missed it: the test tries seed 12 after a miss.
PLANTED = [
    pytest.param("never_truncate", "partition", 15, 11, marks=pytest.mark.skipif(
        not SANDBOX, reason="needs root, unshare, ip and nft for partitions")),
]
SAFETY = {"acknowledged_sends_durable", "no_duplicates", "replicas_identical", "linearizable",
          "no_unexpected_exits", "failed_sends_absent", "stale_reads_valid", "no_phantom_messages",
          "acknowledgements_consistent", "final_state_consistent"}


@pytest.mark.slow
@pytest.mark.parametrize("bug,faults,duration,seed", PLANTED)
def test_a_planted_bug_fails_the_chaos_run(tmp_path: Path, bug: str, faults: str, duration: int, seed: int) -> None:
    # No snapshots: with compaction, the old leader's divergent log usually sits below the new
    # leader's log start, and installing the snapshot replaces it (Raft's rule, correctly), so
    # the bug's path (appends that skip a conflict) would be taken too rarely to catch it.
    # A real-process run is timing-bound: on a loaded machine (CI's neighbours) fewer faults
    # land in the same seconds and a run can miss the bug. A second seed then gets its chance;
    # two misses fail the test.
    for attempt_seed in (seed, seed + 1):
        run_dir = tmp_path / f"seed-{attempt_seed}"
        run_dir.mkdir()
        rc, report, err = _run(run_dir, ["--duration", str(duration), "--seed", str(attempt_seed), "--faults", faults,
                                         "--unsafe-bug", bug, "--snapshot-entries", "0"], 180)
        if rc == 1:
            break
    assert rc == 1, _summary(report, err)
    assert report is not None and not report["ok"]
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert failed & SAFETY, _summary(report, err)
    assert "run_complete" not in failed, _summary(report, err)  # a finding, not a crash of the tool
    history = run_dir / "run" / "history.jsonl"
    assert history.exists()  # a failed run keeps its evidence
    history_failed = failed & {"acknowledged_sends_durable", "no_duplicates", "linearizable", "failed_sends_absent",
                               "stale_reads_valid", "no_phantom_messages", "acknowledgements_consistent",
                               "final_state_consistent"}
    assert _verify(history) == (1 if history_failed else 0)


def _verify(history: Path) -> int:
    final = history.with_name(history.stem + ".final.json")
    proc = subprocess.run([sys.executable, "-m", "zrep", "verify", str(history), "--final", str(final)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    return proc.returncode


def _table_on_host() -> bool:
    if not netfaults.is_root() or not shutil.which("nft"):
        return False
    proc = subprocess.run(["nft", "list", "table", netfaults.FAMILY, netfaults.TABLE], capture_output=True)
    return proc.returncode == 0


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = run_dir / "cluster" / "cluster.toml"
    cmd = [sys.executable, "-m", "zrep", "chaos", "--dir", str(run_dir), "--duration", "60", "--seed", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        history = run_dir / "history.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (history.exists() and history.stat().st_size > 10_000):
            time.sleep(0.2)
        assert node_pids(str(config)), "the run never started its nodes"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert not node_pids(str(config)), "a node outlived the run"
    assert not _table_on_host()


@pytest.mark.slow
def test_cleanup_removes_what_a_dead_run_left(tmp_path: Path) -> None:
    state_root = tmp_path / "tmp"
    state_dir = state_root / "zrep-chaos"
    state_dir.mkdir(parents=True)
    run_dir = tmp_path / "dead-run"
    c = LocalCluster(run_dir / "cluster", nodes=1)
    try:
        c.wait_for_leader(15)
        config = str(c.config_path)
        assert node_pids(config), c.log_tails()
        # What a run killed by SIGKILL leaves: its state file (unlocked now), nodes, directory.
        (state_dir / "run-dead.json").write_text(json.dumps(
            {"pid": 1, "dir": str(run_dir), "config": config, "keep": False, "netns": False, "nft": False}))
        env = dict(os.environ, TMPDIR=str(state_root))
        cmd = [sys.executable, "-m", "zrep", "chaos", "--cleanup"]
        if SANDBOX:  # a leftover table too, in a namespace of its own so the host is never touched
            script = (f"ip link set lo up && nft add table {netfaults.FAMILY} {netfaults.TABLE} && "
                      f'"$0" "$@" && ! nft list table {netfaults.FAMILY} {netfaults.TABLE} 2>/dev/null')
            cmd = ["unshare", "--net", "sh", "-c", script, *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "killed leftover node" in proc.stderr
        if SANDBOX:
            assert "removed the nftables table" in proc.stderr
        c.wait_exit(1, 10)
        assert not node_pids(config) and not run_dir.exists() and not list(state_dir.iterdir())
    finally:
        c.close()
