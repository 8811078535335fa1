"""Tests for zrep.config: the shipped files load; every rule has a failing
example whose one-line message names the file and the key."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from zrep.config import (
    ClusterConfig,
    config_from_dict,
    load_config,
    parse_endpoint,
    write_config,
)
from zrep.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def base() -> dict[str, Any]:
    return {
        "cluster": {"heartbeat_ms": 50, "election_timeout_ms": 500, "data_dir": "data"},
        "nodes": [
            {"id": i, "rpc": f"tcp://127.0.0.1:{7100 + i}", "pub": f"tcp://127.0.0.1:{7200 + i}"}
            for i in (1, 2, 3)
        ],
    }


def render(d: dict[str, Any]) -> str:
    """TOML for test input, including invalid values the real writer refuses.

    json.dumps spells ints, floats, booleans, ASCII strings and flat arrays as TOML does.
    """
    lines = []
    is_tables = lambda v: isinstance(v, list) and v and all(isinstance(t, dict) for t in v)  # noqa: E731
    for k, v in d.items():
        if not isinstance(v, dict) and not is_tables(v):
            lines.append(f"{k} = {json.dumps(v)}")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
        elif is_tables(v):
            for t in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in t.items()]
    return "\n".join(lines) + "\n"


def assert_one_line_error(err: ConfigError, source: str, key: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"{source}: "), msg
    assert key in msg, msg
    assert "; " in msg, f"no advice after the problem: {msg}"


# ------------------------------------------------------------------ shipped files


def test_shipped_three_node_file_loads() -> None:
    cfg = load_config(REPO / "config" / "cluster.toml")
    assert cfg.node_ids == (1, 2, 3)
    assert [n.rpc for n in cfg.nodes] == [f"tcp://127.0.0.1:710{i}" for i in (1, 2, 3)]
    assert [n.pub for n in cfg.nodes] == [f"tcp://127.0.0.1:720{i}" for i in (1, 2, 3)]
    assert (cfg.heartbeat_ms, cfg.election_timeout_ms, cfg.tick_ms) == (50, 300, 10)
    assert cfg.warnings == ()
    assert cfg.fsync is True
    assert cfg.data_dir.is_absolute() and cfg.data_dir.is_relative_to(REPO / "data")


def test_shipped_five_node_file_loads_into_its_own_data_dir() -> None:
    five = load_config(REPO / "config" / "cluster-5.toml")
    three = load_config(REPO / "config" / "cluster.toml")
    assert five.node_ids == (1, 2, 3, 4, 5)
    assert five.warnings == ()
    # Same node ids: a shared data_dir would mix two clusters' logs.
    assert five.node_data_dir(1) != three.node_data_dir(1)


# ------------------------------------------------------------------ the API


def test_api_accessors() -> None:
    cfg = config_from_dict(base(), "/srv/zrep")
    assert cfg.node(2).rpc == "tcp://127.0.0.1:7102"
    assert [n.id for n in cfg.peers_of(2)] == [1, 3]
    assert cfg.node_data_dir(3) == Path("/srv/zrep/data/node-3")
    assert cfg.node(1).host == "127.0.0.1"
    assert (cfg.heartbeat_ticks, cfg.election_timeout_ticks) == (5, 50)
    assert cfg.path is None
    with pytest.raises(ConfigError, match="no node with id 9"):
        cfg.node(9)
    with pytest.raises(ConfigError, match="no node with id 9"):
        cfg.peers_of(9)


def test_config_is_frozen() -> None:
    cfg = config_from_dict(base(), "/tmp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.heartbeat_ms = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.nodes[0].id = 7  # type: ignore[misc]


def test_defaults() -> None:
    cfg = config_from_dict(base(), "/tmp")
    assert cfg.tick_ms == 10
    assert cfg.max_body_bytes == 1 << 20
    assert cfg.max_frame_bytes >= cfg.max_body_bytes
    assert cfg.fsync is True
    assert cfg.snapshot_entries == 20_000
    assert cfg.nodes[0].bind_rpc == cfg.nodes[0].rpc
    assert cfg.nodes[0].bind_pub == cfg.nodes[0].pub


def test_default_tick_divides_odd_periods() -> None:
    d = base()
    d["cluster"].update(heartbeat_ms=15, election_timeout_ms=45)
    cfg = config_from_dict(d, "/tmp")
    assert cfg.tick_ms == 5


def test_nodes_are_sorted_by_id() -> None:
    d = base()
    d["nodes"].reverse()
    assert config_from_dict(d, "/tmp").node_ids == (1, 2, 3)


def test_data_dir_is_relative_to_the_file_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "c.toml"
    f.write_text(render(base()))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("conf/c.toml")
    assert cfg.data_dir == tmp_path / "conf" / "data"
    assert cfg.path == f


def test_bind_addresses_and_hosts() -> None:
    d = base()
    d["nodes"][0].update(bind_rpc="tcp://*:7101", bind_pub="tcp://0.0.0.0:7201")
    d["nodes"][1].update(rpc="tcp://[::1]:7102")
    d["nodes"][2].update(rpc="tcp://zrep-3.example.org:7103")
    cfg = config_from_dict(d, "/tmp")
    assert cfg.node(1).bind_rpc == "tcp://*:7101"
    assert cfg.node(1).rpc == "tcp://127.0.0.1:7101"
    assert cfg.node(2).host == "::1"
    assert cfg.node(3).host == "zrep-3.example.org"


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp://10.0.0.1:1") == ("10.0.0.1", 1)
    assert parse_endpoint("tcp://[fe80::1]:65535") == ("fe80::1", 65535)
    with pytest.raises(ValueError):
        parse_endpoint("tcp://10.0.0.1:65536")


def test_even_number_of_nodes_warns() -> None:
    d = base()
    d["nodes"].append({"id": 4, "rpc": "tcp://127.0.0.1:7104", "pub": "tcp://127.0.0.1:7204"})
    cfg = config_from_dict(d, "/tmp")
    assert len(cfg.warnings) == 1
    w = cfg.warnings[0]
    assert "4 voting nodes" in w and "1 failure" in w and "3 nodes" in w and "odd" in w


def test_two_nodes_warn_that_no_failure_is_tolerated() -> None:
    d = base()
    del d["nodes"][2]
    (w,) = config_from_dict(d, "/tmp").warnings
    assert "0 failures" in w


def test_fsync_off_is_refused() -> None:
    d = base()
    d["cluster"]["fsync"] = False
    with pytest.raises(ConfigError, match="cluster.fsync: false is not supported"):
        config_from_dict(d, "/tmp")


# ------------------------------------------------------------------ writing


def test_write_config_round_trips_a_dict(tmp_path: Path) -> None:
    d = base()
    d["cluster"]["data_dir"] = 'we"ird\\dir\tname é'  # exercises the string escaper
    d["nodes"][0]["bind_rpc"] = "tcp://*:7101"
    d["cluster"]["snapshot_entries"] = 0
    path = tmp_path / "gen.toml"
    cfg = write_config(d, path)
    assert cfg == config_from_dict(d, tmp_path, path=path)
    assert cfg.data_dir == tmp_path / 'we"ird\\dir\tname é'
    assert cfg.node(1).bind_rpc == "tcp://*:7101"
    assert cfg.snapshot_entries == 0
    assert not list(tmp_path.glob(".*.tmp")), "temp file left behind"


def test_write_config_moves_a_loaded_config(tmp_path: Path) -> None:
    src = load_config(REPO / "config" / "cluster-5.toml")
    moved = write_config(src, tmp_path / "copy.toml")
    assert dataclasses.replace(moved, path=None) == dataclasses.replace(src, path=None)


def test_write_config_refuses_an_invalid_dict(tmp_path: Path) -> None:
    d = base()
    d["cluster"]["heartbeat_ms"] = 0
    path = tmp_path / "bad.toml"
    with pytest.raises(ConfigError) as e:
        write_config(d, path)
    assert_one_line_error(e.value, str(path), "cluster.heartbeat_ms")
    assert not path.exists()


# ------------------------------------------------------------------ every rule fails


Mutation = Callable[[dict[str, Any]], None]


def _set(section: str, **kv: Any) -> Mutation:
    return lambda d: d[section].update(kv)


def _node(i: int, **kv: Any) -> Mutation:
    return lambda d: d["nodes"][i].update(kv)


def _del(section: str, key: str) -> Mutation:
    return lambda d: d[section].pop(key)


def _del_node(i: int, key: str) -> Mutation:
    return lambda d: d["nodes"][i].pop(key)


BAD: list[tuple[str, Mutation, str]] = [
    ("unknown section", lambda d: d.update(clusters={"a": 1}), "clusters: unknown key"),
    ("unknown cluster key", _set("cluster", heartbeat=50), "cluster.heartbeat: unknown key"),
    ("unknown node key", _node(0, port=1), "nodes[1].port: unknown key"),
    ("missing cluster", lambda d: d.pop("cluster"), "cluster: missing"),
    ("missing heartbeat", _del("cluster", "heartbeat_ms"), "cluster.heartbeat_ms: missing"),
    ("missing timeout", _del("cluster", "election_timeout_ms"), "cluster.election_timeout_ms: missing"),
    ("missing data_dir", _del("cluster", "data_dir"), "cluster.data_dir: missing"),
    ("missing nodes", lambda d: d.pop("nodes"), "nodes: missing"),
    ("zero nodes", lambda d: d.update(nodes=[]), "nodes: no node is defined"),
    ("nodes not an array", lambda d: d.update(nodes=5), "nodes: must be an array"),
    ("node not a table", lambda d: d.update(nodes=[1, 2]), "nodes[1]: must be a table"),
    ("missing id", _del_node(1, "id"), "nodes[2].id: missing"),
    ("missing rpc", _del_node(1, "rpc"), "nodes[2] (id 2).rpc: missing"),
    ("missing pub", _del_node(2, "pub"), "nodes[3] (id 3).pub: missing"),
    ("bool heartbeat", _set("cluster", heartbeat_ms=True), "cluster.heartbeat_ms: must be an integer"),
    ("string heartbeat", _set("cluster", heartbeat_ms="50"), "cluster.heartbeat_ms: must be an integer"),
    ("float heartbeat", _set("cluster", heartbeat_ms=50.0), "cluster.heartbeat_ms: must be an integer"),
    ("int fsync", _set("cluster", fsync=1), "cluster.fsync: must be true or false"),
    ("int data_dir", _set("cluster", data_dir=5), "cluster.data_dir: must be a string"),
    ("empty data_dir", _set("cluster", data_dir=""), "cluster.data_dir: must not be empty"),
    ("bool id", _node(0, id=True), "nodes[1].id: must be an integer"),
    ("string id", _node(0, id="1"), "nodes[1].id: must be an integer"),
    ("zero id", _node(0, id=0), "nodes[1].id: must be a positive integer"),
    ("negative id", _node(0, id=-1), "nodes[1].id: must be a positive integer"),
    ("duplicate id", _node(2, id=1), "nodes[3].id: id 1 is already used by nodes[1]"),
    ("int rpc", _node(0, rpc=7101), "nodes[1] (id 1).rpc: must be a string"),
    ("duplicate rpc", _node(1, rpc="tcp://127.0.0.1:7101"), "nodes[2] (id 2).rpc: 'tcp://127.0.0.1:7101' is already used by nodes[1] (id 1).rpc"),
    ("pub reuses an rpc", _node(1, pub="tcp://127.0.0.1:7101"), "nodes[2] (id 2).pub: 'tcp://127.0.0.1:7101' is already used"),
    ("own rpc = pub", _node(0, pub="tcp://127.0.0.1:7101"), "nodes[1] (id 1).pub"),
    ("no scheme", _node(0, rpc="127.0.0.1:7101"), "nodes[1] (id 1).rpc: '127.0.0.1:7101' is not of the form tcp://HOST:PORT"),
    ("udp", _node(0, rpc="udp://127.0.0.1:7101"), "nodes[1] (id 1).rpc: 'udp://127.0.0.1:7101' is not of the form"),
    ("no port", _node(0, rpc="tcp://127.0.0.1"), "nodes[1] (id 1).rpc: 'tcp://127.0.0.1' is not of the form"),
    ("port 0", _node(0, pub="tcp://127.0.0.1:0"), "nodes[1] (id 1).pub: port 0"),
    ("port 65536", _node(0, pub="tcp://127.0.0.1:65536"), "nodes[1] (id 1).pub: port 65536"),
    ("bad ipv4", _node(0, rpc="tcp://256.1.1.1:7101"), "nodes[1] (id 1).rpc: '256.1.1.1'"),
    ("bad ipv6", _node(0, rpc="tcp://[zz::1]:7101"), "nodes[1] (id 1).rpc: 'zz::1'"),
    ("bad hostname", _node(0, rpc="tcp://bad_host:7101"), "nodes[1] (id 1).rpc: 'bad_host'"),
    ("path in endpoint", _node(0, rpc="tcp://h:7101/x"), "nodes[1] (id 1).rpc"),
    ("wildcard advertised", _node(0, rpc="tcp://0.0.0.0:7101"), "nodes[1] (id 1).rpc: 'tcp://0.0.0.0:7101' is a wildcard"),
    ("star advertised", _node(0, pub="tcp://*:7201"), "nodes[1] (id 1).pub: 'tcp://*:7201' is a wildcard"),
    ("bad bind", _node(0, bind_rpc="tcp://*"), "nodes[1] (id 1).bind_rpc"),
    ("bind clash", _node(0, bind_rpc="tcp://*:9000", bind_pub="tcp://127.0.0.1:9000"), "nodes[1] (id 1).bind_pub: 'tcp://127.0.0.1:9000' clashes"),
    ("zero heartbeat", _set("cluster", heartbeat_ms=0), "cluster.heartbeat_ms: must be > 0"),
    ("negative heartbeat", _set("cluster", heartbeat_ms=-50), "cluster.heartbeat_ms: must be > 0"),
    ("zero timeout", _set("cluster", election_timeout_ms=0), "cluster.election_timeout_ms: must be > 0"),
    ("timeout < 3 heartbeats", _set("cluster", election_timeout_ms=149), "cluster.election_timeout_ms: 149 is below 3 heartbeats"),
    ("tick > heartbeat", _set("cluster", tick_ms=100, election_timeout_ms=1000), "cluster.tick_ms: 100 is larger than heartbeat_ms"),
    ("tick not dividing", _set("cluster", tick_ms=7), "cluster.tick_ms: 7 does not divide"),
    ("tick not dividing timeout", _set("cluster", tick_ms=25, election_timeout_ms=510), "cluster.tick_ms: 25 does not divide"),
    ("zero tick", _set("cluster", tick_ms=0), "cluster.tick_ms: must be > 0"),
    ("zero body limit", _set("cluster", max_body_bytes=0), "cluster.max_body_bytes: must be > 0"),
    ("negative snapshot entries", _set("cluster", snapshot_entries=-1), "cluster.snapshot_entries: must be >= 0"),
    ("bool snapshot entries", _set("cluster", snapshot_entries=True), "cluster.snapshot_entries: must be an integer"),
    ("frame limit below body", _set("cluster", max_body_bytes=1000, max_frame_bytes=1000), "cluster.max_frame_bytes: 1000 leaves no room"),
]


@pytest.mark.parametrize("mutate,expected", [(m, e) for _, m, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_dict_is_refused_naming_the_key(mutate: Mutation, expected: str) -> None:
    d = copy.deepcopy(base())
    mutate(d)
    with pytest.raises(ConfigError) as e:
        config_from_dict(d, "/tmp")
    assert_one_line_error(e.value, "<config dict>", expected)


@pytest.mark.parametrize("mutate,expected", [(m, e) for _, m, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_file_is_refused_naming_file_and_key(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    d = copy.deepcopy(base())
    mutate(d)
    path = tmp_path / "bad.toml"
    path.write_text(render(d))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert_one_line_error(e.value, str(path), expected)


def test_the_base_example_is_valid(tmp_path: Path) -> None:
    # Guards the table above: every failure must come from its mutation alone.
    path = tmp_path / "ok.toml"
    path.write_text(render(base()))
    assert isinstance(load_config(path), ClusterConfig)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert_one_line_error(e.value, str(path), "not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert_one_line_error(e.value, str(tmp_path), "is a directory")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[cluster]\nheartbeat_ms = 50\nelection_timeout_ms = = 500\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert_one_line_error(e.value, str(path), "TOML syntax error")
    assert "line 3" in str(e.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[cluster]\ndata_dir = "\xe9"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert_one_line_error(e.value, str(path), "is not UTF-8 text")


# ------------------------------------------------------------------ metrics addresses


def test_shipped_files_set_a_metrics_address_per_node() -> None:
    for name, count in (("cluster.toml", 3), ("cluster-5.toml", 5)):
        cfg = load_config(REPO / "config" / name)
        assert [n.metrics for n in cfg.nodes] == [f"http://127.0.0.1:910{i}" for i in range(1, count + 1)]
        assert all(n.bind_metrics == n.metrics for n in cfg.nodes)


def test_metrics_is_optional_and_bind_metrics_defaults_to_it(tmp_path: Path) -> None:
    d = base()
    d["nodes"][0]["metrics"] = "http://127.0.0.1:9101/"
    d["nodes"][1]["metrics"] = "http://127.0.0.1:9102"
    d["nodes"][1]["bind_metrics"] = "http://*:9102"
    cfg = write_config(d, tmp_path / "m.toml")
    assert (cfg.node(1).metrics, cfg.node(1).bind_metrics) == ("http://127.0.0.1:9101", "http://127.0.0.1:9101")
    assert (cfg.node(2).metrics, cfg.node(2).bind_metrics) == ("http://127.0.0.1:9102", "http://*:9102")
    assert (cfg.node(3).metrics, cfg.node(3).bind_metrics) == (None, None)
    assert load_config(tmp_path / "m.toml") == cfg  # written and read back


@pytest.mark.parametrize("node, expected", [
    ({"metrics": "tcp://127.0.0.1:9101"}, "nodes[1] (id 1).metrics"),
    ({"metrics": "http://127.0.0.1:0"}, "nodes[1] (id 1).metrics"),
    ({"metrics": "http://*:9101"}, "nodes[1] (id 1).metrics"),
    ({"metrics": 9101}, "nodes[1] (id 1).metrics"),
    ({"bind_metrics": "http://*:9101"}, "nodes[1] (id 1).bind_metrics"),
    ({"metrics": "http://127.0.0.1:7101"}, "nodes[1] (id 1).metrics"),  # the node's rpc port
    ({"metrics": "http://127.0.0.1:9101", "bind_metrics": "http://*:7101"}, "nodes[1] (id 1).bind_metrics"),
])
def test_bad_metrics_addresses_are_refused_naming_the_key(node: dict[str, Any], expected: str) -> None:
    d = base()
    d["nodes"][0].update(node)
    with pytest.raises(ConfigError) as err:
        config_from_dict(d, "/tmp", path="c.toml")
    assert_one_line_error(err.value, "c.toml", expected)


def test_two_nodes_cannot_share_a_metrics_address() -> None:
    d = base()
    d["nodes"][0]["metrics"] = d["nodes"][1]["metrics"] = "http://127.0.0.1:9101"
    with pytest.raises(ConfigError) as err:
        config_from_dict(d, "/tmp", path="c.toml")
    assert_one_line_error(err.value, "c.toml", "nodes[2] (id 2).metrics")
