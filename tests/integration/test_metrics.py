"""Every node's HTTP side door on real processes: /metrics, /healthz, /events, and bad clients.

`metrics_cluster(make_cluster)` (also used by test_dashboard.py) starts a 3-node
cluster whose file gives every node a metrics address on a free port.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from harness import LocalCluster, free_ports, wait_until
from prometheus_client.parser import text_string_to_metric_families

from zrep.config import ClusterConfig, config_from_dict, parse_http
from zrep.httpd import MAX_CONNECTIONS, REQUEST_DEADLINE_S

MakeCluster = Callable[..., LocalCluster]


def metrics_config(nodes: int = 3, heartbeat_ms: int = 50, election_timeout_ms: int = 300,
                   **more: Any) -> ClusterConfig:
    taken: set[int] = set()
    rows = []
    for i in range(1, nodes + 1):
        rpc, pub, metrics = free_ports("127.0.0.1", 3, taken)
        rows.append({"id": i, "rpc": f"tcp://127.0.0.1:{rpc}", "pub": f"tcp://127.0.0.1:{pub}",
                     "metrics": f"http://127.0.0.1:{metrics}"})
    cluster = {"heartbeat_ms": heartbeat_ms, "election_timeout_ms": election_timeout_ms, "data_dir": "data", **more}
    return config_from_dict({"cluster": cluster, "nodes": rows}, "/tmp")


def metrics_cluster(make_cluster: MakeCluster, **kwargs: Any) -> LocalCluster:
    return make_cluster(config=metrics_config(**kwargs))


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(c: LocalCluster, node_id: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one node's /metrics."""
    code, text = get(c.cfg.node(node_id).metrics + "/metrics")
    assert code == 200, text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict[str, dict[Any, float]], name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series not yet seen (counted from its first event)."""
    series = samples[name]
    return series.get(tuple(sorted(labels.items())), 0.0) if labels else series[()]


def test_every_node_serves_metrics_health_and_events(make_cluster: MakeCluster) -> None:
    c = metrics_cluster(make_cluster, snapshot_entries=10)  # snapshots and compactions within the 30 sends
    leader = c.wait_for_leader()
    for seq in range(1, 31):
        c.send("m", seq, "box", b"x" * 10)
    wait_until("every node applied the 30 sends and counted them (a gauge refreshed each second)", lambda: all(
        one(scrape(c, i), "zrep_applied_index") >= 31 and one(scrape(c, i), "zrep_store_messages") == 30
        and one(scrape(c, i), "zrep_store_bytes") == 300
        for i in c.ids), timeout=10)
    for i in c.ids:
        m = scrape(c, i)
        assert one(m, "zrep_role", role="leader") == (1.0 if i == leader else 0.0)
        assert one(m, "zrep_leader_id") == leader
        assert one(m, "zrep_epoch") >= 1
        assert one(m, "zrep_commit_index") >= 31 and one(m, "zrep_log_last_index") >= 31
        assert one(m, "zrep_wal_fsync_seconds_count") >= 1 and one(m, "zrep_wal_fsync_bytes_total") > 0
        assert one(m, "zrep_store_mailboxes") == 1
        assert "zrep_process_resident_memory_bytes" in m and "zrep_process_open_fds" in m
        assert one(m, "zrep_wal_bytes") > 0
        code, line = get(c.cfg.node(i).metrics + "/healthz")
        assert code == 200 and f"leader {leader}" in line and line.count("\n") == 1
    every = {i: scrape(c, i) for i in c.ids}  # a write is counted by the node that answered it
    assert sum(one(m, "zrep_writes_acknowledged_total") for m in every.values()) == 30
    assert sum(one(m, "zrep_client_request_seconds_count", op="send") for m in every.values()) >= 30
    lm = every[leader]
    assert one(lm, "zrep_elections_total", outcome="won") >= 1
    assert {int(dict(k)["follower"]) for k in lm["zrep_follower_lag_entries"]} == set(c.ids) - {leader}
    wait_until("every node took a snapshot and compacted its log", lambda: all(
        one(m, "zrep_snapshots_total") >= 1 and one(m, "zrep_snapshot_bytes") > 0 and one(m, "zrep_compactions_total") >= 1
        for m in (scrape(c, i) for i in c.ids)), timeout=10)
    code, body = get(c.cfg.node(leader).metrics + "/events")
    events = json.loads(body)
    assert events["node"] == leader
    assert {"started", "election_won", "leader", "snapshot", "compaction"} <= {e["event"] for e in events["events"]}
    after = events["seq"]
    code, body = get(c.cfg.node(leader).metrics + f"/events?after={after}")
    assert json.loads(body)["events"] == []
    assert get(c.cfg.node(leader).metrics + "/events?after=x")[0] == 400
    assert get(c.cfg.node(leader).metrics + "/nope")[0] == 404


def test_healthz_is_503_with_a_reason_while_no_leader_is_known(make_cluster: MakeCluster) -> None:
    c = make_cluster(config=metrics_config(), start=False)
    c.start(1)  # alone: it can never be elected
    url = c.cfg.node(1).metrics + "/healthz"
    code, line = wait_until("node 1 serves /healthz", lambda: (lambda r: r if r[0] else None)(_try_get(url)),
                            timeout=10)
    assert code == 503 and "no leader known" in line and line.count("\n") == 1


def _try_get(url: str) -> tuple[int, str]:
    try:
        return get(url, timeout=1)
    except OSError:
        return 0, ""


def _refused(answer: bytes) -> bool:
    """Closed, or an HTTP error (an HTTP/0.9-looking request gets the bare error page)."""
    return answer == b"" or any(code in answer for code in (b"400", b"414", b"431", b"501"))


def _connect(address: str) -> socket.socket:
    host, port = parse_http(address)
    return socket.create_connection((host, port), timeout=5)


def test_garbage_huge_headers_and_slowloris_leave_the_node_serving(make_cluster: MakeCluster) -> None:
    c = metrics_cluster(make_cluster)
    leader = c.wait_for_leader()
    address = c.cfg.node(leader).metrics
    # Garbage: answered 400 (or closed), never a crash.
    for junk in (b"\x00\xff" * 500 + b"\r\n\r\n", b"GET\r\n\r\n", b"BREW /pot HTCPCP/1.0\r\n\r\n"):
        s = _connect(address)
        s.sendall(junk)
        answer = s.recv(200)
        s.close()
        assert _refused(answer), answer
    # A header line of 100 KiB and 200 headers: refused by http.server's limits.
    for request in (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"):
        s = _connect(address)
        try:
            s.sendall(request)
        except OSError:
            pass  # the server may close before reading it all
        answer = s.recv(200)
        s.close()
        assert _refused(answer), answer
    # Slowloris: more half-sent requests than the server serves at once, kept open.
    slow = []
    for _ in range(MAX_CONNECTIONS + 8):
        s = _connect(address)
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        slow.append(s)
    started = time.monotonic()
    try:
        # The node keeps serving clients and replicating meanwhile.
        for seq in range(1, 21):
            c.send("slow", seq, "box", b"y", timeout=10)
        assert c.status(leader)["role"] == 3
        # The held connections are cut at the deadline; then scrapes work again.
        wait_until("a scrape succeeds after the deadline", lambda: _try_get(address + "/healthz")[0] == 200,
                   timeout=REQUEST_DEADLINE_S + 10)
        assert time.monotonic() - started < REQUEST_DEADLINE_S + 10
    finally:
        for s in slow:
            s.close()
    assert sum(one(scrape(c, i), "zrep_writes_acknowledged_total") for i in c.ids) >= 20
    assert c.unexpected_exits() == []


def _zrep(*args: str, timeout: float = 30) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "zrep", *args], capture_output=True, text=True, timeout=timeout)


def test_cluster_events_tells_a_failover_as_one_timeline(make_cluster: MakeCluster) -> None:
    import signal

    c = metrics_cluster(make_cluster)
    old = c.wait_for_leader()
    c.kill(old, signal.SIGKILL)
    new = c.wait_for_leader(nodes=[i for i in c.ids if i != old], timeout=15)
    wait_until("the new leader's event is served", lambda: any(
        e["event"] == "leader" and e["fields"]["leader"] == new
        for e in json.loads(get(c.cfg.node(new).metrics + "/events")[1])["events"]), timeout=5)
    out = _zrep("cluster", "events", "--config", str(c.config_path), "--since", "5m", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert {e["node"] for e in events} == set(c.ids) - {old}
    assert f"node {old}: not asked or no answer" in out.stderr  # the dead node is named, not waited on
    lost = [e for e in events if e["event"] == "leader_lost" and e["fields"]["leader"] == old]
    won = [e for e in events if e["event"] == "election_won" and e["node"] == new]
    assert lost and won and lost[0]["t"] <= won[-1]["t"]
    assert "suspects leader" in lost[0]["text"]  # why: it went silent (timeout)
    text = _zrep("cluster", "events", "--config", str(c.config_path), "--since", "5m")
    assert text.returncode == 0 and f"node {new}  election_won" in text.stdout
    bad = _zrep("cluster", "events", "--config", str(c.config_path), "--since", "soon")
    assert bad.returncode == 2 and "--since" in bad.stderr and bad.stderr.count("\n") == 1


def test_cluster_events_follow_prints_new_events_as_they_happen(make_cluster: MakeCluster, tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading

    c = metrics_cluster(make_cluster)
    c.wait_for_leader()
    follower = next(i for i in c.ids if i != c.leader())
    proc = subprocess.Popen([sys.executable, "-m", "zrep", "cluster", "events", "--config", str(c.config_path),
                             "--since", "1m", "--follow", "--json"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(line)) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        wait_until("the events so far", lambda: any(e["event"] == "election_won" for e in lines), timeout=10)
        seen = len(lines)
        c.kill(follower, signal.SIGKILL)
        c.start(follower)  # a new life: its sequence numbers start over
        wait_until("the restarted node's events", lambda: any(
            e["event"] == "started" and e["node"] == follower for e in lines[seen:]), timeout=15)
        starts = [e for e in lines if e["event"] == "started" and e["node"] == follower]
        assert len(starts) == 2 and starts[0]["t"] < starts[1]["t"]  # the first life's, then the new one's
        keys = [(e["node"], e["t"], e["seq"]) for e in lines]
        assert len(keys) == len(set(keys)), "an event printed twice"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
