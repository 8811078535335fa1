"""`zrep cluster up`: every node of a cluster file as a child process of one runner.

Job: start each node as `python -m zrep node --id N --config PATH` (with
`--init` when every data directory is fresh: a brand-new cluster; `--join`
for a fresh one among used ones: a lost disk), each in
its own process group (so a terminal's Ctrl-C reaches only this runner, which
then stops the nodes itself); copy every line a node prints with its id in
front; print the status table once the cluster has a leader; say so when a
node dies; on SIGINT/SIGTERM stop them all: SIGTERM, then SIGKILL after
GRACE_S, then name any node still answering on the cluster's ports (one this
runner did not start, e.g. restarted by hand) with its pid.

Invariants
- It owns its nodes: if any node of the file already answers, or a port it
  would bind is taken, it starts nothing and exits UP_PORTS_TAKEN, naming
  the pids (a half-started cluster mixed with an old one is never shown as
  healthy). It stops only the processes it started.
- Every child started is stopped before `run_cluster` returns, whatever
  happened (the stop runs in a `finally`).
- Lines are printed whole, one writer at a time (a lock), and the status
  table is printed in one piece.
- The signal handlers only set an Event; all work happens in the main loop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from zrep.client import Client, NodeStatus
from zrep.config import ClusterConfig, parse_endpoint
from zrep.exit_codes import UP_NODE_FAILED, UP_OK, UP_PORTS_TAKEN
from zrep.local.datadir import is_fresh
from zrep.local.processes import spawn, stop

GRACE_S = 5.0  # SIGTERM, then this long for a node to stop, then SIGKILL
STATUS_EVERY_S = 0.25  # how often to look for a leader and for dead children
STATUS_WAIT_S = 0.5  # a node silent this long counts as down for the table
LEADER_WARN_S = 30.0  # say so once if no leader appears in this time

ShowStatus = Callable[[list[NodeStatus]], None]


class _Output:
    """Whole lines to one stream, one writer at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.lock = threading.Lock()

    def say(self, line: str) -> None:
        with self.lock:
            self._write(line)

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


@dataclass
class _Child:
    id: int
    proc: subprocess.Popen[bytes]
    pump: threading.Thread
    expected_exit: bool = False  # set once we stop it: its exit is then no surprise
    reported: bool = False


@dataclass
class _State:
    children: dict[int, _Child] = field(default_factory=dict)
    unexpected: set[int] = field(default_factory=set)


def node_command(config_path: str, node_id: int, mode: str | None = None) -> list[str]:
    return [sys.executable, "-m", "zrep", "node", "--id", str(node_id), "--config", config_path] + (
        [f"--{mode}"] if mode else [])


def start_modes(cfg: ClusterConfig) -> dict[int, str | None]:
    """--init for every node of a brand-new cluster (every data directory fresh); otherwise --join
    for a fresh one (a lost disk: it waits as an observer for `zrep admin replace`), nothing for the rest."""
    fresh = {n.id: is_fresh(cfg.node_data_dir(n.id)) for n in cfg.nodes}
    if all(fresh.values()):
        return {i: "init" for i in fresh}
    return {i: "join" if new else None for i, new in fresh.items()}


def _start(config_path: str, node_id: int, out: _Output, width: int, mode: str | None = None) -> _Child:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines arrive as they are written
    proc = spawn(node_command(config_path, node_id, mode), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, env=env)
    prefix = f"[node {node_id:>{width}}] "
    pump = threading.Thread(target=_pump, args=(proc, prefix, out), name=f"node-{node_id}-output", daemon=True)
    pump.start()
    return _Child(node_id, proc, pump)


def _pump(proc: subprocess.Popen[bytes], prefix: str, out: _Output) -> None:
    if proc.stdout is None:  # never: stdout=PIPE; keeps the type checker honest
        return
    for raw in iter(proc.stdout.readline, b""):
        out.say(prefix + raw.decode("utf-8", errors="replace").rstrip("\n"))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"with exit code {code}"


def _report_deaths(state: _State, config_path: str, out: _Output) -> None:
    for child in state.children.values():
        code = child.proc.poll()
        if code is None or child.reported or child.expected_exit:
            continue
        child.reported = True
        state.unexpected.add(child.id)
        out.say(f"zrep cluster up: node {child.id} exited unexpectedly ({_describe_exit(code)}); the others go on. "
                f"Restart it with: zrep node --id {child.id} --config {config_path} "
                "(this runner will not stop it: Ctrl-C here names it)")


