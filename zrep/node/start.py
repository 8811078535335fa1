"""Starting and stopping a node: `run_node`, its exit codes, and the start order.

Job: load and check the configuration, bind the sockets, replay the WAL, load
the snapshot, rebuild the store (`rebuild_store`), then hand over to the loop
(zrep.node.loop.Node); map every way of stopping to one exit code
(zrep.exit_codes, one table for the node, the CLI help and the README).

Invariants:
  * Start order: bind the sockets, replay the WAL (its fsyncs and checks), load
    the snapshot, apply the committed entries after it (rebuild_store), then
    loop. Peers and clients can connect from the first step; what they send
    waits in the sockets until the loop reads it.
  * A failed fsync (StorageError) or a broken invariant (InvariantError) stops
    the node at once with one line and a distinct exit code; a failed fsync is
    never retried. A corrupt log refuses to start (EXIT_CORRUPT_LOG).
  * A compacted WAL needs its snapshot: without a usable one the node refuses
    to start (EXIT_NO_SNAPSHOT) and says to wipe its data directory.
  * Signals only set a flag (`_StopFlag`) the loop checks between turns, so a
    stop never lands in the middle of a persist.
  * A node with a `metrics` address serves it (zrep.node.metrics) from the
    moment its loop can start; one it cannot bind stops it (EXIT_NETWORK).
    A node without one runs no HTTP server at all.
  * With log_format "json" every line, the start-up errors included, is one
    JSON object (time, node, level, event, message, fields).
  * Identity before the WAL (zrep.storage.identity): a fresh data directory
    gets its incarnation and start mode (--init or --join) before anything
    else is written; without either flag it refuses to start
    (EXIT_NO_MODE). A directory that has an identity ignores the flags. A
    directory written before identities (a WAL, no identity) is upgraded in
    place as an init member: its seeds' provisional configuration needs
    every seed, so the cluster forms its first configuration once every
    node runs this version.
  * The base configuration handed to the core (the one as of the log's first
    index - 1) is the snapshot's if it has one, else the provisional seed list
    (init) or the empty configuration (join: an observer until added). Never
    the TOML's list once a configuration exists: the TOML nodes are seeds.
  * A node whose committed configuration no longer names it stops with
    EXIT_REMOVED and keeps its data.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from zrep.config import ClusterConfig, load_config
from zrep.core.membership import Config, Member
from zrep.core.replica import BUGS
from zrep.errors import ConfigError, CorruptLogError, InvariantError, StorageError
from zrep.exit_codes import (
    NODE_CORRUPT_LOG,
    NODE_INVARIANT,
    NODE_NETWORK,
    NODE_NO_MODE,
    NODE_NO_SNAPSHOT,
    NODE_OK,
    NODE_REMOVED,
    NODE_STORAGE,
    NODE_USAGE,
)
from zrep.node.journal import stamp
from zrep.node.loop import Log, Node
from zrep.node.metrics import MetricsServer
from zrep.node.stats import MeteredWal
from zrep.node.transport import Transport
from zrep.service.service import snapshot_config
from zrep.storage import bugs as storage_bugs
from zrep.storage.identity import Identity, create_identity, is_fresh, read_identity
from zrep.storage.snapshot_files import (
    Snapshot,
    fits_log,
    load_snapshot,
    remove_stale_tmp,
)
from zrep.storage.wal import Replay, Wal
from zrep.store.store import Store, StoreLimits

# The node's exit codes: one table for the node, the CLI help and the README (zrep.exit_codes).
EXIT_OK = NODE_OK
EXIT_USAGE = NODE_USAGE
EXIT_CORRUPT_LOG = NODE_CORRUPT_LOG
EXIT_STORAGE = NODE_STORAGE
EXIT_INVARIANT = NODE_INVARIANT
EXIT_NETWORK = NODE_NETWORK
EXIT_NO_SNAPSHOT = NODE_NO_SNAPSHOT
EXIT_NO_MODE = NODE_NO_MODE
EXIT_REMOVED = NODE_REMOVED

WAL_NAME = "wal"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _json_lines(log: Log, node_id: int) -> Log:
    """`log` for start-up and exit lines in the JSON log format: one object per line."""
    def write(line: str) -> None:
        t = time.time()
        log(json.dumps({"time": stamp(t), "ts": round(t, 3), "node": node_id, "level": "error", "event": "exit",
                        "message": line, "fields": {}}, ensure_ascii=False))
    return write


def rebuild_store(store: Store, replay: Replay, commit: int) -> None:
    """Apply the replayed entries up to `commit` (and the log's end) that `store` (empty, or
    a snapshot's) lacks: what the loop's first turn would apply, in the same order, but
    before the loop starts, where nobody waits for an answer yet. Applied as one run
    (Store.apply_run), without a committed Entry sliced out of the log and driven
    through the Service for each, and without a first turn so long that the election
    timer runs out while the leader's appends wait."""
    first, applied = replay.first_index, store.applied_index
    if applied < first - 1:
        raise InvariantError(f"the store applied {applied}, the log starts at {first}: entries are missing")
    top = min(commit, first - 1 + len(replay.entries))
    if top > applied:
        store.apply_run(replay.entries[applied + 1 - first : top + 1 - first])


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks each turn (never mid-persist); SIGHUP asks
    the loop to reload the cluster file's keys and grants between turns."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.stop

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread; the caller stops us otherwise
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle_hup)

    def _handle(self, signum: int, frame: Any) -> None:
        self.stop = True

    def _handle_hup(self, signum: int, frame: Any) -> None:
        self.reload = True

    def take_reload(self) -> bool:
        asked, self.reload = self.reload, False
        return asked

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _check_bugs(bugs: Iterable[str]) -> frozenset[str]:
    bugs = frozenset(bugs)
    unknown = bugs - BUGS - storage_bugs.STORAGE_BUGS
    if unknown:
        raise ConfigError(f"unknown planted bug(s) {sorted(unknown)}; known: "
                          f"{', '.join(sorted(BUGS | storage_bugs.STORAGE_BUGS))}")
    return storage_bugs.plant(bugs)  # the storage's planted now; the core's returned


