"""Tests for zrep.cli and zrep.local.up.

CliRunner for --help, argument validation, exit codes and JSON shapes; a
real cluster (tests/harness.py) for send/read/delete/mailboxes/status; real
subprocesses for what needs signals: `client watch` stopped by Ctrl-C and
`zrep cluster up`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from click.testing import CliRunner, Result
from harness import REPO, LocalCluster, wait_until

from zrep.cli import client as cli_client
from zrep.cli import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    main,
)
from zrep.config import parse_endpoint, write_config
from zrep.exit_codes import EXIT_ACK_NOT_MET, EXIT_BROKEN_PIPE, UP_PORTS_TAKEN


def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, prog_name="zrep")


def one_error_line(result: Result) -> str:
    """The failure's stderr: exactly one line."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ================================================================ help and usage

HELP = [
    [], ["node"], ["client"], ["client", "send"], ["client", "read"], ["client", "delete"],
    ["client", "mailboxes"], ["client", "watch"], ["client", "status"], ["cluster"], ["cluster", "up"],
    ["log"], ["log", "inspect"], ["bench"], ["bench", "wal"], ["sim"],
]


@pytest.mark.parametrize("words", HELP, ids=lambda w: " ".join(w) or "zrep")
def test_every_command_has_help(words):
    result = run(*words, "--help")
    assert result.exit_code == 0, result.output
    assert "usage:" in result.output.lower()


def test_the_top_help_lists_the_commands_and_the_exit_codes():
    out = run("--help").output
    for command in ("node", "client", "cluster", "log", "bench", "sim"):
        assert f"  {command} " in out
    for code in range(6):
        assert f"  {code}  " in out
    assert "--unsafe-bug" not in run("node", "--help").output  # test-only, hidden


def test_exit_code_constants():
    assert (EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_OUTCOME_UNKNOWN, EXIT_REJECTED) == (
        0, 1, 2, 3, 4, 5)


