"""The transport's socket monitor: a peer whose sockets close is reported once, as a
hint (`Transport.disconnects`); a peer that is down and never connected is not."""

from __future__ import annotations

import time
from pathlib import Path

from zrep.config import ClusterConfig, write_config
from zrep.core.messages import Forward
from zrep.local.cluster import free_ports, wait_until
from zrep.node.transport import Transport


def two_nodes(tmp_path: Path, election_timeout_ms: int = 300) -> ClusterConfig:
    ports = free_ports("127.0.0.1", 4, set())
    nodes = [{"id": i + 1, "rpc": f"tcp://127.0.0.1:{ports[2 * i]}", "pub": f"tcp://127.0.0.1:{ports[2 * i + 1]}"}
             for i in range(2)]
    raw = {"cluster": {"heartbeat_ms": 50, "election_timeout_ms": election_timeout_ms, "data_dir": "data"}, "nodes": nodes}
    return write_config(raw, tmp_path / "two.toml")


def hints_within(t: Transport, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    got: list[int] = []
    while time.monotonic() < deadline and not got:
        t.drain(t.poll(20), 100)
        got += t.disconnects()
    return got


def test_a_peer_whose_sockets_close_is_reported_once_and_a_down_peer_is_not(tmp_path):
    cfg = two_nodes(tmp_path)
    one = Transport(cfg, 1)
    try:
        assert hints_within(one, 0.5) == []  # node 2 is not up: its connects fail, no event
        two = Transport(cfg, 2)
        to_two = Forward(1, 2, 0, ())
        wait_until("node 1's DEALER to connect", lambda: one.send(to_two, b"probe"), 10)  # IMMEDIATE: only once connected
        assert hints_within(one, 0.3) == []  # a loop that polls every few ms: no stall of ours to distrust
        two.close()  # as a killed process's kernel does: its connections close
        assert hints_within(one, 5) == [2]
        assert one.counters.peer_disconnects == 1
        assert hints_within(one, 0.5) == []  # retrying the connect to a dead peer is no hint
    finally:
        one.close()


def test_disconnects_just_after_our_own_stall_are_counted_but_not_handed_on(tmp_path):
    # After a stall of this node (SIGSTOP, a very long turn) its own keepalive timers may
    # close healthy connections: those are no sign of the peer's death.
    cfg = two_nodes(tmp_path, election_timeout_ms=3000)  # keepalive interval 1.5 s
    one, two = Transport(cfg, 1), Transport(cfg, 2)
    try:
        wait_until("node 1's DEALER to connect", lambda: one.send(Forward(1, 2, 0, ()), b"probe"), 10)
        one.poll(0)
        time.sleep(1.6)  # the loop away for longer than the keepalive interval
        one.poll(0)
        two.close()
        wait_until("the disconnect", lambda: (one.drain(one.poll(20), 100), one.counters.peer_disconnects)[1], 1.0)
        assert one.disconnects() == [] and one.counters.hints_after_stall == 1
    finally:
        one.close()
        two.close()