def run_node(config: str | os.PathLike[str] | ClusterConfig, node_id: int, *,
             bugs: Iterable[str] = frozenset(), log: Log = _stderr,
             stopping: Callable[[], bool] | None = None, log_format: str = "text",
             mode: str | None = None) -> int:
    """Run node `node_id` of the cluster until SIGTERM/SIGINT (or `stopping()`); the exit code.

    `mode` ("init", "join" or None) is used only if the data directory is fresh.
    `bugs` plants test-only safety bugs in the core (zrep.core.replica.BUGS);
    never use it outside tests. `log` receives one finished line at a time,
    text or (log_format "json") one JSON object.
    """
    prefix = f"zrep node {node_id}"
    journal_log = log
    if log_format == "json":
        log = _json_lines(log, node_id)
    try:
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        cfg.node(node_id)
        bugs = _check_bugs(bugs)
    except ConfigError as e:
        log(f"{prefix}: {e}")
        return EXIT_USAGE
    # Bound before the log is replayed: a leader's connection to this node, retried at up to
    # RECONNECT_IVL_MAX_MS while the node was down, comes up while the store is rebuilt (its
    # first messages wait in the sockets, as during any long turn) instead of after it.
    try:
        transport = Transport(cfg, node_id)
    except zmq.ZMQError as e:
        me = cfg.node(node_id)
        log(f"{prefix}: cannot open sockets (bind {me.bind_rpc} and {me.bind_pub}, connect to peers): {e}; "
            "is another process using the port, or is the address not local?")
        return EXIT_NETWORK
    try:
        return _open(cfg, node_id, transport, bugs, log, stopping, journal_log=journal_log, log_format=log_format,
                     mode=mode)
    finally:
        transport.close()