def _has_leader(rows: list[NodeStatus]) -> bool:
    """A majority of the members answer and agree on one leader that calls itself leader."""
    up = [r for r in rows if r.up]
    leaders = {r.id for r in up if r.role == "leader"}
    return any(sum(1 for r in up if r.leader == lead) > len(rows) // 2 for lead in leaders)


def _stop_all(state: _State, out: _Output) -> bool:
    """SIGTERM every live child, SIGKILL those still alive after GRACE_S; True if all stopped cleanly."""
    live = [c for c in state.children.values() if c.proc.poll() is None]
    for c in live:
        c.expected_exit = True
    by_pid = {c.proc.pid: c for c in live}

    def killing(proc: subprocess.Popen[bytes]) -> None:
        out.say(f"zrep cluster up: node {by_pid[proc.pid].id} did not stop within {GRACE_S:g} s: killing it")

    codes = stop([c.proc for c in live], signal.SIGTERM, GRACE_S, on_kill=killing)
    clean = all(code == 0 for code in codes.values())
    for c in state.children.values():
        c.pump.join(2)  # the pipe closes with the process: the rest of its lines are printed
    return clean


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _answering(cfg: ClusterConfig, key: str | None = None) -> list[NodeStatus]:
    """The nodes of this cluster file that answer now (whoever started them)."""
    with Client(cfg, key=key) as client:
        return [r for r in client.status(timeout_s=STATUS_WAIT_S) if r.up]


def _named(rows: list[NodeStatus]) -> tuple[str, str]:
    """('node 1 (pid 123), ...', '123 ...') for the nodes that answered."""
    pids = [r.raw.get("pid") for r in rows]
    names = ", ".join(f"node {r.id} (pid {pid if pid else '?'})" for r, pid in zip(rows, pids))
    return names, " ".join(str(p) for p in pids if p)


def _port_taken(endpoint: str) -> bool:
    """True if a listening socket holds this bind address (the probe binds as ZeroMQ does)."""
    try:
        host, port = parse_endpoint(endpoint)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("" if host == "*" else host, port))
    except OSError as e:
        return e.errno == 98  # EADDRINUSE; anything else is the node's own error to report
    except ValueError:
        return False
    return False


def ports_taken(cfg: ClusterConfig, key: str | None = None) -> str:
    """Why this runner must not start (a cluster or another program holds its ports), or ''."""
    running = _answering(cfg, key)
    if running:
        names, pids = _named(running)
        return (f"a cluster is already running on these ports: {names}; stop it first"
                + (f" (kill {pids})" if pids else "") + ", or use another cluster file (--config)")
    busy = [f"{address} (node {n.id})" for n in cfg.nodes for address in (n.bind_rpc, n.bind_pub)
            if _port_taken(address)]
    if busy:
        return (f"another program holds {', '.join(busy)}; free the port (ss -ltnp shows who holds it), "
                "or use another cluster file (--config)")
    return ""


def run_cluster(cfg: ClusterConfig, *, show_status: ShowStatus, stream: IO[str] | None = None,
                stop: threading.Event | None = None, key: str | None = None) -> int:
    """Run the cluster until SIGINT/SIGTERM (or `stop` is set): UP_OK if every node stopped cleanly,
    UP_NODE_FAILED if one died or had to be killed, UP_PORTS_TAKEN if it could not start."""
    if cfg.path is None:
        raise ValueError("run_cluster needs a config loaded from a file: the nodes read that file")
    config_path = str(cfg.path)
    out = _Output(stream if stream is not None else sys.stdout)
    why_not = ports_taken(cfg, key)
    if why_not:
        out.say(f"zrep cluster up: not starting: {why_not}")
        return UP_PORTS_TAKEN
    stop = stop if stop is not None else threading.Event()
    state = _State()
    width = len(str(max(cfg.node_ids)))
    with _stop_on_signals(stop):
        try:
            modes = start_modes(cfg)
            for n in cfg.nodes:
                if modes[n.id] == "join":
                    out.say(f"zrep cluster up: node {n.id}'s data directory is fresh while the others' are not: "
                            f"it starts with --join and waits as an observer; run `zrep admin replace {n.id}`")
                state.children[n.id] = _start(config_path, n.id, out, width, modes[n.id])
            _watch(cfg, state, out, show_status, stop, key)
        finally:
            clean = _stop_all(state, out)
    out.say("zrep cluster up: all nodes stopped" + ("" if clean else " (not all cleanly)"))
    strangers = _answering(cfg, key)
    if strangers:
        names, pids = _named(strangers)
        out.say(f"zrep cluster up: still running, not started by this runner: {names}; stop "
                + (f"it with: kill {pids}" if pids else "it yourself"))
    return UP_OK if clean and not state.unexpected else UP_NODE_FAILED


def _watch(cfg: ClusterConfig, state: _State, out: _Output, show_status: ShowStatus, stop: threading.Event,
           key: str | None = None) -> None:
    """Until `stop`: report dead children; print the status table once, when a leader is known."""
    started = time.monotonic()
    shown = warned = False
    with Client(cfg, key=key) as client:
        while not stop.wait(STATUS_EVERY_S):
            _report_deaths(state, str(cfg.path), out)
            if all(c.proc.poll() is not None for c in state.children.values()):
                out.say("zrep cluster up: every node has exited; stopping")
                return
            if shown:
                continue
            rows = client.status(timeout_s=STATUS_WAIT_S)
            if _has_leader(rows):
                with out.lock:  # the table in one piece, no node line inside it
                    show_status(rows)
                shown = True
            elif not warned and time.monotonic() - started > LEADER_WARN_S:
                out.say(f"zrep cluster up: no leader after {LEADER_WARN_S:g} s; check the node lines above")
                warned = True
