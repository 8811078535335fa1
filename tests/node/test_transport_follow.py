"""The transport follows the configuration: a member outside the cluster file is linked from its
Member rpc/pub and its messages are believed; one that leaves is unlinked after a while (seeds
stay); a message for a node with no link is dropped and counted."""

from __future__ import annotations

from pathlib import Path

import zrep.node.transport as transport_module
from zrep.config import ClusterConfig, write_config
from zrep.core.membership import Config, Member
from zrep.core.messages import Forward
from zrep.local.cluster import free_ports, wait_until
from zrep.node.transport import Transport
from zrep.wire.codec import encode


def cluster(tmp_path: Path, ids: list[int], ports: list[int]) -> ClusterConfig:
    nodes = [{"id": i, "rpc": f"tcp://127.0.0.1:{ports[2 * k]}", "pub": f"tcp://127.0.0.1:{ports[2 * k + 1]}"}
             for k, i in enumerate(ids)]
    raw = {"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 300, "data_dir": "data"}, "nodes": nodes}
    return write_config(raw, tmp_path / f"{'-'.join(map(str, ids))}.toml")


def test_a_new_member_is_linked_believed_and_unlinked_once_it_leaves(tmp_path, monkeypatch):
    monkeypatch.setattr(transport_module, "UNLINK_AFTER_S", 0.0)
    ports = free_ports("127.0.0.1", 6, set())
    old = cluster(tmp_path, [1, 2], ports[:4])  # node 1's cluster file: nodes 1 and 2
    new = cluster(tmp_path, [1, 2, 3], ports)  # node 3's: it knows all three
    member3 = Member(3, 7, False, new.node(3).rpc, new.node(3).pub)
    one, three = Transport(old, 1), Transport(new, 3)
    try:
        to_three = Forward(1, 3, 0, ())
        assert not one.send(to_three, encode(to_three)) and one.counters.send_unknown == 1
        # Node 3's first message reaches node 1 before node 1 links it: believed (the core judges it).
        from_three = Forward(3, 1, 0, ())
        wait_until("node 3's DEALER to connect", lambda: three.send(from_three, encode(from_three)), 10)
        got = wait_until("node 1 to take node 3's message", lambda: one.drain(one.poll(20), 10)[0], 10)
        assert got == [from_three] and one.counters.client_bad == 0
        base = Config(5, (Member(1, 1), Member(2, 2)))
        assert one.follow(base.with_member(member3)) == [3]
        assert 3 in one.peer_ids
        wait_until("node 1's link to node 3", lambda: one.send(to_three, encode(to_three)), 10)
        got = wait_until("node 3 to take node 1's message", lambda: three.drain(three.poll(20), 10)[0], 10)
        assert got == [to_three]
        assert one.follow(base) == []  # node 3 removed; node 2, a seed, would stay even if removed
        one.drain(one.poll(0), 10)
        assert 3 not in one.peer_ids and 2 in one.peer_ids
        unknown = one.counters.send_unknown
        assert not one.send(to_three, encode(to_three)) and one.counters.send_unknown == unknown + 1
        one.follow(Config(5, (Member(1, 1),)))
        one.drain(one.poll(0), 10)
        assert 2 in one.peer_ids  # a seed is never unlinked
    finally:
        one.close()
        three.close()
