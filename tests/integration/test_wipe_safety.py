"""A wiped node must never help forget an acknowledged write (issue 15's counterexample).

Three nodes A=1, B=2, C=3. B is down; e is acknowledged, so it is on A and C.
C's data directory is wiped and A dies; B and C come back. Before incarnation
ids, C, empty, promised B (every log is at least as fresh as an empty one)
and B, which lacks e, led: e was gone. Now C's fresh directory starts with
--join under a new incarnation: an observer whose promises count for nothing
(the configuration names C's old incarnation), so B cannot gather a quorum and
the cluster waits. Once A returns, e is still there.

(`zrep admin replace 3` would then turn C back into a voter: the admin tool's
part, tested with it.)
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from harness import ClusterError, LocalCluster, wait_until


def test_a_wiped_node_and_one_more_failure_never_lose_an_acknowledged_write(tmp_path: Path) -> None:
    with LocalCluster(tmp_path) as c:
        c.wait_for_leader(15)
        # The first leader writes the formed configuration naming every incarnation.
        wait_until("a formed configuration everywhere", lambda: all(
            not s["forming"] and s["config_index"] > 0 for s in c.statuses().values()) and len(c.statuses()) == 3, 15)
        c.kill(2, signal.SIGKILL)  # B down: a majority is now exactly A and C
        acked = c.send("wipe-test", 1, "box", b"e")
        assert acked["offset"] == 0
        c.kill(3, signal.SIGKILL)
        shutil.rmtree(c.cfg.node_data_dir(3))  # C's disk is replaced
        c.kill(1, signal.SIGKILL)  # one failure too many: A dies before C could copy e again
        c.start(2)
        c.start(3)  # a fresh directory, started before: LocalCluster passes --join
        assert "(join)" in wait_until("C started", lambda: "started: " in c.node_log(3, last_life=True)
                                      and c.node_log(3, last_life=True), 15)
        with pytest.raises(ClusterError):
            c.wait_for_leader(8, nodes=[2, 3])  # waiting is the only correct outcome: no quorum without A
        with pytest.raises(ClusterError):
            c.send("wipe-test", 2, "box", b"f", timeout=3)  # and B refuses or times out, never forgets
        assert c.status(3)["voter"] is False
        c.start(1)  # A returns: A and B form a quorum of the formed configuration, e included
        c.wait_for_leader(15, nodes=[1, 2])
        rows = c.read("box", timeout=15)
        assert [body for _, _, body, _ in rows] == [b"e"], "an acknowledged write was lost"
        # C copies the log, learns the configuration names its old disk, and says what to run.
        st = wait_until("C knows it lost its state", lambda: (s := c.status(3)).get("lost_state") and s, 15)
        assert "node 3 lost its state: run `zrep admin replace 3`" in st["lost_state"]
        assert st["voter"] is False and st["role_name"] == "observer" and c.running(3)
