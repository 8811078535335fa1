"""The dashboard's pure helpers: durations, histogram quantiles, merging timelines (no cluster)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from zrep.config import config_from_dict
from zrep.dashboard.events import EventReader, format_event, parse_since
from zrep.dashboard.watch import quantile


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1.5h", 5400), ("2d", 172800),
                                           ("250ms", 0.25), ("42", 42)])
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "soon", "10 minutes", "-5m", "m"])
def test_parse_since_refuses_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(ValueError, match="10m"):
        parse_since(bad)


def test_quantile_interpolates_inside_the_bucket_as_promql_does() -> None:
    inf = float("inf")
    assert quantile({0.001: 0, 0.01: 100, inf: 100}, 0.5) == pytest.approx(0.0055)
    assert quantile({0.001: 50, 0.01: 100, inf: 100}, 0.99) == pytest.approx(0.001 + 0.009 * 49 / 50)
    assert quantile({0.001: 0, 0.01: 0, inf: 5}, 0.99) == 0.01  # all above the last bound: its bound
    assert quantile({0.001: 0, inf: 0}, 0.99) is None and quantile({}, 0.5) is None


class _FakeNode(BaseHTTPRequestHandler):
    """Serves /events as a node does, from the class attribute `reply` (boot, events)."""

    reply: dict[int, tuple[float, list[dict[str, Any]]]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        boot, events = self.reply[self.server.server_address[1]]
        after = int(self.path.split("after=")[1].split("&")[0]) if "after=" in self.path else 0
        body = json.dumps({"node": 0, "boot": boot, "seq": max((e["seq"] for e in events), default=0),
                           "events": [e for e in events if e["seq"] > after]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_reader_merges_by_time_follows_new_events_and_notices_a_restart() -> None:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _FakeNode) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    p1, p2 = (s.server_address[1] for s in servers)
    ev = lambda node, seq, t: {"node": node, "seq": seq, "t": t, "event": "note", "text": f"{node}/{seq}"}  # noqa: E731
    _FakeNode.reply = {p1: (1.0, [ev(1, 1, 10.0), ev(1, 2, 12.0)]), p2: (1.0, [ev(2, 1, 11.0)])}
    nodes = [{"id": 1, "rpc": "tcp://127.0.0.1:1", "pub": "tcp://127.0.0.1:2", "metrics": f"http://127.0.0.1:{p1}"},
             {"id": 2, "rpc": "tcp://127.0.0.1:3", "pub": "tcp://127.0.0.1:4", "metrics": f"http://127.0.0.1:{p2}"},
             {"id": 3, "rpc": "tcp://127.0.0.1:5", "pub": "tcp://127.0.0.1:6"}]
    cfg = config_from_dict({"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 300, "data_dir": "d"},
                            "nodes": nodes}, "/tmp")
    reader = EventReader(cfg, timeout=2)
    try:
        first = reader.read()
        assert [e["text"] for e in first.events] == ["1/1", "2/1", "1/2"]
        assert first.unreachable == {3: "no metrics address in the cluster file"}
        _FakeNode.reply[p1] = (1.0, [ev(1, 1, 10.0), ev(1, 2, 12.0), ev(1, 3, 13.0)])
        assert [e["text"] for e in reader.read().events] == ["1/3"]  # only what is new
        _FakeNode.reply[p2] = (2.0, [ev(2, 1, 20.0)])  # node 2 restarted: its seq starts over
        assert [e["text"] for e in reader.read().events] == ["2/1"]
        assert "node 2" in format_event(ev(2, 1, 20.0)) and format_event(ev(2, 1, 20.0)).endswith("2/1")
    finally:
        reader.close()
        for s in servers:
            s.shutdown()
            s.server_close()


def test_cluster_events_without_any_metrics_address_says_what_to_add(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from zrep.cli import main
    from zrep.config import write_config

    nodes = [{"id": i, "rpc": f"tcp://127.0.0.1:{7100 + i}", "pub": f"tcp://127.0.0.1:{7200 + i}"} for i in (1, 2, 3)]
    path = tmp_path / "c.toml"
    write_config({"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 300, "data_dir": "d"}, "nodes": nodes}, path)
    result = CliRunner().invoke(main, ["cluster", "events", "--config", str(path)])
    assert result.exit_code == 2
    assert "no node has a metrics address" in result.output and 'metrics = "http://HOST:PORT"' in result.output
