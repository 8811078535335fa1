"""The whole benchmark: `zrep bench [--quick] [--json] [--only PHASE] ...`.

Starts a local cluster (LocalCluster: 3 nodes on free ports with its default
timeouts, or a copy of `--config FILE`) in a temporary directory, fsync on,
and measures with 100-byte bodies (the load workers batch their requests on
the wire, ClientBatch frames, unless `--no-batch`; the result's `wire` says
which):
- sends: acknowledged sends/s and p50/p99/max latency at 1, 64 and 256
  requests in flight, from separate worker processes (zrep.bench.workers);
- reads: linearizable reads/s at 64 in flight at the leader, stale reads/s
  at 64 in flight at the followers (any node serves them);
- catchup: SIGKILL a follower, write N messages, restart it: entries it had
  to catch up / seconds from its restart until it applied the leader's
  commit index of that moment (replaying its own log is part of that time);
- memory: top the store up to N messages, then each node's VmRSS;
- floor: first, before the cluster starts: zrep.bench.floor's round trip
  between two processes and raw fsync rate on the cluster's disk, and the
  1-in-flight send latency no node could beat on this machine; then
  zrep.bench.ceiling: bare leader and follower processes doing only the
  messages and fsyncs of a send, 1 in flight (the most sends/s any node
  could reach here at 1 in flight);
- failover: zrep.bench.failover, leader crash and leader pause (each on its own
  fresh default cluster), run last.

Every phase checks its error count: more than `max_error_fraction` of
non-OK answers stops the benchmark with one line saying so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zrep.bench.ceiling import SENDS as CEILING_SENDS
from zrep.bench.failover import run_failover_kinds
from zrep.bench.floor import run_floor_bench
from zrep.bench.membership import run_membership_bench
from zrep.bench.options import Options
from zrep.bench.report import (
    Progress,
    cpu_seconds,
    format_floor,
    git_commit,
    machine,
    rss_mb,
)
from zrep.bench.workers import BenchError, LevelResult, run_level
from zrep.local.cluster import ClusterError, LocalCluster, wait_until

SEND_LEVELS = (1, 64, 256)
CLUSTER_PHASES = ("sends", "reads", "catchup", "memory", "membership")  # share one cluster
READ_IN_FLIGHT = 64
BULK_IN_FLIGHT = 256  # catch-up and memory fill the store as fast as the cluster takes it
BODY_BYTES = 100
MAILBOX = "bench"
LEADER_WAIT_S = 30.0
BULK_MIN_PER_S = 500  # bulk writes may take count / this + BULK_SLACK_S, then stop where they are
BULK_SLACK_S = 60.0
CATCHUP_MIN_PER_S = 200  # a catching-up node may take entries / this + BULK_SLACK_S


def _check_errors(what: str, r: LevelResult, max_fraction: float) -> None:
    total = r.acked + r.failed
    if r.failed > max_fraction * max(total, 1):
        codes = ", ".join(f"{code}: {n:,}" for code, n in r.errors.items())
        raise BenchError(f"{what}: {r.failed:,} of {total:,} requests failed ({codes}), over the "
                         f"{max_fraction:.1%} allowed; the cluster was not healthy: rerun with --dir DIR "
                         "and read the node logs there")
    if r.acked == 0:
        raise BenchError(f"{what}: no request was answered OK; rerun with --dir DIR and read the node logs there")


def _cpu(pids: dict[int, int]) -> dict[int, float]:
    """CPU seconds used so far by each node process still running (a dead one is left out)."""
    out = {}
    for i, pid in pids.items():
        with contextlib.suppress(OSError):
            out[i] = cpu_seconds(pid)
    return out


class _Bench:
    """The phases that run on one cluster."""

    def __init__(self, cluster: LocalCluster, opts: Options, progress: Progress) -> None:
        self.cluster, self.opts, self.progress = cluster, opts, progress

    def leader_rpc(self) -> tuple[int, str]:
        leader = self.cluster.wait_for_leader(LEADER_WAIT_S)
        return leader, self.cluster.rpc(leader)

    def level(self, what: str, *, op: str = "send", in_flight: int, count: int, seconds: float, warmup: int,
              latencies: bool = True, followers: bool = False) -> LevelResult:
        leader, rpc = self.leader_rpc()
        targets: str | list[str] = rpc
        if followers:  # stale reads are served by any node: load the followers, not the leader
            targets = [self.cluster.rpc(i) for i in self.cluster.ids if i != leader] or rpc
        self.progress.step(f"{what}: starting")

        def show(acked: int, errors: int, elapsed: float) -> None:
            rate = acked / elapsed if elapsed > 0 else 0.0
            self.progress.update(f"{what}: {acked:,} acked, {rate:,.0f}/s" + (f", {errors:,} errors" if errors else ""))

        pids = {i: p.pid for i, p in self.cluster.procs.items()}
        cpu_at_go: dict[int, float] = {}
        c = self.cluster
        curve = None
        if c.client_key is not None:  # a CURVE cluster: the workers use its client key and each node's key
            curve = (str(c.client_key), {c.rpc(i): c.cfg.security.node_keys[i][0] for i in c.ids})
        r = run_level(targets, op=op, in_flight=in_flight, workers=self.opts.workers, count=count, seconds=seconds,
                      warmup=warmup, latencies=latencies, mailbox=MAILBOX, body_bytes=BODY_BYTES,
                      batch=self.opts.batch, on_progress=show, on_go=lambda: cpu_at_go.update(_cpu(pids)),
                      curve=curve)
        _check_errors(what, r, self.opts.max_error_fraction)
        if r.acked and len(cpu_at_go) == len(pids):
            used = {i: s - cpu_at_go[i] for i, s in _cpu(pids).items() if i in cpu_at_go}
            r = dataclasses.replace(r, cpu_us_per_req={
                "leader": leader, "nodes": {str(i): round(s / r.acked * 1e6, 1) for i, s in sorted(used.items())},
                "clients": round(r.client_cpu_s / r.acked * 1e6, 1)})
        self.progress.step(f"{what}: {r.acked:,} acked in {r.seconds:.1f} s, {r.per_s:,.0f}/s"
                           + (f", p50 {r.p50_ms} ms, p99 {r.p99_ms} ms" if r.p50_ms is not None else ""))
        return r

    def bulk(self, what: str, count: int) -> LevelResult:
        seconds = count / BULK_MIN_PER_S + BULK_SLACK_S
        return self.level(what, in_flight=BULK_IN_FLIGHT, count=count, seconds=seconds, warmup=0, latencies=False)

    def sends(self) -> dict[str, Any]:
        o = self.opts
        return {str(n): self.level(f"sends @{n} in flight", in_flight=n, count=o.count, seconds=o.seconds,
                                   warmup=o.warmup).to_json() for n in SEND_LEVELS}

    def reads(self) -> dict[str, Any]:
        o = self.opts
        out: dict[str, Any] = {"in_flight": READ_IN_FLIGHT}
        for kind, op, where in (("linearizable", "read", "the leader"), ("stale", "stale_read", "the followers")):
            out[kind] = self.level(f"{kind} reads @{READ_IN_FLIGHT} in flight at {where}", op=op,
                                   in_flight=READ_IN_FLIGHT, count=o.count, seconds=o.seconds, warmup=o.warmup,
                                   followers=(op == "stale_read")).to_json()
        return out

    def catchup(self) -> dict[str, Any]:
        c = self.cluster
        leader, _ = self.leader_rpc()
        node = next(i for i in c.ids if i != leader)
        before = c.status(node)
        had, had_applied = before["last_index"], before["store_applied"]
        c.kill(node, signal.SIGKILL)
        self.progress.step(f"catch-up: node {node} killed")
        written = self.bulk(f"catch-up: writing with node {node} down", self.opts.catchup_messages)
        target = c.status(self.leader_rpc()[0])["commit"]
        restarted = time.monotonic()
        c.start(node)
        entries = target - had
        self.progress.step(f"catch-up: node {node} restarted, {entries:,} entries behind")

        rebuilt: list[float] = []  # when its store again held what it held before the kill

        def caught_up() -> bool:
            reply = c.try_request(node, "status", {}, timeout=0.5)  # silent while it replays its log
            if reply is None or not reply.ok:
                return False
            applied = reply.result["store_applied"]
            if applied >= had_applied and not rebuilt:
                rebuilt.append(time.monotonic())
            return applied >= target

        wait_until(f"node {node} to apply index {target:,}", caught_up,
                   entries / CATCHUP_MIN_PER_S + BULK_SLACK_S, interval=0.01)
        done = time.monotonic()
        seconds = done - restarted
        # Split for the reader: starting and rebuilding its store from its own log
        # (from its snapshot, then the entries after it), then receiving and applying what it missed.
        rebuild_s = (rebuilt[0] if rebuilt else done) - restarted
        receive_s = max(done - restarted - rebuild_s, 1e-3)
        self.progress.step(f"catch-up: node {node} caught up in {seconds:.2f} s ({rebuild_s:.2f} s to start "
                           f"and rebuild its store from its own {had_applied:,} entries)")
        return {"node": node, "had": had, "entries": entries, "seconds": round(seconds, 3),
                "per_s": round(entries / seconds, 1), "written": written.acked,
                "rebuild_s": round(rebuild_s, 3), "after_rebuild_per_s": round((target - had_applied) / receive_s, 1)}

    def memory(self) -> dict[str, Any]:
        c = self.cluster
        leader, _ = self.leader_rpc()
        stored = self._stored(leader)
        if stored < self.opts.messages:
            self.bulk(f"memory: storing {self.opts.messages - stored:,} more messages", self.opts.messages - stored)
        stored = self._stored(self.leader_rpc()[0])
        c.wait_caught_up(BULK_SLACK_S)  # every node holds them all before we weigh it
        rss = {str(i): rss_mb(int(c.status(i)["pid"])) for i in c.ids}
        self.progress.step(f"memory: {stored:,} messages, RSS " + ", ".join(f"{mb:,.0f}" for mb in rss.values())
                           + " MiB")
        return {"messages": stored, "rss_mb": rss}

    def stored(self) -> int:
        """Messages the cluster holds now (the membership phase reports what it moved)."""
        return self._stored(self.leader_rpc()[0])

    def _stored(self, leader: int) -> int:
        reply = self.cluster.request(leader, "mailboxes", {"pattern": "*"}, timeout=10)
        if not reply.ok:
            raise BenchError(f"node {leader} refused to list mailboxes: {reply.code} {reply.message}; retry")
        return sum(row[1] for row in reply.result["mailboxes"])  # [name, count, bytes]


@contextlib.contextmanager
def _cluster_dir(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        if directory.exists() and any(directory.iterdir()):  # its old logs would be replayed and skew every figure
            raise BenchError(f"--dir {directory} is not empty; name a new or empty directory")
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="zrep-bench-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally` blocks kill every node and worker we started
    (they run in their own sessions: nothing else would)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_bench(opts: Options, progress: Progress | None = None) -> dict[str, Any]:
    """Run the chosen phases; the result object that --json prints and the history keeps."""
    with _sigterm_as_interrupt():
        return _run_bench(opts, progress or Progress())


def _run_bench(opts: Options, progress: Progress) -> dict[str, Any]:
    r: dict[str, Any] = {"cluster": None, "floor": None, "sends": None, "reads": None, "failover": None, "catchup_per_s": None,
                         "rss_mb_per_node": None, "catchup": None, "memory": None, "membership": None, "body_bytes": BODY_BYTES,
                         "wire": "batched" if opts.batch else "single"}
    try:
        with _cluster_dir(opts.directory) as d:
            if "floor" in opts.phases:  # before the cluster starts: nothing else on the CPU or the disk
                progress.step("floor: round trips between two processes, raw fsyncs, bare replicated sends")
                try:
                    r["floor"] = run_floor_bench(str(d), min(opts.count, CEILING_SENDS))
                except RuntimeError as e:
                    raise BenchError(f"floor: {e}; run 'zrep bench floor' alone to see it again") from None
                progress.step("floor: " + format_floor(r["floor"]))
            if any(p in opts.phases for p in CLUSTER_PHASES):
                _cluster_phases(opts, progress, d, r)
            if opts.secure and "sends" in opts.phases and opts.config is None:
                r["secure"] = _secure_sends(opts, progress, d / "secure", r["sends"])
    except ClusterError as e:
        raise BenchError(f"{e}; rerun with --dir DIR and read the node logs there") from None
    if "failover" in opts.phases:
        progress.step(f"failover: {opts.kills} leader kills and {opts.kills} leader pauses, each on a fresh cluster")
        try:
            f = run_failover_kinds(opts.kills, progress=progress.step)
        except (RuntimeError, ClusterError) as e:
            raise BenchError(f"failover: {e}; run 'zrep bench failover' alone to see it again") from None
        r["failover"] = {k: f[k] for k in ("kills", "median_ms", "max_ms", "all_ms", "pause")}
    r.update(machine=machine(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), commit=git_commit(),
             options={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()})
    return r


def _secure_sends(opts: Options, progress: Progress, d: Path, plain: dict[str, Any]) -> dict[str, Any]:
    """--secure: the send levels again on a CURVE cluster in the same run; secure/plain sends/s per level."""
    with LocalCluster(d, secure=True) as cluster:
        bench = _Bench(cluster, opts, progress)
        progress.step(f"secure: a CURVE cluster of {len(cluster.cfg.nodes)} nodes starting in {d}")
        bench.leader_rpc()
        sends = {k: bench.level(f"secure sends @{k} in flight", in_flight=int(k), count=opts.count,
                                seconds=opts.seconds, warmup=opts.warmup).to_json() for k in plain}
    ratio = {k: round(sends[k]["per_s"] / plain[k]["per_s"], 3) if plain[k]["per_s"] else None for k in plain}
    progress.step("secure / plain sends/s: " + ", ".join(f"@{k} {v}" for k, v in ratio.items()))
    return {"sends": sends, "secure_over_plain": ratio}


def _cluster_phases(opts: Options, progress: Progress, d: Path, r: dict[str, Any]) -> None:
    """The phases that share one cluster, in directory `d`; their results go into `r`."""
    with LocalCluster(d, config=opts.config) as cluster:
        cfg = cluster.cfg
        r["cluster"] = {"nodes": len(cfg.nodes), "heartbeat_ms": cfg.heartbeat_ms,
                        "election_timeout_ms": cfg.election_timeout_ms, "fsync": cfg.fsync}
        bench = _Bench(cluster, opts, progress)
        progress.step(f"cluster of {len(cfg.nodes)} nodes starting in {d}")
        bench.leader_rpc()
        if "sends" in opts.phases:
            r["sends"] = bench.sends()
        if "reads" in opts.phases:
            r["reads"] = bench.reads()
        if "catchup" in opts.phases:
            r["catchup"] = bench.catchup()
            r["catchup_per_s"] = r["catchup"]["per_s"]
        if "memory" in opts.phases:
            r["memory"] = bench.memory()
            r["rss_mb_per_node"] = max(r["memory"]["rss_mb"].values())
        if "membership" in opts.phases:
            r["membership"] = run_membership_bench(cluster, bench.stored(), progress.step)
        died = [life.describe() for life in cluster.unexpected_exits()]
        if died:
            raise BenchError(f"a node died during the benchmark ({'; '.join(died)}); "
                             "rerun with --dir DIR and read its log there")
