"""A one-node cluster in a thread: JSON logs, and the metrics server there only when configured."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from zrep.config import ClusterConfig, write_config
from zrep.local.cluster import free_ports
from zrep.node.start import EXIT_NETWORK, EXIT_OK, EXIT_USAGE, run_node


def one_node(tmp_path: Path, metrics: bool) -> ClusterConfig:
    rpc, pub, port = free_ports("127.0.0.1", 3, set())
    node: dict[str, Any] = {"id": 1, "rpc": f"tcp://127.0.0.1:{rpc}", "pub": f"tcp://127.0.0.1:{pub}"}
    if metrics:
        node["metrics"] = f"http://127.0.0.1:{port}"
    raw = {"cluster": {"heartbeat_ms": 10, "election_timeout_ms": 30, "data_dir": "data"}, "nodes": [node]}
    return write_config(raw, tmp_path / "one.toml")


def _metrics_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("zrep-metrics")]


def run_until_leader(cfg: ClusterConfig, **kw: Any) -> tuple[int, list[str], list[list[str]]]:
    """Run node 1 until it logged that it leads (at most 10 s); exit code, log lines, metrics threads seen."""
    lines: list[str] = []
    threads: list[list[str]] = []
    deadline = time.monotonic() + 10

    def stopping() -> bool:
        threads.append(_metrics_threads())
        return any("is leader" in line for line in lines) or time.monotonic() > deadline

    code = run_node(cfg, 1, log=lines.append, stopping=stopping, mode="init", **kw)
    return code, lines, threads


def test_json_log_format_writes_one_object_per_line(tmp_path: Path) -> None:
    code, lines, _ = run_until_leader(one_node(tmp_path, metrics=False), log_format="json")
    assert code == EXIT_OK
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"time", "ts", "node", "level", "event", "message", "fields"} for r in records)
    assert all(r["node"] == 1 for r in records)
    events = [r["event"] for r in records]
    assert events[0] == "started" and events[-1] == "stopped" and "election_won" in events
    role = next(r for r in records if r["event"] == "role" and r["fields"]["role"] == "leader")
    assert role["fields"]["epoch"] >= 1 and role["level"] == "info"


def test_json_log_format_covers_start_up_errors(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_node(tmp_path / "missing.toml", 1, log=lines.append, log_format="json") == EXIT_USAGE
    (record,) = [json.loads(line) for line in lines]
    assert record["level"] == "error" and "not found" in record["message"]
    cli = subprocess.run([sys.executable, "-m", "zrep", "node", "--config", str(tmp_path / "missing.toml"),
                          "--id", "1", "--log-format", "json"], capture_output=True, text=True, timeout=30)
    assert cli.returncode == EXIT_USAGE
    assert json.loads(cli.stderr.strip())["event"] == "exit"


def test_text_stays_the_default(tmp_path: Path) -> None:
    code, lines, _ = run_until_leader(one_node(tmp_path, metrics=False))
    assert code == EXIT_OK and " node 1: started: rpc " in lines[0] and not lines[0].startswith("{")


def test_no_metrics_address_no_http_server(tmp_path: Path) -> None:
    code, lines, threads = run_until_leader(one_node(tmp_path, metrics=False))
    assert code == EXIT_OK and threads and all(seen == [] for seen in threads)
    assert "metrics" not in lines[0]


def test_a_metrics_address_serves_while_the_node_runs_and_stops_with_it(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=True)
    scraped: list[str] = []
    lines: list[str] = []
    deadline = time.monotonic() + 10

    def stopping() -> bool:
        if not scraped and any("is leader" in line for line in lines):
            with urllib.request.urlopen(cfg.nodes[0].metrics + "/metrics", timeout=5) as r:
                scraped.append(r.read().decode())
        return bool(scraped) or time.monotonic() > deadline

    assert run_node(cfg, 1, log=lines.append, stopping=stopping, mode="init") == EXIT_OK
    assert 'zrep_role{role="leader"} 1.0' in scraped[0]
    assert f"metrics {cfg.nodes[0].metrics}" in lines[0]
    deadline = time.monotonic() + 5
    while _metrics_threads():  # the server thread ends with the node
        assert time.monotonic() < deadline, _metrics_threads()
        time.sleep(0.01)


def test_a_taken_metrics_port_stops_the_node_with_one_line(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=True)
    host, port = cfg.nodes[0].metrics.removeprefix("http://").split(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        lines: list[str] = []
        assert run_node(cfg, 1, log=lines.append, stopping=lambda: True, mode="init") == EXIT_NETWORK
    assert len([ln for ln in lines if "cannot serve metrics" in ln]) == 1


def test_metrics_are_rendered_at_most_every_min_render_s(tmp_path: Path) -> None:
    from zrep.node.metrics import MIN_RENDER_S

    cfg = one_node(tmp_path, metrics=True)
    texts: list[bytes] = []
    lines: list[str] = []
    deadline = time.monotonic() + 10

    def scrape() -> bytes:
        with urllib.request.urlopen(cfg.nodes[0].metrics + "/metrics", timeout=5) as r:
            return r.read()

    def stopping() -> bool:
        if not texts and any("is leader" in line for line in lines):
            texts.extend(scrape() for _ in range(5))  # a burst: one rendering (uptime would differ)
            time.sleep(MIN_RENDER_S * 1.5)
            texts.append(scrape())
        return bool(texts) or time.monotonic() > deadline

    assert run_node(cfg, 1, log=lines.append, stopping=stopping, mode="init") == EXIT_OK
    assert len(set(texts[:5])) <= 2 and texts[-1] not in texts[:5]
