"""`zrep admin`: argument parsing, output and exit codes that need no running cluster.

What runs against a cluster is in tests/integration/test_membership.py; here:
usage errors exit 2 before anything is loaded, the members table and its JSON,
and `inspect DIR` on a data directory written by the real WAL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from zrep.cli import main
from zrep.cli.admin import member_json, member_lines
from zrep.client import MemberInfo, Membership
from zrep.core.membership import Member, encode_config, static_config
from zrep.core.messages import Entry, HardState
from zrep.exit_codes import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from zrep.storage.wal import Wal


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["admin", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args, needle", [
    (["add", "4", "--pub", "tcp://127.0.0.1:7204"], "Missing option '--rpc'"),
    (["add", "x", "--rpc", "a", "--pub", "b"], "'x' is not a valid integer"),
    (["remove", "0"], "0 is not in the range"),
    (["promote", "2", "--wait", "-1"], "-1.0 is not in the range"),
    (["update", "2", "--rpc", "a"], "Missing option '--pub'"),
    (["transfer-leader", "x"], "Invalid value"),
])
def test_usage_errors_exit_2(args: list[str], needle: str) -> None:
    code, _, err = run(*args)
    assert code == EXIT_USAGE and needle in err


def test_every_command_has_help() -> None:
    code, out, _ = run("--help")
    assert code == EXIT_OK
    for name in ("members", "add", "promote", "demote", "remove", "update", "replace", "inspect"):
        assert name in out
        assert run(name, "--help")[0] == EXIT_OK


def test_a_cluster_that_does_not_answer_is_exit_3_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text((Path(__file__).resolve().parents[2] / "config" / "cluster.toml").read_text()
                      .replace("7101", "1").replace("7102", "2").replace("7103", "3"))
    code, _, err = run("members", "--config", str(config), "--timeout", "0.5")
    assert code == EXIT_UNAVAILABLE, err
    assert len(err.strip().splitlines()) == 1 and "cannot connect to any node" in err


VIEW = Membership(cluster_id="1", forming=False, config_index=9, committed=False, committed_voters=[1, 2, 3],
                  leader=1, node=1, members=[
                      MemberInfo(1, "voter", "", "", "", "leader", 0),
                      MemberInfo(2, "voter", "", "", "", "live", 3),
                      MemberInfo(4, "learner", "a1", "tcp://127.0.0.1:7104", "tcp://127.0.0.1:7204", "silent", 120,
                                 lost_state=True)])


def test_members_table_says_what_is_pending_and_what_to_run() -> None:
    lines = member_lines(VIEW)
    assert lines[0].startswith("cluster 1: configuration at index 9 (pending") and "leader node 1" in lines[0]
    assert lines[1] == "committed voters: 1, 2, 3"
    assert lines[2].split() == ["ID", "ROLE", "INCARNATION", "STATE", "LAG", "RPC", "PUB"]
    assert lines[5].split() == ["4", "learner", "a1", "silent", "120", "tcp://127.0.0.1:7104", "tcp://127.0.0.1:7204"]
    assert "(cluster file)" in lines[3]
    assert lines[-1] == "node 4 answers from a new disk (its state was lost): run zrep admin replace 4"
    data = json.loads(json.dumps(member_json(VIEW)))
    assert data["voters"] == [1, 2] and data["learners"] == [4] and data["members"][2]["lag"] == 120


def test_inspect_reads_rank_commit_and_the_latest_configuration(tmp_path: Path) -> None:
    node_dir = tmp_path / "node-2"
    wal, _ = Wal.open(node_dir / "wal")
    first = static_config([1, 2, 3])
    second = first.without(3).with_member(Member(4, 0, False, "tcp://127.0.0.1:7104", "tcp://127.0.0.1:7204"))
    wal.append_entries([Entry(1, 1, b""), Entry(1, 2, encode_config(first)), Entry(2, 3, b""),
                        Entry(2, 4, encode_config(second)), Entry(2, 5, b"")])
    wal.set_hard_state(HardState(2, 1))
    wal.set_commit(3)
    wal.sync()
    wal.close()

    code, out, err = run("inspect", str(node_dir), "--json")
    assert code == EXIT_OK, err
    info = json.loads(out)
    assert (info["rank"], info["commit"], info["epoch"], info["vote"]) == ([2, 5], 3, 2, 1)
    assert info["config_source"] == "wal" and info["config_index"] == 4 and info["config_committed"] is False
    assert [(m["id"], m["role"]) for m in info["config"]["members"]] == [(1, "voter"), (2, "voter"), (4, "learner")]

    code, out, _ = run("inspect", str(node_dir))
    assert code == EXIT_OK
    assert "rank       epoch 2, index 5" in out and "from the wal at index 4 (not known to be committed)" in out
    assert "node 4    learner" in out and "tcp://127.0.0.1:7104" in out


def test_inspect_refuses_a_directory_without_a_wal_in_one_line(tmp_path: Path) -> None:
    code, _, err = run("inspect", str(tmp_path))
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "DATA_DIR/node-N" in err
