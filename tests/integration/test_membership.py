"""Membership changes on real processes, through `zrep admin` and the client library.

What must hold: `members` shows the configuration the leader uses; a follower
removed (and added back) under a steady write load costs no acknowledged
write and does not stop the writes; demote keeps the cluster serving; a
change that would leave the live voters without a quorum is refused with one
line and EXIT_REJECTED, while a dead voter can always be removed; `inspect`
reads a stopped node's configuration from its WAL.

Every node has an identity (zrep.storage.identity): a removed node stops with
its own exit code, and a wiped node restarts with --join and is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from harness import LocalCluster, wait_until

from zrep.aio import Client as AioClient
from zrep.client import Client, ClientError, Membership
from zrep.config import write_config
from zrep.exit_codes import EXIT_OK, EXIT_REJECTED, NODE_REMOVED
from zrep.local.writer import BackgroundWriter

ROOT = Path(__file__).resolve().parents[2]


def admin(c: LocalCluster | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    config = ["--config", str(c.config_path)] if c is not None else []  # inspect is offline: no cluster file
    return subprocess.run([sys.executable, "-m", "zrep", "admin", *args, *config],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def members_json(c: LocalCluster) -> dict[str, Any]:
    proc = admin(c, "members", "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    return json.loads(proc.stdout)


def read_all(c: LocalCluster, mailbox: str) -> list[str]:
    with Client(c.config_path, timeout_s=10) as cl:
        return [m.body.decode() for m in cl.read(mailbox, limit=10_000).messages]


def wait_member(cl: Client, what: str, check: Callable[[Membership], bool], timeout: float = 15) -> Membership:
    def probe() -> Membership | None:
        view = cl.members()
        return view if check(view) else None

    return wait_until(what, probe, timeout)


def test_members_lists_three_voters_as_the_leader_sees_them(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    view = members_json(cluster)
    assert view["voters"] == [1, 2, 3] and view["learners"] == []
    assert view["leader"] == leader and view["node"] == leader, "the client asks the leader"
    assert view["committed"] is True
    assert {m["state"] for m in view["members"]} == {"leader", "live"}
    assert all(isinstance(m["lag"], int) for m in view["members"])
    text = admin(cluster, "members")
    assert text.returncode == EXIT_OK and f"leader node {leader}" in text.stdout

    async def from_asyncio() -> Membership:
        async with AioClient(cluster.config_path, timeout_s=10) as c:
            return await c.members()

    assert asyncio.run(from_asyncio()).voters == [1, 2, 3]

    # update writes the addresses into the configuration (here the ones the file has: the node stays put)
    follower = min(i for i in cluster.ids if i != leader)
    node = cluster.cfg.node(follower)
    proc = admin(cluster, "update", str(follower), "--rpc", node.rpc, "--pub", node.pub, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    row = next(m for m in json.loads(proc.stdout)["members"] if m["id"] == follower)
    assert (row["rpc"], row["pub"], row["role"]) == (node.rpc, node.pub, "voter")


def test_remove_a_follower_under_load_then_replace_it(cluster: LocalCluster) -> None:
    """A removed node stops (exit code 9, data kept); an operator wipes it, it restarts with
    --join, and is added back and promoted: a voter again under a new incarnation."""
    c = cluster
    leader = c.wait_for_leader()
    gone = max(i for i in c.ids if i != leader)
    old_incarnation = c.status(gone)["incarnation"]
    writer = BackgroundWriter(c, "load", pause_s=0.005)
    try:
        writer.wait_for_more(20)
        with Client(c.config_path, timeout_s=10) as cl:
            c.expect_removal(gone)
            view = cl.admin("remove", gone)
            assert view.voters == sorted(set(c.ids) - {gone}) and view.member(gone) is None
            wait_until(f"removed node {gone} to stop", lambda: not c.running(gone) or None, 15)
            assert c.procs[gone].returncode == NODE_REMOVED
            writer.wait_for_more(50)  # two voters of two: writes go on

            shutil.rmtree(c.cfg.node_data_dir(gone))  # the operator reformats it
            c.start(gone)  # a fresh directory of a node started before: --join
            node = c.cfg.node(gone)
            view = cl.admin("add", gone, rpc=node.rpc, pub=node.pub)
            assert view.member(gone) is not None and view.member(gone).role == "learner"
            view = wait_until(f"node {gone} promoted once caught up", lambda: _promoted(cl, gone), 30)
            assert view.member(gone).incarnation not in ("", f"{old_incarnation:x}")
            writer.wait_for_more(50)
    finally:
        acked = writer.stop()
    assert not writer.errors, writer.errors[:3]
    stored = read_all(c, "load")
    assert stored == acked, "an acknowledged write is missing, or one appears twice"
    c.wait_converged(15)


def _promoted(cl: Client, node: int) -> Membership | None:
    try:
        return cl.admin("promote", node)
    except ClientError:
        return None  # still catching up: asked again


def test_demote_keeps_serving_and_promote_needs_a_caught_up_learner(cluster: LocalCluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    follower = min(i for i in c.ids if i != leader)
    proc = admin(c, "demote", str(follower), "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    view = json.loads(proc.stdout)
    assert view["learners"] == [follower] and follower not in view["voters"]
    with Client(c.config_path, timeout_s=10) as cl:
        assert cl.send("after-demote", "still serving").index > 0

    again = admin(c, "demote", str(follower))
    assert again.returncode == EXIT_REJECTED and "learner already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    promote = admin(c, "promote", str(follower), "--wait", "10")
    assert promote.returncode == EXIT_OK, promote.stderr
    assert follower in members_json(c)["voters"]


def test_a_change_that_would_lose_quorum_is_refused_and_a_dead_voter_can_go(cluster: LocalCluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    dead, live = sorted(i for i in c.ids if i != leader)
    c.kill(dead, signal.SIGKILL)
    wait_until(f"the leader sees node {dead} silent",
               lambda: next((m for m in members_json(c)["members"] if m["id"] == dead and m["state"] == "silent"),
                            None), 10)

    refused = admin(c, "remove", str(live))
    assert refused.returncode == EXIT_REJECTED, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "quorum" in line and "--force" in line, line
    assert members_json(c)["voters"] == [1, 2, 3], "a refused change changed nothing"

    gone = admin(c, "remove", str(dead), "--json")
    assert gone.returncode == EXIT_OK, gone.stderr
    assert json.loads(gone.stdout)["voters"] == sorted((leader, live))
    with Client(c.config_path, timeout_s=10) as cl:
        assert cl.send("two-of-two", "ok").index > 0

    # Offline: the stopped live follower's WAL holds the configuration without the dead node.
    c.kill(live, signal.SIGTERM)
    proc = admin(None, "inspect", str(c.cfg.node_data_dir(live)), "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    info = json.loads(proc.stdout)
    assert info["config_source"] == "wal" and info["config_index"] > 0
    assert [m["id"] for m in info["config"]["members"]] == sorted((leader, live))
    assert info["last_index"] >= info["config_index"] and info["rank"] == [info["last_epoch"], info["last_index"]]


def test_replace_a_wiped_node_removes_it_adds_it_back_and_waits_for_it(cluster: LocalCluster) -> None:
    c = cluster
    leader = c.wait_for_leader()
    lost = max(i for i in c.ids if i != leader)
    with Client(c.config_path, timeout_s=10) as cl:
        for i in range(20):
            cl.send("before", f"b{i}")
    c.kill(lost, signal.SIGKILL)
    shutil.rmtree(c.cfg.node_data_dir(lost))  # its disk is gone

    replace = subprocess.Popen([sys.executable, "-m", "zrep", "admin", "replace", str(lost), "--wait", "20",
                                "--config", str(c.config_path)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        with Client(c.config_path, timeout_s=10) as cl:
            # Started only once the old (id, incarnation) is out and the id is back as a learner.
            wait_member(cl, f"node {lost} back as a learner",
                        lambda v: v.member(lost) is not None and v.member(lost).role == "learner")
            c.start(lost)
            wait_member(cl, f"node {lost} caught up", lambda v: v.member(lost).lag == 0
                        and v.member(lost).state == "live")
        out, err = replace.communicate(timeout=30)
    finally:
        if replace.poll() is None:
            replace.kill()
            replace.wait()
    assert f"node {lost} removed" in out and f"node {lost} added back as a learner" in out
    assert replace.returncode == EXIT_OK, err
    assert lost in members_json(c)["voters"]
    assert read_all(c, "before") == [f"b{i}" for i in range(20)]
    c.wait_converged(15)


def test_transfer_leader_under_load_costs_no_write(cluster: LocalCluster) -> None:
    """The leader stops taking writes, catches the target up and hands over: the writes are
    retried by the client library and none times out or is lost."""
    c = cluster
    old = c.wait_for_leader()
    target = max(i for i in c.ids if i != old)
    writer = BackgroundWriter(c, "handover", pause_s=0.005)
    try:
        writer.wait_for_more(20)
        proc = admin(c, "transfer-leader", str(target), "--json")
        assert proc.returncode == EXIT_OK, proc.stderr
        assert json.loads(proc.stdout)["leader"] == target
        writer.wait_for_more(50)
        again = admin(c, "transfer-leader", str(target))  # already so: answered as done
        assert again.returncode == EXIT_OK, again.stderr
        anyone = admin(c, "transfer-leader", "--json")  # 0: the most caught-up other voter
        assert anyone.returncode == EXIT_OK, anyone.stderr
        assert json.loads(anyone.stdout)["leader"] != target
        writer.wait_for_more(50)
    finally:
        acked = writer.stop()
    assert not writer.errors, writer.errors[:3]
    assert read_all(c, "handover") == acked


def test_force_new_cluster_after_losing_two_of_three(cluster: LocalCluster) -> None:
    """Two machines of three are gone for good: the survivor becomes a one-voter cluster that
    keeps every acknowledged write it holds, then grows again with a wiped node."""
    c = cluster
    c.wait_for_leader()
    with Client(c.config_path, timeout_s=10) as cl:
        for i in range(30):
            cl.send("kept", f"k{i}", ack="all")  # on every voter: survives whichever node is left
    leader = c.wait_for_leader()
    survivor = min(i for i in c.ids if i != leader)
    lost = [i for i in c.ids if i != survivor]
    for i in lost:
        c.kill(i, signal.SIGKILL)
    c.kill(survivor, signal.SIGTERM)
    wait_until("the survivor to stop", lambda: not c.running(survivor) or None, 15)
    directory = str(c.cfg.node_data_dir(survivor))
    dry = admin(None, "force-new-cluster", directory)
    assert dry.returncode == EXIT_OK and "--yes" in dry.stdout and "may be lost" in dry.stdout
    proc = admin(None, "force-new-cluster", directory, "--yes", "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["node"] == survivor
    c.start(survivor)
    wait_until(f"node {survivor} to lead alone (a quorum of one)",
               lambda: c.statuses([survivor]).get(survivor, {}).get("role_name") == "leader" or None, 15)
    with Client(c.config_path, timeout_s=20) as cl:
        assert [m.body.decode() for m in cl.read("kept", limit=100).messages] == [f"k{i}" for i in range(30)]
        assert cl.send("after", "one voter").index > 0
        assert cl.members().voters == [survivor]
        back = lost[0]
        shutil.rmtree(c.cfg.node_data_dir(back))
        c.start(back)  # a fresh directory of a node started before: --join
        spec = c.cfg.node(back)
        cl.admin("add", back, rpc=spec.rpc, pub=spec.pub)
        view = wait_until(f"node {back} promoted", lambda: _promoted(cl, back), 30)
        assert view.voters == sorted([survivor, back])
        # An old member returning with its old data is fenced by the cluster id: its messages are
        # dropped and counted, and it never becomes part of the new cluster.
        stale = lost[1]
        foreign_before = c.status(survivor)["counters"]["peer_foreign_cluster"]
        c.start(stale)
        wait_until("the old member's messages dropped as another cluster's",
                   lambda: c.status(survivor)["counters"]["peer_foreign_cluster"] > foreign_before or None, 15)
        assert cl.members().voters == sorted([survivor, back])
        assert cl.send("after", "still ours").index > 0
        c.kill(stale, signal.SIGKILL)


def test_a_rolling_restart_with_sigterm_hands_leadership_over(cluster: LocalCluster) -> None:
    """Each node in turn stopped with SIGTERM and started again, the leader too: a leader hands
    over before it stops, so the writes flow on (none lost, none failed)."""
    c = cluster
    c.wait_for_leader()
    writer = BackgroundWriter(c, "rolling", pause_s=0.005)
    try:
        writer.wait_for_more(20)
        for node in c.ids:
            was_leader = c.wait_for_leader() == node
            c.kill(node, signal.SIGTERM)
            wait_until(f"node {node} to stop", lambda n=node: not c.running(n) or None, 15)
            if was_leader:
                assert "handing leadership over to node" in c.log_path(node).read_text()
            writer.wait_for_more(20)
            c.start(node)
            c.wait_caught_up(20)
    finally:
        acked = writer.stop()
    assert not writer.errors, writer.errors[:3]
    assert read_all(c, "rolling") == acked


def _form_with(c: LocalCluster, founders: list[int]) -> None:
    """The founders form the cluster from a cluster file naming only them (a forming cluster
    needs every seed); the file then names every node, as seeds for the ones that join."""
    full = c.cfg
    write_config(dataclasses.replace(full, nodes=tuple(n for n in full.nodes if n.id in founders)), c.config_path)
    c.reload_config()
    for i in founders:
        c.start(i)  # first start: --init
    wait_until("the founders formed the cluster", lambda: (st := c.statuses(founders)) and len(st) == len(founders)
               and all(not s["forming"] and s["config_index"] > 0 for s in st.values()), 20)
    write_config(full, c.config_path)
    c.reload_config()


def test_grow_three_to_five_and_shrink_back_under_load(make_cluster: Callable[..., LocalCluster]) -> None:
    """Two new machines join (--join), are added as learners and promoted; then both are
    removed again (they stop with exit 9). Writes flow throughout: none fails, none is lost."""
    c = make_cluster(nodes=5, start=False)
    _form_with(c, [1, 2, 3])
    writer = BackgroundWriter(c, "grow", pause_s=0.005)
    try:
        writer.wait_for_more(20)
        with Client(c.config_path, timeout_s=10) as cl:
            for new in (4, 5):
                c.start(new, mode="join")
                spec = c.cfg.node(new)
                cl.admin("add", new, rpc=spec.rpc, pub=spec.pub)
                view = wait_until(f"node {new} promoted", lambda n=new: _promoted(cl, n), 30)
                assert new in view.voters
                writer.wait_for_more(20)
            assert cl.members().voters == [1, 2, 3, 4, 5]
            for gone in (5, 4):
                c.expect_removal(gone)
                cl.admin("remove", gone)
                wait_until(f"removed node {gone} to stop", lambda n=gone: not c.running(n) or None, 15)
                assert c.procs[gone].returncode == NODE_REMOVED
                writer.wait_for_more(20)
            assert cl.members().voters == [1, 2, 3]
    finally:
        acked = writer.stop()
    assert not writer.errors, writer.errors[:3]
    assert read_all(c, "grow") == acked


def test_removing_the_leader_under_load(cluster: LocalCluster) -> None:
    """The leader leads until the configuration without it commits, then steps down and stops
    (exit 9); the two others elect a leader and the writes go on."""
    c = cluster
    leader = c.wait_for_leader()
    writer = BackgroundWriter(c, "unlead", pause_s=0.005)
    try:
        writer.wait_for_more(20)
        with Client(c.config_path, timeout_s=10) as cl:
            c.expect_removal(leader)
            view = cl.admin("remove", leader)
            assert leader not in view.voters
            wait_until(f"the removed leader {leader} to stop", lambda: not c.running(leader) or None, 15)
            assert c.procs[leader].returncode == NODE_REMOVED
            writer.wait_for_more(50)
            assert cl.members().leader != leader
    finally:
        acked = writer.stop()
    assert not writer.errors, writer.errors[:3]
    assert read_all(c, "unlead") == acked


def test_a_secure_cluster_grows_with_the_new_nodes_key_in_the_configuration(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """CURVE: nodes 1-3 run with a cluster file that lists only their own keys; node 4's key
    reaches them in the replicated configuration (`add --key`), and they link to it by it."""
    c = make_cluster(nodes=4, start=False, secure=True)
    _form_with(c, [1, 2, 3])
    key = c.cfg.security.node_keys[4][0].decode()
    with Client(c.config_path, key=c.client_key, timeout_s=10) as cl:
        assert cl.send("before", "x").index > 0
        c.start(4, mode="join")
        spec = c.cfg.node(4)
        view = cl.admin("add", 4, rpc=spec.rpc, pub=spec.pub, keys=[key])
        assert view.member(4).role == "learner"
        view = wait_until("node 4 promoted", lambda: _promoted(cl, 4), 30)
        assert view.voters == [1, 2, 3, 4]
        assert cl.send("after", "y").index > 0
    c.wait_caught_up(20)
