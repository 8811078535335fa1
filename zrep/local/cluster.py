"""`LocalCluster`: real zrep node processes on this machine, for tests, the
chaos tool and benchmarks.

Job: write a cluster file on free ports (optionally one loopback address per
node: 127.0.0.1, .2, ...) or copy a given one with its data moved into the
cluster's own directory; start each node as `python -m zrep.node` in its own
session (process group); kill, pause, resume, restart it; ask it for its
status over the wire; wait for a leader and for convergence; and account for
every node process's life: who ended it, and how.

Invariants:
  * Every wait polls a condition against a deadline; none is a bare sleep.
  * Every process group started is killed by `close()`, paused ones included.
  * Every life of a node is recorded (`lives`) with the signal we sent it, if
    any, and its exit code once it ended: a node that exits without our
    signal, or exits non-zero on our SIGTERM, is `unexpected`.
  * The wire helpers speak the real protocol (zrep.wire.codec), one DEALER per
    node, optionally bound to a source address of their own so that
    address-pair partitions never cut them (`client_host`).
  * Not thread-safe: one thread drives a LocalCluster (ZeroMQ sockets).

Imports zmq, the codec, the client messages, the config and the transport's
endpoint helper; never the node's internals.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq

from zrep.config import ClusterConfig, load_config, source_endpoint, write_config
from zrep.exit_codes import NODE_REMOVED
from zrep.local.datadir import is_fresh
from zrep.local.processes import kill_all, signal_group, spawn
from zrep.local.secure import secure_copy
from zrep.security.keys import load_secret
from zrep.security.zap import curve_client
from zrep.wire.client_messages import ClientReply, ClientRequest
from zrep.wire.codec import decode, encode

T = TypeVar("T")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the zrep package
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, so outgoing connections never take ours
START_MARK = "=== localcluster: start "
CLIENT_HOST = "127.0.0.100"  # a source address for clients, apart from every node's


class ClusterError(AssertionError):
    """A condition the cluster was waited for did not come true in time.

    An AssertionError, so a test that waits in vain fails rather than errors.
    """


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


def loopback_hosts(count: int) -> list[str]:
    """One loopback address per node: 127.0.0.1, 127.0.0.2, ..."""
    if not 1 <= count <= 99:
        raise ValueError("between 1 and 99 nodes get their own loopback address")
    return [f"127.0.0.{i}" for i in range(1, count + 1)]


@dataclass
class Life:
    """One run of one node process, from start to exit."""

    node: int
    pid: int
    started: float  # time.monotonic()
    signal: int | None = None  # the last signal we sent to end it (SIGKILL, SIGTERM)
    returncode: int | None = None  # None while it runs
    ended: float | None = None
    removing: bool = False  # we removed it from the configuration: it stops by itself (NODE_REMOVED)

    @property
    def unexpected(self) -> bool:
        """It ended, and not by our hand: no signal of ours, or an exit code of its own after our SIGTERM."""
        if self.returncode is None:
            return False
        if self.removing and self.returncode == NODE_REMOVED:
            return False
        if self.signal == signal.SIGKILL:
            return False
        if self.signal in (signal.SIGTERM, signal.SIGINT):
            # Exit 0 is a clean stop; dying of the signal itself means it came before the
            # node set its handlers (just started). Any other code is the node's own failure.
            return self.returncode not in (0, -self.signal)
        return True

    def describe(self) -> str:
        code = self.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        sent = f", after our {signal.Signals(self.signal).name}" if self.signal else ", no signal of ours"
        return f"node {self.node} (pid {self.pid}): {how}{sent}"



class LocalCluster:
    """A cluster of real node processes. Use as a context manager, or call close()."""

    def __init__(self, directory: Path, nodes: int = 3, hosts: list[str] | None = None, heartbeat_ms: int = 50,
                 election_timeout_ms: int = 300, bugs: Iterable[str] | Mapping[int, Iterable[str]] | None = None,
                 start: bool = True, max_body_bytes: int | None = None,
                 max_frame_bytes: int | None = None, client_host: str | None = None,
                 config: ClusterConfig | str | Path | None = None, snapshot_entries: int | None = None,
                 secure: bool = False) -> None:
        """A new cluster file in `directory` (or `config`, copied there with its data moved in).

        `secure`: CURVE on every socket, with fresh keys in `directory/keys` for each node and for
        the principal `local-admin` (every grant, admin), whose secret is `client_key`; the
        cluster's own wire helpers use it too."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "cluster.toml"
        self.secure = secure
        self.client_key: Path | None = None
        self._curve: tuple[bytes, bytes] | None = None
        if config is not None:
            self.cfg = self._copy_config(config)
        else:
            self.cfg = self._new_config(nodes, hosts or ["127.0.0.1"], heartbeat_ms, election_timeout_ms,
                                        max_body_bytes, max_frame_bytes, snapshot_entries)
        self.ids = self.cfg.node_ids
        if isinstance(bugs, Mapping):
            self.bugs = {i: sorted(bugs.get(i, ())) for i in self.ids}
        else:
            self.bugs = {i: sorted(bugs or ()) for i in self.ids}
        self.client_host = client_host  # the wire helpers' source address (partition tests)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.lives: list[Life] = []
        self._life: dict[int, Life] = {}
        self.paused: set[int] = set()
        self._ctx = zmq.Context()
        self._socks: dict[int, zmq.Socket] = {}
        self._req_ids = itertools.count(1)
        if start:
            self.start()

    def _new_config(self, nodes: int, hosts: list[str], heartbeat_ms: int, election_timeout_ms: int,
                    max_body_bytes: int | None, max_frame_bytes: int | None,
                    snapshot_entries: int | None = None) -> ClusterConfig:
        taken: set[int] = set()
        rows = []
        for i in range(1, nodes + 1):
            host = hosts[(i - 1) % len(hosts)]
            rpc, pub = free_ports(host, 2, taken)
            rows.append({"id": i, "rpc": f"tcp://{host}:{rpc}", "pub": f"tcp://{host}:{pub}"})
        cluster: dict[str, Any] = {"heartbeat_ms": heartbeat_ms, "election_timeout_ms": election_timeout_ms,
                                   "data_dir": "data"}
        if max_body_bytes is not None:
            cluster["max_body_bytes"] = max_body_bytes
        if max_frame_bytes is not None:
            cluster["max_frame_bytes"] = max_frame_bytes
        if snapshot_entries is not None:
            cluster["snapshot_entries"] = snapshot_entries
        doc: dict[str, Any] = {"cluster": cluster, "nodes": rows}
        cfg = write_config(doc, self.config_path)
        if not self.secure:
            return cfg
        cfg, key = secure_copy(cfg, self.config_path, self.dir / "keys")
        pair = load_secret(key)
        self.client_key, self._curve = key, (pair.public, pair.secret)
        return cfg

    def _copy_config(self, config: ClusterConfig | str | Path) -> ClusterConfig:
        # The data always lives in our directory: a run never touches (or trusts) another's logs.
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        return write_config(dataclasses.replace(cfg, data_dir=(self.dir / "data").resolve()), self.config_path)

    @property
    def hosts(self) -> dict[int, str]:
        """Each node's advertised host."""
        return {n.id: n.host for n in self.cfg.nodes}

    # ---------------------------------------------------------------- processes

    def rpc(self, node_id: int) -> str:
        return self.cfg.node(node_id).rpc

    def log_path(self, node_id: int) -> Path:
        return self.dir / f"node-{node_id}.log"

    def wal_path(self, node_id: int) -> Path:
        return self.cfg.node_data_dir(node_id) / "wal"

    def start(self, node_id: int | None = None, mode: str | None = None) -> None:
        """Start one node (or every node not running). A fresh data directory starts with --init
        the first time this cluster starts that node (a founding member), with --join after
        that (its disk was wiped: an observer until replaced); `mode` overrides ("init", "join",
        or "" for no flag at all)."""
        for i in (self.ids if node_id is None else (node_id,)):
            if self.running(i):
                continue
            self.reap()
            cmd = [sys.executable, "-m", "zrep.node", "--config", str(self.config_path), "--id", str(i)]
            flag = mode if mode is not None else self._start_mode(i)
            if flag:
                cmd.append(f"--{flag}")
            for bug in self.bugs[i]:
                cmd += ["--unsafe-bug", bug]
            with open(self.log_path(i), "ab") as out:
                out.write(f"{START_MARK}{i} ===\n".encode())
                out.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                p = spawn(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=PACKAGE_ROOT, env=env)
            self.procs[i] = p
            life = Life(i, p.pid, time.monotonic())
            self.lives.append(life)
            self._life[i] = life
            self.paused.discard(i)

    def _start_mode(self, node_id: int) -> str | None:
        if not is_fresh(self.cfg.node_data_dir(node_id)):
            return None  # it has started before: it has an identity (or is upgraded in place)
        return "join" if any(life.node == node_id for life in self.lives) else "init"

    def running(self, node_id: int) -> bool:
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def live(self) -> list[int]:
        return [i for i in self.ids if self.running(i)]

    def reap(self) -> list[Life]:
        """Record the exit of every node process that ended since the last call; those lives."""
        ended = []
        for i, p in self.procs.items():
            life = self._life[i]
            if life.returncode is None and p.poll() is not None:
                life.returncode, life.ended = p.returncode, time.monotonic()
                ended.append(life)
                self.paused.discard(i)
        return ended

    def expect_removal(self, node_id: int) -> None:
        """Node `node_id` is being removed from the configuration: its exit with NODE_REMOVED is ours."""
        life = self._life.get(node_id)
        if life is not None:
            life.removing = True

    def unexpected_exits(self) -> list[Life]:
        self.reap()
        return [life for life in self.lives if life.unexpected]

    def _signal(self, node_id: int, sig: int) -> None:
        p = self.procs.get(node_id)
        if p is None or p.poll() is not None:
            return
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self._life[node_id].signal = sig
        signal_group(p, sig)

    def signal_nodes(self, nodes: Iterable[int], sig: int) -> None:
        """Send `sig` to each node's process group without waiting (kill several at one instant)."""
        for i in nodes:
            self._signal(i, sig)

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
        code = p.wait(timeout)
        self.reap()
        return code

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
        code = self.procs[node_id].wait(timeout)
        self.reap()
        return code

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
                self._life[i].signal = signal.SIGKILL
        kill_all(self.procs.values())
        self.reap()
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

    def life_log(self, life: Life) -> str:
        """What the node printed in that one life."""
        lives = [x for x in self.lives if x.node == life.node]
        parts = self.node_log(life.node).split(f"{START_MARK}{life.node} ===\n")
        k = next(i for i, x in enumerate(lives) if x is life) + 1  # parts[0]: before the first start
        return parts[k] if k < len(parts) else ""

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for i in self.ids:
            tail = self.node_log(i).splitlines()[-lines:]
            out.append(f"----- node {i} (last {len(tail)} lines) -----\n" + "\n".join(tail))
        return "\n".join(out)

    # ---------------------------------------------------------------- the wire

    def reload_config(self) -> None:
        """Read the cluster file again (after a test or tool edited it): the wire helpers reconnect
        with what it now says (a node's new key, say)."""
        self.cfg = load_config(self.config_path)
        for node_id in list(self._socks):
            self._drop_socket(node_id)

    def _socket(self, node_id: int) -> zmq.Socket:
        s = self._socks.get(node_id)
        if s is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if self._curve is not None:
                curve_client(s, *self._curve, self.cfg.security.node_keys[node_id][0])
            rpc = self.rpc(node_id)
            s.connect(source_endpoint(self.client_host, rpc) if self.client_host else rpc)
            self._socks[node_id] = s
        return s

    def _drop_socket(self, node_id: int) -> None:
        s = self._socks.pop(node_id, None)
        if s is not None:
            s.close(linger=0)

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
                self._drop_socket(node_id)  # nothing stale may answer a later request
                raise ClusterError(f"node {node_id}: no reply to {op} within {timeout}s")
            reply = decode(s.recv())
            if isinstance(reply, ClientReply) and reply.req_id == req_id:
                return reply

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

    def leader(self, nodes: Iterable[int] | None = None, timeout: float = 1.0) -> int | None:
        """The leader a majority of the cluster agrees on right now, else None."""
        st = self.statuses(nodes, timeout)
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
        """(digest, applied index of the store) of every given node that answers."""
        return {i: (s["digest"], s["store_applied"]) for i, s in self.statuses(nodes).items()}

    def wait_converged(self, timeout: float = 15.0, nodes: Iterable[int] | None = None,
                       min_applied: int = 0) -> str:
        """Wait until the given (default: all) nodes applied the same log; the digest.

        Needs a quiet cluster: the nodes must report one (digest, applied index) at
        the same moment. With a writer running use `wait_caught_up`, which judges at
        one fixed index instead. Nodes seen at one applied index with different
        digests raise DivergedError at once."""
        want = list(nodes) if nodes is not None else list(self.ids)
        states = _States()

        def check() -> str | None:
            d = states.add(self.digests(want))
            if len(d) != len(want) or len(set(d.values())) != 1:
                return None
            digest, applied = next(iter(d.values()))
            return digest if applied >= min_applied else None

        try:
            return wait_until(f"nodes {want} to converge", check, timeout, interval=0.05)
        except DivergedError:
            raise
        except ClusterError:
            raise ClusterError(f"timed out after {timeout:.1f}s waiting for nodes {want} to converge "
                               f"(last applied index and digest: {states.describe()})") from None

    def wait_caught_up(self, timeout: float = 15.0, nodes: Iterable[int] | None = None) -> int:
        """Wait until the given (default: all) nodes applied the commit index the leader
        reported when the wait began; that index. One fixed target, so a writer that keeps
        writing cannot move it (`wait_converged` needs the nodes to line up by luck).
        Nodes seen at one applied index with different digests raise DivergedError."""
        want = list(nodes) if nodes is not None else list(self.ids)
        deadline = time.monotonic() + timeout
        leader = self.wait_for_leader(timeout)
        reply = self.try_request(leader, "status", {}, max(0.1, deadline - time.monotonic()))
        if reply is None or not reply.ok:
            raise ClusterError(f"leader {leader} did not report its commit index ({reply!r})")
        target = int(reply.result["commit"])
        states = _States()

        def check() -> int | None:
            d = states.add(self.digests(want))
            done = len(d) == len(want) and all(applied >= target for _, applied in d.values())
            return target if done else None

        try:
            return wait_until(f"nodes {want} to apply index {target}", check,
                              max(0.0, deadline - time.monotonic()), interval=0.02)
        except DivergedError:
            raise
        except ClusterError:
            raise ClusterError(f"timed out after {timeout:.1f}s waiting for nodes {want} to apply the leader's "
                               f"commit index {target} (last applied index and digest: {states.describe()})") from None


class DivergedError(ClusterError):
    """Two nodes applied the same index and hold different stores."""


class _States:
    """(digest, applied index) per node as polled; the digest seen at each applied index.
    A store's digest at index i is fixed by the log up to i: two digests at one index
    mean two histories."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[str, int]] = {}
        self._at: dict[int, tuple[int, str]] = {}  # applied index -> (first node seen there, its digest)

    def add(self, polled: Mapping[int, tuple[str, int]]) -> Mapping[int, tuple[str, int]]:
        for node, (digest, applied) in polled.items():
            first, want = self._at.setdefault(applied, (node, digest))
            if want != digest:
                raise DivergedError(f"nodes {first} and {node} both applied index {applied} with different "
                                    f"digests ({want[:16]}, {digest[:16]}): their logs diverged")
        self.last.update(polled)
        return polled

    def describe(self) -> str:
        return ", ".join(f"node {i}: {a} {d[:12]}" for i, (d, a) in sorted(self.last.items())) or "no node answered"