def seed_config(cfg: ClusterConfig) -> Config:
    """The provisional configuration of the TOML's nodes: every seed a voter, any incarnation,
    all needed; each with its addresses (and public keys, if the cluster file has them)."""
    keys = cfg.security.node_keys
    return Config(0, tuple(Member(n.id, rpc=n.rpc, pub=n.pub, keys=tuple(k.decode() for k in keys.get(n.id, ())))
                           for n in cfg.nodes), provisional=True)


def base_config(cfg: ClusterConfig, identity: Identity, snapshot: Snapshot | None) -> Config:
    """The configuration as of the log's first index - 1: the snapshot's, else by the start mode."""
    if snapshot is not None:
        held = snapshot_config(snapshot.store)
        if held is not None:
            return held
    return seed_config(cfg) if identity.mode == "init" else Config(0, ())


def _identity(data_dir: Path, mode: str | None, node_id: int, log: Log) -> Identity | None:
    """The directory's identity, created on first start (or upgrade); None: refuse (no mode)."""
    prefix = f"zrep node {node_id}"
    ident = read_identity(data_dir)
    if ident is not None:
        return ident
    if not is_fresh(data_dir):
        # Written by the code before identities: its promises are real, so it stays a founding member.
        ident = create_identity(data_dir, "init")
        log(f"{prefix}: upgraded {data_dir} in place (incarnation {ident.incarnation:x}, founding member); "
            "the cluster forms its first configuration once every node runs this version")
        return ident
    if mode is None:
        log(f"{prefix}: {data_dir} is a fresh data directory: start with --init if this node founds a new "
            "cluster with the nodes of the cluster file, or --join to wait as an observer until "
            f"`zrep admin add {node_id}` (or `replace {node_id}`) adds it")
        return None
    return create_identity(data_dir, mode)


def _open(cfg: ClusterConfig, node_id: int, transport: Transport, bugs: frozenset[str], log: Log,
          stopping: Callable[[], bool] | None, *, journal_log: Log, log_format: str, mode: str | None = None) -> int:
    """Read (or create) the identity, replay the WAL, load the snapshot, then serve; the exit code."""
    prefix = f"zrep node {node_id}"
    data_dir = Path(cfg.node_data_dir(node_id))
    told: list[str] = []  # the upgrade line goes to the node's journal once it runs; a refusal to `log` now
    try:
        identity = _identity(data_dir, mode, node_id, told.append)
    except StorageError as e:
        log(f"{prefix}: {e}")
        return EXIT_STORAGE
    if identity is None:
        for line in told:
            log(line)
        return EXIT_NO_MODE
    try:
        wal, replay = MeteredWal.open(data_dir / WAL_NAME)
    except CorruptLogError as e:
        log(f"{prefix}: {e}")
        return EXIT_CORRUPT_LOG
    except StorageError as e:
        log(f"{prefix}: {e}")
        return EXIT_STORAGE
    try:
        remove_stale_tmp(data_dir)
        snapshot, why = load_snapshot(data_dir, replay, StoreLimits(max_body_bytes=cfg.max_body_bytes))
        if replay.first_index > 1 and snapshot is None:
            log(f"{prefix}: cannot start: the WAL {wal.path} is compacted (it starts at index "
                f"{replay.first_index}) and {why}, so the store cannot be rebuilt. Do not edit the files: "
                f"once the other nodes are up with a leader (zrep client status), wipe its data directory "
                f"{data_dir} and start it again with --join; it re-syncs everything from the leader as an "
                f"observer, until `zrep admin replace {node_id}` makes it a voter again.")
            return EXIT_NO_SNAPSHOT
        warnings = [why] if why else []
        if snapshot is not None and replay.first_index > 1 and not fits_log(snapshot, replay):
            replay = _drop_log_for(snapshot, wal, replay)
            warnings.append(f"the snapshot of index {snapshot.index} is past or beside the compacted log "
                            "(an install that stopped before its WAL rewrite); the log was dropped for it")
        return _serve(cfg, node_id, wal, replay, transport, bugs, log, stopping, snapshot, warnings,
                      journal_log=journal_log, log_format=log_format, identity=identity, told=told)
    except StorageError as e:
        log(f"{prefix}: {e}")
        return EXIT_STORAGE
    finally:
        wal.close()


