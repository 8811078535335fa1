"""`zrep keys new | show | check` and the security part of a cluster file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from zrep.cli import main
from zrep.errors import ConfigError
from zrep.security.settings import parse_security


def run(*args: str, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), prog_name="zrep")
    finally:
        os.chdir(old)


def write_cluster(tmp: Path, security: str, principals: str = "", node_keys: bool = True) -> Path:
    nodes = "".join(
        f'[[nodes]]\nid = {i}\nrpc = "tcp://127.0.0.1:{7100 + i}"\npub = "tcp://127.0.0.1:{7200 + i}"\n'
        + (f'public_keys = ["node-{i}.key"]\n' if node_keys else "") for i in (1, 2, 3))
    path = tmp / "cluster.toml"
    path.write_text('[cluster]\nheartbeat_ms = 50\nelection_timeout_ms = 300\ndata_dir = "data"\n\n'
                    + security + "\n" + nodes + principals)
    return path


def test_new_then_check_a_curve_cluster(tmp_path):
    for name in ("node-1", "node-2", "node-3", "orders-app"):
        assert run("keys", "new", name, cwd=tmp_path).exit_code == 0
    write_cluster(tmp_path, '[security]\nmode = "curve"\n',
                  '[[principals]]\nname = "orders-app"\npublic_keys = ["orders-app.key"]\nsend = ["orders.*"]\n')
    result = run("keys", "check", "--config", "cluster.toml", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["mode"] == "curve" and set(report["nodes"]) == {"1", "2", "3"}
    assert [p["name"] for p in report["principals"]] == ["orders-app"]
    assert {s["mode"] for s in report["secrets"]} == {"0600"} and all(s["listed"] for s in report["secrets"])
    assert "secret-key" not in result.stdout  # only public keys and fingerprints come out


def test_check_names_every_problem_in_one_line_each(tmp_path):
    for name in ("node-1", "node-2", "node-3"):
        run("keys", "new", name, cwd=tmp_path)
    os.chmod(tmp_path / "keys" / "node-2.key_secret", 0o644)
    # node 3's key is also listed for a principal: one key, one identity
    write_cluster(tmp_path, '[security]\nmode = "curve"\n',
                  '[[principals]]\nname = "app"\npublic_keys = ["node-3.key"]\n')
    result = run("keys", "check", "--config", "cluster.toml", cwd=tmp_path)
    assert result.exit_code == 2
    assert "one key names one identity" in result.stderr and "chmod 600" in result.stderr


def test_curve_mode_needs_a_key_for_every_node(tmp_path):
    path = write_cluster(tmp_path, '[security]\nmode = "curve"\n', node_keys=False)
    with pytest.raises(ConfigError, match="node 1 has no public_keys.*zrep keys new node-1"):
        parse_security({"mode": "curve"}, None, [{"id": 1}], tmp_path, str(path))


@pytest.mark.parametrize("security,principals,match", [
    ({"mode": "tls"}, None, "not one of none, curve"),
    ({"mode": "none", "colour": 1}, None, "unknown key 'colour'"),
    ({"handshake_timeout_ms": 5}, None, "100 to 60000"),
    (None, [{"name": "app", "public_keys": [], "send": "orders.*"}], "list of mailbox globs"),
    (None, [{"name": "app"}], "has no public_keys"),
])
def test_bad_security_settings_are_one_line_errors(tmp_path, security, principals, match):
    with pytest.raises(ConfigError, match=match):
        parse_security(security, principals, [], tmp_path, "cluster.toml")


def test_without_a_security_table_nothing_changes(tmp_path):
    s = parse_security(None, None, [{"id": 1}], tmp_path, "cluster.toml")
    assert s.mode == "none" and not s.curve and s.policy().identify(b"x" * 40) is None


def test_show_prints_the_public_key_only(tmp_path):
    run("keys", "new", "app", cwd=tmp_path)
    secret_text = (tmp_path / "keys" / "app.key_secret").read_text()
    secret = secret_text.split('secret-key = "')[1].split('"')[0]
    out = run("keys", "show", "keys/app.key_secret", cwd=tmp_path).stdout
    assert secret not in out and "fingerprint" in out
