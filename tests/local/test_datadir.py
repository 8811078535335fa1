"""The runners' freshness check agrees with the node's own on every combination of the files a node writes."""

from __future__ import annotations

import itertools

from zrep.local.datadir import NODE_FILES, is_fresh
from zrep.storage import identity


def test_the_runner_and_the_node_agree_on_a_fresh_directory(tmp_path):
    for n in range(len(NODE_FILES) + 1):
        for names in itertools.combinations(NODE_FILES, n):
            d = tmp_path / "-".join(names or ("none",))
            d.mkdir()
            for name in names:
                (d / name).write_bytes(b"x")
            assert is_fresh(d) == identity.is_fresh(d) == (not names)
    assert is_fresh(tmp_path / "missing") and identity.is_fresh(tmp_path / "missing")


def test_cluster_up_founds_a_brand_new_cluster_and_joins_a_lost_disk(tmp_path):
    from zrep.config import write_config
    from zrep.local.up import node_command, start_modes

    nodes = [{"id": i, "rpc": f"tcp://127.0.0.1:{20000 + 2 * i}", "pub": f"tcp://127.0.0.1:{20001 + 2 * i}"}
             for i in (1, 2, 3)]
    raw = {"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 300, "data_dir": "data"}, "nodes": nodes}
    cfg = write_config(raw, tmp_path / "c.toml")
    assert start_modes(cfg) == {1: "init", 2: "init", 3: "init"}
    for i in (1, 3):
        cfg.node_data_dir(i).mkdir(parents=True)
        (cfg.node_data_dir(i) / "identity").write_text("{}")
    assert start_modes(cfg) == {1: None, 2: "join", 3: None}  # node 2's disk was lost: never --init again
    assert node_command("c.toml", 2, "join")[-1] == "--join" and "--init" not in node_command("c.toml", 1)
