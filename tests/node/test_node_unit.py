"""The node shell in-process: reply mapping, source-bound endpoints, exit codes,
and a one-node cluster served from a thread (quick; no subprocesses)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

import zrep.storage.wal as wal_module
from zrep.config import ClusterConfig, source_endpoint, write_config
from zrep.core.messages import Entry
from zrep.core.replica import Replica
from zrep.errors import InvariantError
from zrep.local.cluster import free_ports
from zrep.node.compaction import snapshot_phase
from zrep.node.requests import reply_for
from zrep.node.start import (
    EXIT_CORRUPT_LOG,
    EXIT_INVARIANT,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_STORAGE,
    EXIT_USAGE,
    rebuild_store,
    run_node,
)
from zrep.storage.wal import Replay
from zrep.store.commands import encode_send
from zrep.store.store import Store
from zrep.wire.client_messages import ClientReply, ClientRequest, Code
from zrep.wire.codec import decode, encode

RPC_OF = {1: "tcp://127.0.0.1:7101", 2: "tcp://127.0.0.2:7102"}.get


# ------------------------------------------------------------------ rebuilding the store at start


def _entries(first: int, last: int) -> list[Entry]:
    return [Entry(1, i, b"" if i % 7 == 0 else encode_send(f"c{i % 3}", i, max(1, i - 4), "", f"box{i % 2}", b"m"))
            for i in range(first, last + 1)]


def _replay(first: int, last: int, commit: int) -> Replay:
    return Replay(hard_state=None, entries=_entries(first, last), first_index=first, commit=commit,  # type: ignore[arg-type]
                  torn_bytes=0, warnings=[], prev_epoch=1 if first > 1 else 0)


def _applied_one_by_one(store: Store, upto: int) -> Store:
    for e in _entries(store.applied_index + 1, upto):
        store.apply(e.index, e.data)
    return store


@pytest.mark.parametrize("first, last, snap_at, commit", [
    (1, 40, 0, 25),  # no snapshot: from the first entry up to the commit hint
    (1, 40, 10, 25),  # a snapshot inside the log
    (1, 40, 30, 25),  # a snapshot past the commit hint: nothing to apply
    (1, 40, 0, 60),  # a commit past the log's end: up to the end
    (11, 40, 10, 35),  # a compacted log right after its snapshot
    (11, 40, 20, 40),
    (1, 0, 0, 0),  # an empty log
])
def test_rebuild_store_applies_what_the_first_turn_would(first: int, last: int, snap_at: int, commit: int) -> None:
    """The entries after the store's index up to min(commit, log end), in order: the same
    store (bytes and digest) as applying them one at a time, the way the loop's first turn did."""
    snapshot = _applied_one_by_one(Store(), snap_at)
    store = Store.from_bytes(snapshot.to_bytes())
    rebuild_store(store, _replay(first, last, commit), commit)
    expected = _applied_one_by_one(Store.from_bytes(snapshot.to_bytes()), max(snap_at, min(commit, last)))
    assert store.applied_index == expected.applied_index
    assert (store.to_bytes(), store.digest()) == (expected.to_bytes(), expected.digest())


def test_rebuild_store_refuses_a_store_behind_the_log_start() -> None:
    with pytest.raises(InvariantError):
        rebuild_store(Store(), _replay(11, 40, 30), 30)


# ------------------------------------------------------------------ replies


@pytest.mark.parametrize(
    "result, code, extra",
    [
        ({"ok": True, "mailbox": "a", "offset": 3, "index": 9}, Code.OK, {"mailbox": "a", "offset": 3, "index": 9}),
        ({"ok": False, "error": "NOT_LEADER", "message": "m", "leader": 2}, Code.NOT_LEADER,
         {"leader": 2, "rpc": "tcp://127.0.0.2:7102"}),
        ({"ok": False, "error": "NOT_LEADER", "message": "m", "leader": 0}, Code.NO_LEADER, {"leader": 0}),
        ({"ok": False, "error": "NO_LEADER", "message": "m", "leader": 0}, Code.NO_LEADER, {"leader": 0}),
        ({"ok": False, "error": "TIMEOUT", "message": "m"}, Code.TIMEOUT, {}),
        ({"ok": False, "error": "TOO_LARGE", "message": "m", "epoch": 2}, Code.TOO_LARGE, {"epoch": 2}),
        ({"ok": False, "error": "BAD_MAILBOX", "message": "m", "epoch": 2}, Code.BAD_REQUEST,
         {"reason": "BAD_MAILBOX", "epoch": 2}),
        ({"ok": False, "error": "CLIENT_EXPIRED", "message": "m"}, Code.BAD_REQUEST, {"reason": "CLIENT_EXPIRED"}),
    ],
)
def test_service_answers_become_wire_replies(result: dict[str, Any], code: str, extra: dict[str, Any]) -> None:
    reply = reply_for(7, result, lambda i: RPC_OF(i) or "")
    assert (reply.req_id, reply.code, reply.result) == (7, code, extra)
    assert decode(encode(reply)) == reply


def test_nodes_take_their_snapshots_in_turn() -> None:
    # Spread over one interval, in id order, whatever the ids and their order in the file.
    assert [snapshot_phase(i, [5, 1, 3], 300) for i in (1, 3, 5)] == [0, 100, 200]
    phases = [snapshot_phase(i, range(1, 6), 20_000) for i in range(1, 6)]
    assert phases == sorted(set(phases)) and phases[0] == 0 and phases[-1] < 20_000
    assert snapshot_phase(7, [7], 20_000) == 0