@pytest.mark.parametrize("args", [
    ["nonsense"],
    ["node"],  # --id is required
    ["node", "--id", "0"],
    ["client", "send", "hello"],  # --to is required
    ["client", "send", "--to", "inbox"],  # TEXT is required
    ["client", "send", "--to", "inbox", "--ack", "some", "x"],
    ["client", "read"],
    ["client", "read", "inbox", "--limit", "0"],
    ["client", "read", "inbox", "--after", "-2"],
    ["client", "delete", "inbox"],
    ["client", "delete", "inbox", "x"],
    ["client", "delete", "inbox", "-1"],
    ["client", "delete", "inbox", "3", "3"],
    ["client", "status", "--wait", "0"],
    ["client", "--timeout", "0", "status"],
], ids=lambda a: " ".join(a))
def test_bad_usage_exits_2(args):
    result = run(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Error" in result.stderr


def test_a_missing_config_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nope.toml"
    result = run("client", "--config", str(missing), "status")
    assert result.exit_code == EXIT_USAGE
    line = one_error_line(result)
    assert str(missing) in line and "not found" in line


def test_the_config_comes_from_zrep_config(tmp_path):
    missing = tmp_path / "from-env.toml"
    result = run("client", "mailboxes", env={"ZREP_CONFIG": str(missing)})
    assert result.exit_code == EXIT_USAGE
    assert str(missing) in one_error_line(result)


def test_node_reports_a_bad_config_with_exit_2(tmp_path):
    result = run("node", "--id", "1", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == EXIT_USAGE


# ================================================================ error exit codes without a cluster


def write_cluster_file(tmp_path: Path, addresses: list[str]) -> Path:
    rows = [{"id": i, "rpc": a, "pub": f"tcp://127.0.0.1:{i}"} for i, a in enumerate(addresses, start=1)]
    path = tmp_path / "cluster.toml"
    write_config({"cluster": {"heartbeat_ms": 50, "election_timeout_ms": 500, "data_dir": "data",
                              "max_body_bytes": 1000}, "nodes": rows}, path)
    return path


def closed_address() -> str:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(linger=0)
    return address


@pytest.fixture
def dead_cluster(tmp_path) -> Path:
    """A cluster file whose nodes are all down."""
    return write_cluster_file(tmp_path, [closed_address(), closed_address(), closed_address()])


@pytest.fixture
def silent_cluster(tmp_path):
    """A cluster file whose one node takes requests and never answers."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind("tcp://127.0.0.1:*")
    yield write_cluster_file(tmp_path, [sock.getsockopt_string(zmq.LAST_ENDPOINT)])
    sock.close()


def test_no_node_up_is_unavailable_exit_3_at_once(dead_cluster):
    for args in (["send", "--to", "inbox", "hi"], ["read", "inbox"], ["mailboxes"]):
        started = time.monotonic()
        result = run("client", "--config", str(dead_cluster), *args)  # the default 10 s timeout
        assert result.exit_code == EXIT_UNAVAILABLE
        assert "cannot connect to any node" in one_error_line(result) and "bin/up" in result.stderr
        assert time.monotonic() - started < 3.0  # every node refused: no 10 s wait


def test_options_work_after_the_command_name_and_from_the_environment(silent_cluster, tmp_path):
    (tmp_path / "dead").mkdir()
    dead_cluster = write_cluster_file(tmp_path / "dead", [closed_address(), closed_address(), closed_address()])
    # --config after the subcommand (was: "No such option")
    result = run("client", "status", "--wait", "0.3", "--config", str(dead_cluster))
    assert result.exit_code == EXIT_UNAVAILABLE and result.stdout.count(" down ") == 3
    # the later --config wins over the group's
    result = run("client", "--config", str(tmp_path / "nope.toml"), "mailboxes", "--config", str(dead_cluster))
    assert result.exit_code == EXIT_UNAVAILABLE
    # --timeout after the subcommand, and from ZREP_TIMEOUT
    for args, env in ((["send", "--timeout", "0.5", "--to", "inbox", "hi"], None),
                      (["send", "--to", "inbox", "hi"], {"ZREP_TIMEOUT": "0.5"})):
        started = time.monotonic()
        result = run("client", "--config", str(silent_cluster), *args, env=env)
        assert result.exit_code == EXIT_OUTCOME_UNKNOWN, result.output
        assert "0.5 s" in result.stderr and time.monotonic() - started < 5.0
    # -v after `client` and after the subcommand
    for args in (["client", "-v", "--config", str(dead_cluster), "send", "--to", "", "x"],
                 ["client", "--config", str(dead_cluster), "status", "-v", "--wait", "0.3"]):
        assert run(*args).exit_code in (EXIT_USAGE, EXIT_UNAVAILABLE)
    assert "--config" in run("client", "read", "--help").output and "ZREP_TIMEOUT" in run("client", "--help").output


def test_status_with_every_node_down_prints_the_table_and_exits_3(dead_cluster):
    result = run("client", "--config", str(dead_cluster), "status", "--wait", "0.3")
    assert result.exit_code == EXIT_UNAVAILABLE
    assert result.stdout.count(" down ") == 3
    assert "zrep cluster up" in one_error_line(result)
    rows = json.loads(run("client", "--config", str(dead_cluster), "status", "--wait", "0.3", "--json").stdout)
    assert [(r["id"], r["up"]) for r in rows] == [(1, False), (2, False), (3, False)]


def test_a_write_nobody_answers_is_outcome_unknown_exit_4(silent_cluster):
    result = run("client", "--config", str(silent_cluster), "--timeout", "0.5", "send", "--to", "inbox", "hi")
    assert result.exit_code == EXIT_OUTCOME_UNKNOWN
    line = one_error_line(result)
    assert "may or may not have been applied" in line and "zrep client read inbox" in line


def test_a_bad_mailbox_name_says_the_real_rule_and_exits_2(dead_cluster):
    for name in ("", "x" * 256, "a*b"):
        for args in (["send", "--to", name, "hi"], ["read", name], ["watch", name], ["delete", name, "0"]):
            result = run("client", "--config", str(dead_cluster), *args)
            assert result.exit_code == EXIT_USAGE, (args, result.output)
            assert "1..255 UTF-8 bytes" in result.stderr


def test_send_dash_strips_one_trailing_newline_and_refuses_empty_stdin(dead_cluster, monkeypatch):
    sent: list[bytes] = []
    monkeypatch.setattr(cli_client.Client, "send", lambda self, to, body, **kw: sent.append(body) or _a_receipt())
    for stdin, body in ((b"x\n", b"x"), (b"x\n\n", b"x\n"), (b"x", b"x"), (b"\xff\n", b"\xff")):
        assert run("client", "--config", str(dead_cluster), "send", "--to", "a", "-", input=stdin).exit_code == 0
        assert sent.pop() == body
    result = run("client", "--config", str(dead_cluster), "send", "--to", "a", "-", input=b"")
    assert result.exit_code == EXIT_USAGE and "stdin was empty" in result.stderr and not sent
    assert "trailing newline" in run("client", "send", "--help").output


def _a_receipt(all_durable: bool | None = None) -> cli_client.Receipt:
    return cli_client.Receipt("a", 0, 1, 1, [1, 2], all_durable, 1)


def test_ack_all_not_met_exits_6_after_printing_the_receipt(dead_cluster, monkeypatch):
    monkeypatch.setattr(cli_client.Client, "send", lambda self, to, body, **kw: _a_receipt(all_durable=False))
    result = run("client", "--config", str(dead_cluster), "send", "--ack", "all", "--to", "a", "x")
    assert result.exit_code == EXIT_ACK_NOT_MET == 6
    assert result.stdout.startswith("sent to a at offset 0")
    assert "--ack all not met" in one_error_line(result)
    result = run("client", "--config", str(dead_cluster), "send", "--ack", "all", "--json", "--to", "a", "x")
    assert result.exit_code == EXIT_ACK_NOT_MET and json.loads(result.stdout)["all_durable"] is False
    monkeypatch.setattr(cli_client.Client, "send", lambda self, to, body, **kw: _a_receipt(all_durable=True))
    assert run("client", "--config", str(dead_cluster), "send", "--ack", "all", "--to", "a", "x").exit_code == 0


def test_a_request_the_cluster_would_refuse_is_rejected_exit_5(dead_cluster):
    result = run("client", "--config", str(dead_cluster), "send", "--to", "inbox", "-", input=b"x" * 1001)
    assert result.exit_code == EXIT_REJECTED
    assert "1000" in one_error_line(result)


def test_an_internal_error_is_one_line_exit_1_and_verbose_shows_the_traceback(dead_cluster, monkeypatch):
    def broken(self: Any, timeout_s: float = 1.0) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_client.Client, "status", broken)
    result = run("client", "--config", str(dead_cluster), "status")
    assert result.exit_code == EXIT_INTERNAL
    assert "internal error: RuntimeError: boom" in one_error_line(result)
    for args in (["--verbose", "client", "--config", str(dead_cluster), "status"],
                 ["client", "-v", "--config", str(dead_cluster), "status"],
                 ["client", "--config", str(dead_cluster), "status", "-v"]):
        result = run(*args)
        assert result.exit_code == EXIT_INTERNAL
        assert "Traceback" in result.stderr, args


# ================================================================ a real cluster


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Any:
    c = LocalCluster(tmp_path_factory.mktemp("cli-cluster"))
    try:
        c.wait_for_leader()
        yield c
    finally:
        c.close()


def client_cmd(live: LocalCluster, *args: str, input: str | bytes | None = None) -> Result:
    return run("client", "--config", str(live.config_path), *args, input=input)


def test_send_prints_the_receipt(live):
    result = client_cmd(live, "send", "--to", "human", "--from", "ann", "--ack", "all", "hello")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first.startswith("sent to human at offset 0 (log index ")
    assert second == "on disk on nodes 1, 2, 3 (all)"


def test_send_lines_sends_each_line_once_in_order(live):
    result = client_cmd(live, "send", "--to", "many", "--lines", "-", input=b"one\ntwo\nthree\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sent 3 messages to many at offsets 0..2 (log index ")
    got = json.loads(client_cmd(live, "read", "many", "--json").stdout)
    assert [m["body"] for m in got["messages"]] == ["one", "two", "three"]
    as_json = client_cmd(live, "send", "--to", "many", "--lines", "--json", "-", input=b"four\nfive")
    assert [r["offset"] for r in json.loads(as_json.stdout)] == [3, 4]
    assert client_cmd(live, "send", "--to", "many", "--lines", "text").exit_code == 2  # usage: stdin only


def test_send_read_delete_mailboxes_as_json(live):
    sent = client_cmd(live, "send", "--to", "box", "--json", "-", input=b"from stdin")
    assert sent.exit_code == 0, sent.output
    receipt = json.loads(sent.stdout)
    assert set(receipt) == {"mailbox", "offset", "index", "epoch", "durable_on", "all_durable", "node"}
    assert (receipt["mailbox"], receipt["offset"]) == ("box", 0)
    assert client_cmd(live, "send", "--to", "box", "second").exit_code == 0

    got = json.loads(client_cmd(live, "read", "box", "--json").stdout)
    assert set(got) == {"mailbox", "messages", "applied", "node", "more", "next_after", "exists"}
    assert (got["more"], got["next_after"], got["exists"]) == (False, 1, True)
    assert got["messages"] == [
        {"offset": 0, "sender": "", "index": receipt["index"], "body": "from stdin", "encoding": "utf-8"},
        {"offset": 1, "sender": "", "index": got["messages"][1]["index"], "body": "second", "encoding": "utf-8"},
    ]
    after = json.loads(client_cmd(live, "read", "box", "--after", "0", "--stale", "--json").stdout)
    assert [m["offset"] for m in after["messages"]] in ([], [1])  # a stale node may lag, never differ

    boxes = json.loads(client_cmd(live, "mailboxes", "b*", "--json").stdout)
    assert boxes == [{"name": "box", "count": 2, "bytes": len("from stdin") + len("second")}]
    deleted = client_cmd(live, "delete", "box", "0", "--json")
    assert json.loads(deleted.stdout) == {"mailbox": "box", "deleted": [0]}
    again = client_cmd(live, "delete", "box", "0")
    assert again.exit_code == EXIT_REJECTED
    assert "NO_SUCH_MESSAGE" in one_error_line(again)


def test_read_pages_say_there_is_more_and_all_reads_to_the_end(live):
    lines = "".join(f"m{i}\n" for i in range(250)).encode()
    assert client_cmd(live, "send", "--to", "paged", "--lines", "-", input=lines).exit_code == 0
    first = client_cmd(live, "read", "paged")
    assert first.exit_code == 0 and len(first.stdout.splitlines()) == 100
    assert "more after offset 99" in first.stderr and "--after 99" in first.stderr and "--all" in first.stderr
    page = json.loads(client_cmd(live, "read", "paged", "--json").stdout)
    assert (len(page["messages"]), page["more"], page["next_after"]) == (100, True, 99)
    last = json.loads(client_cmd(live, "read", "paged", "--after", "199", "--json").stdout)
    assert (len(last["messages"]), last["more"], last["next_after"]) == (50, False, 249)
    exact = client_cmd(live, "read", "paged", "--after", "149")  # exactly a page left: no false "more"
    assert len(exact.stdout.splitlines()) == 100 and "more" not in exact.stderr
    every = client_cmd(live, "read", "paged", "--all", "--limit", "60")
    assert [line.split("\t")[2] for line in every.stdout.splitlines()] == [f"m{i}" for i in range(250)]
    assert "more" not in every.stderr
    every = json.loads(client_cmd(live, "read", "paged", "--all", "--json").stdout)
    assert len(every["messages"]) == 250 and every["more"] is False


def test_an_unknown_mailbox_is_told_apart_from_an_empty_one(live):
    nobox = client_cmd(live, "read", "nosuchbox")
    assert nobox.exit_code == 0 and nobox.stdout == "" and "no mailbox named 'nosuchbox'" in nobox.stderr
    assert json.loads(client_cmd(live, "read", "nosuchbox", "--json").stdout)["exists"] is False
    assert json.loads(client_cmd(live, "read", "nosuchbox", "--stale", "--json").stdout)["exists"] is None
    client_cmd(live, "send", "--to", "emptied", "x")
    client_cmd(live, "delete", "emptied", "0")
    emptied = client_cmd(live, "read", "emptied")
    assert emptied.exit_code == 0 and emptied.stdout == "" and emptied.stderr == ""
    assert json.loads(client_cmd(live, "read", "emptied", "--json").stdout)["exists"] is True


def test_a_reader_that_stops_early_ends_the_command_quietly(live):
    bodies = "".join(f"{i:04d}" + "x" * 1000 + "\n" for i in range(200)).encode()
    assert client_cmd(live, "send", "--to", "piped", "--lines", "-", input=bodies).exit_code == 0
    zrep = f"{sys.executable} -m zrep client --config {live.config_path}"
    proc = subprocess.run(["bash", "-c", f"{zrep} read piped --limit 200 | head -1; echo \"${{PIPESTATUS[0]}}\" >&2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("0\t-\t0000")
    assert proc.stderr.strip() == str(EXIT_BROKEN_PIPE), proc.stderr  # no traceback, no "internal error"


def test_log_inspect_decodes_entries_and_refuses_a_file_that_is_not_a_wal(live):
    client_cmd(live, "send", "--to", "inspected", "--from", "ann", "hello, wal")
    wal = live.wal_path(live.live()[0])
    wait_until("the entry on this node's disk", lambda: b"hello, wal" in wal.read_bytes(), 10)
    rows = [json.loads(line) for line in run("log", "inspect", str(wal), "--json").stdout.splitlines()]
    sent = [r for r in rows if r.get("op") == "send" and r.get("mailbox") == "inspected"]
    assert sent and sent[0]["sender"] == "ann" and sent[0]["body"] == "hello, wal" and sent[0]["seq"] == 1
    text = run("log", "inspect", str(wal)).stdout
    assert "send to inspected from ann" in text and "hello, wal" in text
    assert any(r.get("op") == "noop" for r in rows)  # a leader's first entry
    readme = run("log", "inspect", str(REPO / "README.md"))
    assert readme.exit_code == EXIT_USAGE and "is not a zrep WAL" in one_error_line(readme)


def test_read_prints_one_line_per_message(live):
    client_cmd(live, "send", "--to", "lines", "--from", "bob", "two\nlines")
    result = client_cmd(live, "read", "lines")
    assert result.exit_code == 0
    assert result.stdout == "0\tbob\ttwo\\nlines\n"


def test_status_table_and_json(live):
    result = client_cmd(live, "status")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("  ")[0] == "id" and "last heard" in header
    assert len(rows) == 3 and all(" up " in r for r in rows)
    data = json.loads(client_cmd(live, "status", "--json").stdout)
    assert [set(r) for r in data] == [{"id", "address", "up", "role", "epoch", "leader", "last_index", "commit",
                                      "applied", "last_heard_ms", "error", "pid", "log_first_index",
                                      "snapshot_index", "compactions", "snapshot_shipping"}] * 3
    assert all(type(r["pid"]) is int and r["pid"] > 0 for r in data)
    assert all(r["log_first_index"] >= 1 and r["compactions"] >= 0 and "installed" in r["snapshot_shipping"]
               for r in data)
    assert [r["role"] for r in data].count("leader") == 1


def zrep_process(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "zrep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, start_new_session=True)


class Lines:
    """A process's stdout lines, read in a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, what: str, timeout: float = 15.0) -> list[str]:
        return wait_until(f"{what!r} in the output", lambda: [x for x in self.lines if what in x], timeout)


def stop(proc: subprocess.Popen[str], sig: int, timeout: float = 15.0) -> int:
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_watch_prints_new_messages_and_ctrl_c_exits_0(live):
    client_cmd(live, "send", "--to", "news", "old")
    proc = zrep_process("client", "--config", str(live.config_path), "watch", "news", "--after", "0")
    try:
        out = Lines(proc)
        for i in range(3):
            assert client_cmd(live, "send", "--to", "news", f"new {i}").exit_code == 0
        out.wait_for("new 2")
        assert stop(proc, signal.SIGINT) == 0
        assert out.lines == ["1\t-\tnew 0", "2\t-\tnew 1", "3\t-\tnew 2"]
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# ================================================================ zrep cluster up


def node_pids(config_path: Path) -> dict[int, int]:
    """Node id -> pid of the `zrep node` processes started for this cluster file."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if "node" in words and str(config_path) in words and "--id" in words:
            pids[int(words[words.index("--id") + 1])] = int(entry.name)
    return pids


@contextmanager
def cluster_up(tmp_path: Path) -> Iterator[tuple[LocalCluster, subprocess.Popen[str]]]:
    """`zrep cluster up` on a fresh cluster file; whatever happens, nothing it started outlives the test."""
    config = LocalCluster(tmp_path, start=False)
    config.close()  # only its cluster file is used
    proc = zrep_process("cluster", "up", "--config", str(config.config_path))
    try:
        yield config, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in node_pids(config.config_path).values():
            os.killpg(pid, signal.SIGKILL)


def test_cluster_up_starts_every_node_prints_status_and_stops_cleanly(tmp_path):
    with cluster_up(tmp_path) as (config, proc):
        out = Lines(proc)
        out.wait_for("last heard")  # the status table: printed once there is a leader
        out.wait_for("leader")
        assert len(node_pids(config.config_path)) == 3
        assert out.wait_for("[node 2] ")
        assert stop(proc, signal.SIGTERM) == 0
        assert out.wait_for("all nodes stopped")
        assert node_pids(config.config_path) == {}


def test_cluster_up_says_when_a_node_dies_and_exits_1(tmp_path):
    with cluster_up(tmp_path) as (config, proc):
        out = Lines(proc)
        out.wait_for("last heard")
        os.kill(node_pids(config.config_path)[2], signal.SIGKILL)
        (line,) = out.wait_for("exited unexpectedly")
        assert "node 2 exited unexpectedly (killed by SIGKILL)" in line and "zrep node --id 2" in line
        assert stop(proc, signal.SIGINT) == 1
        assert node_pids(config.config_path) == {}


def test_cluster_up_refuses_to_start_over_a_running_cluster_or_a_taken_port(tmp_path):
    with cluster_up(tmp_path) as (config, proc):
        Lines(proc).wait_for("last heard")
        pids = node_pids(config.config_path)
        second = zrep_process("cluster", "up", "--config", str(config.config_path))
        out, _ = second.communicate(timeout=30)
        assert second.returncode == UP_PORTS_TAKEN == 6
        assert "a cluster is already running on these ports" in out
        for node, pid in pids.items():
            assert f"node {node} (pid {pid})" in out
        assert f"kill {' '.join(str(pids[n]) for n in sorted(pids))}" in out
        assert node_pids(config.config_path) == pids  # nothing started, nothing stopped
        assert stop(proc, signal.SIGTERM) == 0
    config = LocalCluster(tmp_path / "other", start=False)  # only its cluster file is used
    config.close()
    _, port = parse_endpoint(config.cfg.nodes[0].bind_rpc)
    with socket.socket() as holder:  # another program on node 1's port
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = zrep_process("cluster", "up", "--config", str(config.config_path))
        out, _ = result.communicate(timeout=30)
    assert result.returncode == UP_PORTS_TAKEN
    assert f"another program holds tcp://127.0.0.1:{port} (node 1)" in out
    assert node_pids(config.config_path) == {}


def test_cluster_up_with_a_bad_config_exits_2(tmp_path):
    result = run("cluster", "up", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == EXIT_USAGE
    assert "not found" in one_error_line(result)


def test_bench_wal_help_looks_like_the_other_commands():
    out = run("bench", "wal", "--help").output
    assert out.startswith("Usage: zrep bench wal [OPTIONS]") and "--seconds" in out and "-h, --help" in out


def test_the_readme_documents_every_config_key():
    from zrep.config import _CLUSTER_KEYS, _NODE_KEYS

    readme = (REPO / "README.md").read_text()
    for key in _CLUSTER_KEYS:
        assert f"`cluster.{key}`" in readme, key
    for key in _NODE_KEYS:
        assert f"`nodes[].{key}`" in readme, key


def test_a_node_without_quorum_logs_not_running_rate_limited_and_status_exits_3(tmp_path):
    c = LocalCluster(tmp_path / "alone", start=False)
    try:
        c.start(1)  # 1 of 3: it never has a quorum
        wait_until("the first 'not running' line", lambda: "not running" in c.node_log(1), 20)
        time.sleep(3)  # election rounds go on about twice a second
        lines = [line for line in c.node_log(1).splitlines() if "not running" in line]
        assert len(lines) == 1, lines
        status = run("client", "--config", str(c.config_path), "status", "--wait", "0.3")
        assert status.exit_code == EXIT_UNAVAILABLE and status.stdout.count(" up ") == 1
        assert "no leader: 1 of 3 nodes answer and a leader needs 2" in one_error_line(status)
    finally:
        c.close()


def test_cluster_up_secure_makes_keys_once_and_serves_only_keyed_clients(tmp_path):
    from zrep.client import Client, NotAuthorized

    config = LocalCluster(tmp_path, start=False)
    config.close()
    secure_config = config.cfg.data_dir / "cluster-secure.toml"
    for round_ in range(2):  # the second run reuses the keys the first made
        proc = zrep_process("cluster", "up", "--secure", "--config", str(config.config_path))
        try:
            out = Lines(proc)
            assert out.wait_for("ZREP_KEY=")
            out.wait_for("last heard")  # the status table: its own client has the key
            key = config.cfg.data_dir / "keys" / "local-admin.key_secret"
            assert 'mode = "curve"' in secure_config.read_text()
            with Client(secure_config, key=key, timeout_s=10) as client:
                client.send("secure-up", b"round %d" % round_)
                assert len(client.read("secure-up").messages) == round_ + 1
            with pytest.raises(NotAuthorized, match="requires a client key"):
                Client(secure_config)
            assert stop(proc, signal.SIGTERM) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in node_pids(secure_config).values():
                os.killpg(pid, signal.SIGKILL)
