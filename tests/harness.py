"""`LocalCluster`: real zrep node processes on loopback, for tests.

Job: write a cluster file on free ports under a test's tmp_path, start each
node as `python -m zrep.node` in its own session (process group), and give
tests what they need to hurt it and look at it: kill, pause, resume,
restart, status over the wire, a minimal synchronous client, leader and
convergence waits, log files.

Invariants:
  * Every wait polls a condition against a deadline; none is a bare sleep.
  * Every process group started is killed by `close()` (the pytest fixtures
    call it at teardown, also when the test failed), paused ones included.
  * The helper client speaks the real wire protocol (zrep.codec), one DEALER
    per node; it does not use zrep.client (written separately).

Imports zmq, the codec and the config writer; never the node's internals.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import zmq

from zrep.client_messages import ClientReply, ClientRequest, Code
from zrep.codec import decode, encode
from zrep.config import ClusterConfig, write_config
from zrep.transport import source_endpoint

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, so outgoing connections never take ours
START_MARK = "=== harness: start "
RETRYABLE = frozenset({Code.NO_LEADER, Code.TIMEOUT, Code.UNAVAILABLE})


class ClusterError(AssertionError):
    """A condition the harness waited for did not come true in time."""


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; raise ClusterError at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_ports(host: str, count: int, taken: set[int]) -> list[int]:
    """`count` ports that are bindable on `host` now (retrying random picks)."""
    rng = random.Random()
    out: list[int] = []
    for _ in range(1000 * count):
        if len(out) == count:
            return out
        port = rng.randrange(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        taken.add(port)
        out.append(port)
    raise ClusterError(f"no {count} free ports on {host}")


class LocalCluster:
    """A cluster of real node processes. Use as a context manager (or via the fixtures)."""

    def __init__(self, tmp_path: Path, nodes: int = 3, hosts: list[str] | None = None, heartbeat_ms: int = 50,
                 election_timeout_ms: int = 500, bugs: Iterable[str] | Mapping[int, Iterable[str]] | None = None,
                 start: bool = True, max_body_bytes: int | None = None,
                 max_frame_bytes: int | None = None, client_host: str | None = None) -> None:
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ids = tuple(range(1, nodes + 1))
        hosts = hosts or ["127.0.0.1"]
        taken: set[int] = set()
        node_rows = []
        for i in self.ids:
            host = hosts[(i - 1) % len(hosts)]
            rpc, pub = free_ports(host, 2, taken)
            node_rows.append({"id": i, "rpc": f"tcp://{host}:{rpc}", "pub": f"tcp://{host}:{pub}"})
        cluster: dict[str, Any] = {"heartbeat_ms": heartbeat_ms, "election_timeout_ms": election_timeout_ms,
                                   "data_dir": "data"}
        if max_body_bytes is not None:
            cluster["max_body_bytes"] = max_body_bytes
        if max_frame_bytes is not None:
            cluster["max_frame_bytes"] = max_frame_bytes
        self.config_path = self.dir / "cluster.toml"
        self.cfg: ClusterConfig = write_config({"cluster": cluster, "nodes": node_rows}, self.config_path)
        if isinstance(bugs, Mapping):
            self.bugs = {i: sorted(bugs.get(i, ())) for i in self.ids}
        else:
            self.bugs = {i: sorted(bugs or ()) for i in self.ids}
        self.client_host = client_host  # the helper client's source address (partition tests)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self._ctx = zmq.Context()
        self._socks: dict[int, zmq.Socket] = {}
        self._req_ids = itertools.count(1)
        if start:
            for i in self.ids:
                self.start(i)

    # ---------------------------------------------------------------- processes

    def rpc(self, node_id: int) -> str:
        return self.cfg.node(node_id).rpc

    def log_path(self, node_id: int) -> Path:
        return self.dir / f"node-{node_id}.log"

    def wal_path(self, node_id: int) -> Path:
        return self.cfg.node_data_dir(node_id) / "wal"

    def start(self, node_id: int | None = None) -> None:
        """Start one node (or every node not running)."""
        for i in (self.ids if node_id is None else (node_id,)):
            if self.running(i):
                continue
            cmd = [sys.executable, "-m", "zrep.node", "--config", str(self.config_path), "--id", str(i)]
            for bug in self.bugs[i]:
                cmd += ["--unsafe-bug", bug]
            with open(self.log_path(i), "ab") as out:
                out.write(f"{START_MARK}{i} ===\n".encode())
                out.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                self.procs[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                                 start_new_session=True)
            self.paused.discard(i)

    def running(self, node_id: int) -> bool:
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def live(self) -> list[int]:
        return [i for i in self.ids if self.running(i)]

    def _signal(self, node_id: int, sig: int) -> None:
        p = self.procs.get(node_id)
        if p is None:
            return
        try:
            os.killpg(p.pid, sig)  # start_new_session: the pgid is the pid
        except ProcessLookupError:
            pass

    def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        """Send `sig` to the node's process group and wait for it to exit; its exit code."""
        p = self.procs.get(node_id)
        if p is None:
            return None
        self._signal(node_id, sig)
        if node_id in self.paused and sig != signal.SIGKILL:
            self._signal(node_id, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.paused.discard(node_id)
        self._drop_socket(node_id)
        return p.wait(timeout)

    def pause(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGCONT)
        self.paused.discard(node_id)

    def restart(self, node_id: int) -> None:
        if self.running(node_id):
            self.kill(node_id)
        self.start(node_id)

    def wait_exit(self, node_id: int, timeout: float = 15.0) -> int:
        return self.procs[node_id].wait(timeout)

    def stop_all(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> dict[int, int | None]:
        """Stop every node with `sig` (SIGKILL if one does not exit in time); exit codes."""
        codes: dict[int, int | None] = {}
        for i in self.live():
            try:
                codes[i] = self.kill(i, sig, timeout)
            except subprocess.TimeoutExpired:
                codes[i] = self.kill(i, signal.SIGKILL)
        return codes

    def close(self) -> None:
        """Kill every process group ever started (paused ones too) and free the sockets."""
        for i, p in self.procs.items():
            if p.poll() is None:
                self._signal(i, signal.SIGKILL)
                self._signal(i, signal.SIGCONT)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for s in self._socks.values():
            s.close(linger=0)
        self._socks.clear()
        self._ctx.term()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- logs

    def node_log(self, node_id: int, last_life: bool = False) -> str:
        """The node's stdout+stderr; with last_life, only since its latest start."""
        try:
            text = self.log_path(node_id).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        if last_life:
            text = text.rpartition(f"{START_MARK}{node_id} ===\n")[2]
        return text

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for i in self.ids:
            tail = self.node_log(i).splitlines()[-lines:]
            out.append(f"----- node {i} (last {len(tail)} lines) -----\n" + "\n".join(tail))
        return "\n".join(out)

    # ---------------------------------------------------------------- the wire

    def _socket(self, node_id: int) -> zmq.Socket:
        s = self._socks.get(node_id)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            rpc = self.rpc(node_id)
            s.connect(source_endpoint(self.client_host, rpc) if self.client_host else rpc)
            self._socks[node_id] = s
        return s

    def _drop_socket(self, node_id: int) -> None:
        s = self._socks.pop(node_id, None)
        if s is not None:
            s.close(linger=0)

    def request_raw(self, node_id: int, frames: list[bytes], timeout: float = 2.0) -> list[bytes] | None:
        """Send raw frames (one message, maybe multipart) and return the first reply's frames."""
        s = self._socket(node_id)
        s.send_multipart(frames)
        if s.poll(int(timeout * 1000)):
            return s.recv_multipart()
        self._drop_socket(node_id)  # nothing stale may answer a later request
        return None

    def request(self, node_id: int, op: str, args: dict[str, Any] | None = None,
                timeout: float = 2.0) -> ClientReply:
        """One request, one reply (matched by req_id). ClusterError on timeout."""
        req_id = next(self._req_ids)
        s = self._socket(node_id)
        s.send(encode(ClientRequest(req_id, op, args or {})))
        deadline = time.monotonic() + timeout
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not s.poll(left_ms):
                self._drop_socket(node_id)
                raise ClusterError(f"node {node_id}: no reply to {op} within {timeout}s")
            reply = decode(s.recv())
            if isinstance(reply, ClientReply) and reply.req_id == req_id:
                return reply

    def pipeline(self, node_id: int, requests: list[tuple[str, dict[str, Any]]],
                 timeout: float = 10.0) -> list[ClientReply | None]:
        """Send every request before reading any reply; replies in request order
        (None for one that did not come back in time)."""
        s = self._socket(node_id)
        ids = [next(self._req_ids) for _ in requests]
        for req_id, (op, args) in zip(ids, requests):
            s.send(encode(ClientRequest(req_id, op, args)))
        got: dict[int, ClientReply] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(ids):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not s.poll(left_ms):
                self._drop_socket(node_id)
                break
            reply = decode(s.recv())
            if isinstance(reply, ClientReply):
                got[reply.req_id] = reply
        return [got.get(i) for i in ids]

    def try_request(self, node_id: int, op: str, args: dict[str, Any] | None = None,
                    timeout: float = 2.0) -> ClientReply | None:
        try:
            return self.request(node_id, op, args, timeout)
        except ClusterError:
            return None

    def status(self, node_id: int, timeout: float = 2.0) -> dict[str, Any]:
        reply = self.request(node_id, "status", {}, timeout)
        if not reply.ok:
            raise ClusterError(f"node {node_id}: status refused: {reply}")
        return reply.result

    def statuses(self, nodes: Iterable[int] | None = None, timeout: float = 1.0) -> dict[int, dict[str, Any]]:
        """Status of every given running, unpaused node that answers in time."""
        out = {}
        for i in (self.live() if nodes is None else nodes):
            if i in self.paused or not self.running(i):
                continue
            reply = self.try_request(i, "status", {}, timeout)
            if reply is not None and reply.ok:
                out[i] = reply.result
        return out

    # ---------------------------------------------------------------- waits

    def leader(self, nodes: Iterable[int] | None = None) -> int | None:
        """The leader a majority of the cluster agrees on right now, else None."""
        st = self.statuses(nodes)
        leaders = [(s["epoch"], i) for i, s in st.items() if s["role_name"] == "leader"]
        if not leaders:
            return None
        epoch, lead = max(leaders)
        agree = sum(1 for s in st.values() if s["leader"] == lead and s["epoch"] == epoch)
        return lead if agree > len(self.ids) // 2 else None

    def wait_for_leader(self, timeout: float = 10.0, nodes: Iterable[int] | None = None,
                        not_: int | None = None) -> int:
        """Poll status over the wire until a majority agrees on a leader (other than `not_`)."""
        nodes = list(nodes) if nodes is not None else None

        def check() -> int | None:
            lead = self.leader(nodes)
            return lead if lead is not None and lead != not_ else None

        return wait_until("a leader", check, timeout)

    def digests(self, nodes: Iterable[int] | None = None) -> dict[int, tuple[str, int]]:
        return {i: (s["digest"], s["store_applied"]) for i, s in self.statuses(nodes).items()}

    def wait_converged(self, timeout: float = 15.0, nodes: Iterable[int] | None = None,
                       min_applied: int = 0) -> str:
        """Wait until the given (default: all) nodes applied the same log; the digest."""
        want = list(nodes) if nodes is not None else list(self.ids)

        def check() -> str | None:
            d = self.digests(want)
            if len(d) != len(want) or len(set(d.values())) != 1:
                return None
            digest, applied = next(iter(d.values()))
            return digest if applied >= min_applied else None

        return wait_until(f"nodes {want} to converge", check, timeout, interval=0.05)

    # ---------------------------------------------------------------- a tiny client

    def send(self, client: str, seq: int, to: str, body: bytes, *, sender: str = "", timeout: float = 20.0,
             attempt_timeout: float = 2.0, first: int | None = None, ack: str = "majority") -> dict[str, Any]:
        """Send one message with retries (same client and seq on every attempt) until
        acknowledged; the OK result. Follows NOT_LEADER hints, rotates on silence."""
        args = {"client": client, "seq": seq, "low": seq, "ack": ack, "sender": sender, "to": to, "body": body}
        return self._retry("send", args, timeout, attempt_timeout, first)

    def read(self, mailbox: str, *, node: int | None = None, stale: bool = False, limit: int = 10_000,
             timeout: float = 10.0) -> list[tuple[int, str, bytes, int]]:
        """All messages of `mailbox` as (offset, sender, body, index), linearizable unless stale."""
        op = "stale_read" if stale else "read"
        args = {"mailbox": mailbox, "after": -1, "limit": limit}
        result = self._retry(op, args, timeout, 2.0, node, stick=node is not None)
        return [tuple(row) for row in result["messages"]]  # type: ignore[misc]

    def _retry(self, op: str, args: dict[str, Any], timeout: float, attempt_timeout: float,
               first: int | None, stick: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        order = itertools.cycle(self.ids)
        target = first or next(order)
        last: Any = None
        while time.monotonic() < deadline:
            if stick or (self.running(target) and target not in self.paused):
                reply = self.try_request(target, op, args, attempt_timeout)
                last = reply
                if reply is not None and reply.ok:
                    return reply.result
                if reply is not None and reply.code == Code.NOT_LEADER and not stick:
                    target = reply.result["leader"]
                    continue
                if reply is not None and reply.code not in RETRYABLE:
                    raise ClusterError(f"{op} {args.get('seq', '')} refused: {reply}")
            if not stick:
                target = next(order)
            time.sleep(0.05)  # backoff between attempts, inside the deadline
        raise ClusterError(f"{op} not answered OK within {timeout}s (last reply: {last})")