def test_peer_connections_name_their_source_address() -> None:
    assert source_endpoint("127.0.0.2", "tcp://127.0.0.3:7101") == "tcp://127.0.0.2:0;127.0.0.3:7101"
    assert source_endpoint("::1", "tcp://[::1]:7101") == "tcp://[::1]:0;[::1]:7101"
    assert source_endpoint("node1.example", "tcp://node2.example:7101") == "tcp://node2.example:7101"


# ------------------------------------------------------------------ exit codes


def one_node(tmp_path: Path, **cluster: Any) -> ClusterConfig:
    rpc, pub = free_ports("127.0.0.1", 2, set())
    raw = {"cluster": {"heartbeat_ms": 10, "election_timeout_ms": 30, "data_dir": "data", **cluster},
           "nodes": [{"id": 1, "rpc": f"tcp://127.0.0.1:{rpc}", "pub": f"tcp://127.0.0.1:{pub}"}]}
    return write_config(raw, tmp_path / "one.toml")


def run_briefly(cfg: ClusterConfig | str, seconds: float = 10.0, **kw: Any) -> tuple[int, list[str]]:
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    code = run_node(cfg, 1, log=lines.append, stopping=lambda: time.monotonic() > deadline, mode="init", **kw)
    return code, lines


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    cfg = one_node(tmp_path)
    for target, node_id, bugs in ((tmp_path / "missing.toml", 1, ()), (cfg, 9, ()), (cfg, 1, ("no_such_bug",))):
        lines: list[str] = []
        assert run_node(target, node_id, bugs=bugs, log=lines.append) == EXIT_USAGE
        assert len(lines) == 1 and "\n" not in lines[0], lines


def test_corrupt_log_exits_3_naming_file_and_offset(tmp_path: Path) -> None:
    cfg = one_node(tmp_path)
    code, _ = run_briefly(cfg, 0.3)  # writes a hard state and a no-op
    assert code == EXIT_OK
    path = cfg.node_data_dir(1) / "wal"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    code, lines = run_briefly(cfg, 0.3)
    assert code == EXIT_CORRUPT_LOG
    assert len(lines) == 1 and str(path) in lines[0] and "byte 0" in lines[0] and "zrep log inspect" in lines[0]


def test_a_port_in_use_exits_6(tmp_path: Path) -> None:
    cfg = one_node(tmp_path)
    port = int(cfg.nodes[0].rpc.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        code, lines = run_briefly(cfg, 0.3)
    assert code == EXIT_NETWORK and len(lines) == 1 and "cannot open sockets" in lines[0]


def test_planted_bugs_are_announced_and_reported(tmp_path: Path) -> None:
    cfg = one_node(tmp_path)
    code, lines = run_briefly(cfg, 0.2, bugs=("never_truncate", "ack_before_persist"))
    assert code == EXIT_OK
    assert [ln for ln in lines if "UNSAFE" in ln and "['ack_before_persist', 'never_truncate']" in ln]


def test_a_failed_fsync_stops_the_node_at_once_with_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = one_node(tmp_path)
    calls = []
    real = wal_module.sync_data

    def failing(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:  # the flush on open passes; the first persist fails
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(wal_module, "sync_data", failing)
    code, lines = run_briefly(cfg, 10)
    assert code == EXIT_STORAGE
    assert len(calls) == 2, "a failed fsync is never retried"
    assert "fsync failed" in lines[-1] and "never retried" in lines[-1]


def test_a_broken_invariant_exits_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Replica) -> None:
        raise InvariantError("planted by the test")

    monkeypatch.setattr(Replica, "tick", broken)
    code, lines = run_briefly(one_node(tmp_path), 10)
    assert code == EXIT_INVARIANT and "planted by the test" in lines[-1]


# ------------------------------------------------------------------ a one-node cluster in a thread


def test_one_node_serves_writes_reads_and_status_then_stops_cleanly(tmp_path: Path) -> None:
    cfg = one_node(tmp_path)
    stop = threading.Event()
    result: list[int] = []
    lines: list[str] = []
    t = threading.Thread(target=lambda: result.append(run_node(cfg, 1, log=lines.append, stopping=stop.is_set, mode="init")))
    t.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cfg.nodes[0].rpc)
    req_ids = iter(range(1, 10_000))

    def ask(op: str, args: dict[str, Any]) -> ClientReply:
        req_id = next(req_ids)
        sock.send(encode(ClientRequest(req_id, op, args)))
        assert sock.poll(5000), f"no reply to {op}"
        reply = decode(sock.recv())
        assert isinstance(reply, ClientReply) and reply.req_id == req_id
        return reply

    try:
        deadline = time.monotonic() + 10
        while ask("status", {}).result["role_name"] != "leader":
            assert time.monotonic() < deadline, "a one-node cluster elects itself"
            time.sleep(0.01)
        send = {"client": "u", "seq": 1, "low": 1, "ack": "all", "sender": "me", "to": "box", "body": b"hi"}
        sent = ask("send", send)
        assert sent.ok and sent.result["offset"] == 0 and sent.result["all_durable"] is True, sent
        assert ask("send", send).result["index"] == sent.result["index"], "a retry gets the original answer"
        read = ask("read", {"mailbox": "box", "after": -1, "limit": 10})
        assert read.ok and [tuple(m[:3]) for m in read.result["messages"]] == [(0, "me", b"hi")]
        status = ask("status", {}).result
        assert status["rpc"] == cfg.nodes[0].rpc and status["peers"] == () and status["pending"] == 0
    finally:
        stop.set()
        t.join(10)
        sock.close(0)
        ctx.term()
    assert result == [EXIT_OK]
    assert any("is leader" in ln for ln in lines) and lines[-1].endswith("stopped")
