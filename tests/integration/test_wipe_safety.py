"""A wiped node must never help forget an acknowledged write (issue 15's counterexample).

Three nodes A=1, B=2, C=3. B is down; e is acknowledged, so it is on A and C.
C's data directory is wiped and A dies; B and C come back. C, empty, promises
B (every log is at least as fresh as an empty one) and B, which lacks e, leads:
e is gone. One failure too many must make the cluster wait, never forget.

This fails today: the fix is an identity that dies with the disk (incarnation
ids in the replicated configuration, issue 15). It is marked xfail(strict), so
the day it passes the mark must go, and until then it documents the hole that
the README's fault model states.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from harness import ClusterError, LocalCluster


@pytest.mark.xfail(strict=True, reason="issue 15: a wiped node promises any coordinator (no incarnation ids yet)")
def test_a_wiped_node_and_one_more_failure_never_lose_an_acknowledged_write(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as c:
        c.wait_for_leader(15)
        c.kill(2, signal.SIGKILL)  # B down: a majority is now exactly A and C
        acked = c.send("wipe-test", 1, "box", b"e")
        assert acked["offset"] == 0
        c.kill(3, signal.SIGKILL)
        shutil.rmtree(c.cfg.node_data_dir(3))  # C's disk is replaced
        c.kill(1, signal.SIGKILL)  # one failure too many: A dies before C could copy e again
        c.start(2)
        c.start(3)
        try:
            c.wait_for_leader(15, nodes=[2, 3])
        except ClusterError:
            return  # waiting (no leader without A) is a correct outcome: nothing was forgotten
        rows = c.read("box", timeout=15)
        assert [body for _, _, body, _ in rows] == [b"e"], "an acknowledged write was lost"