def _drop_log_for(snapshot: Snapshot, wal: Wal, replay: Replay) -> Replay:
    """Raft's install rule at start: no entry that disagrees with a (committed) snapshot is committed."""
    wal.rewrite(snapshot.index + 1, snapshot.epoch, keep=False)
    return replace(replay, entries=[], first_index=snapshot.index + 1, prev_epoch=snapshot.epoch,
                   commit=snapshot.index)


def _serve(cfg: ClusterConfig, node_id: int, wal: Wal, replay: Replay, transport: Transport, bugs: frozenset[str],
           log: Log, stopping: Callable[[], bool] | None, snapshot: Snapshot | None = None,
           warnings: list[str] | None = None, *, journal_log: Log, log_format: str,
           identity: Identity, told: list[str]) -> int:
    prefix = f"zrep node {node_id}"
    flag = _StopFlag()
    flag.install()
    node: Node | None = None
    metrics: MetricsServer | None = None
    try:
        store = snapshot.store if snapshot else Store(max_body_bytes=cfg.max_body_bytes)
        # A snapshot holds only committed entries; the WAL's commit hint may lag it.
        commit = max(replay.commit, snapshot.index) if snapshot else replay.commit
        rebuild_store(store, replay, commit)
        node = Node(cfg, node_id, wal, replay, transport, store, commit, bugs=bugs, log=journal_log,
                    snapshot=snapshot, log_format=log_format, base=base_config(cfg, identity, snapshot),
                    incarnation=identity.incarnation)
        bind_metrics = cfg.node(node_id).bind_metrics
        if bind_metrics is not None:
            try:
                metrics = MetricsServer(node, bind_metrics)
            except OSError as e:
                log(f"{prefix}: cannot serve metrics on {bind_metrics}: {e}; is another process using the port, "
                    "or is the address not local? (remove metrics from the node's entry to run without)")
                return EXIT_NETWORK
        for line in told:
            node.say(line.removeprefix(f"{prefix}: "))
        for line in replay.warnings + (warnings or []) + list(cfg.warnings):
            node.say(f"warning: {line}")
        if bugs:
            node.say(f"UNSAFE: planted bugs {sorted(bugs)} are on; this node may lose acknowledged writes")
        node.journal.event("started", f"started: rpc {node.status()['rpc']}, incarnation {identity.incarnation:x} "
                           f"({identity.mode}), epoch {replay.hard_state.epoch}, "
                           f"log {replay.first_index}..{node.replica.log.last_index}, commit {node.replica.commit}"
                           + (f", store from the snapshot of index {snapshot.index}" if snapshot else "")
                           + (f", metrics {cfg.node(node_id).metrics}" if metrics is not None else ""))
        if cfg.insecure_warning:
            node.say(f"warning: {cfg.insecure_warning}")
        node.reload_asked = flag.take_reload
        node.run((lambda: flag.stop or stopping()) if stopping is not None else flag)
        node.compaction.on_stop()
        if node.removed:
            node.journal.event("removed", f"stopping: removed from the cluster (its committed configuration "
                               f"no longer names node {node_id} incarnation {identity.incarnation:x}); the data is "
                               f"kept in {cfg.node_data_dir(node_id)}", level="warning")
            return EXIT_REMOVED
        node.journal.event("stopped", "stopped")
        return EXIT_OK
    except StorageError as e:
        log(f"{prefix}: stopping: {e}")
        return EXIT_STORAGE
    except InvariantError as e:
        log(f"{prefix}: stopping: invariant broken (a bug, please report): {e}")
        return EXIT_INVARIANT
    finally:
        if metrics is not None:
            metrics.close()
        if node is not None:
            node.close()
        flag.restore()
