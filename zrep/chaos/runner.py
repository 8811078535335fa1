"""`zrep chaos` (and bin/chaos): a local cluster under load and a seeded
nemesis for a bounded time, then heal, converge and check.

One run:
  1. a cluster (LocalCluster) from a cluster file or generated on free ports,
     each node on its own loopback address when partitions run; its data in
     the run directory;
  2. clients (workload.py) for the whole run, every op in the history;
  3. faults (nemesis.py) until the duration is over;
  4. heal everything; (e) wait for an acknowledged write invoked after the
     heal; stop the clients; (c) wait until every node applied the same log
     (same applied index, same digest); read the final state; stop the nodes
     with SIGTERM; (f) every node exit was ours;
  5. zrep.verify.check(history, final state): (a), (b), (d) and the rest;
  6. the report (report.py): text, or JSON with --json. Exit 0 iff every
     check passed.

Where it runs: partitions need root and nft. Then, unless already in a
private network namespace (or --no-netns), the tool runs itself again inside
`unshare --net --pid --fork` (netfaults.sandbox_command): rules, nodes and
clients vanish with that namespace whatever happens. In any case the rules'
table is removed in a `finally` and on SIGINT/SIGTERM; `zrep chaos --cleanup`
removes what a killed run left (its nodes, found by its cluster file; its
table; its directory), using the state file each run keeps locked while it
lives.

Exit codes: 0 every check passed; 1 a check failed; 2 usage; 3 the tool
itself failed (a bug here, not a finding); 130 interrupted.

Invariants:
  * Bounded: the nemesis stops at the duration; every later phase has its
    own timeout (RECOVERY, CONVERGE_S, FINAL_READ_S, client timeouts).
  * Whatever happens (exception, signal), the `finally` heals the network,
    kills every node process group, and removes the rules' table.
  * Signal handlers only set an Event; the main thread does the work.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import click

from zrep.chaos import netfaults
from zrep.chaos.nemesis import FAULTS, Nemesis
from zrep.chaos.report import EXITS, PROGRESS, RECOVERY, REPLICAS, RUN, Check, RunReport, from_verify
from zrep.chaos.workload import Workload, WorkloadSettings, client_config
from zrep.client import Client
from zrep.client_messages import MAX_READ_LIMIT
from zrep.config import ClusterConfig
from zrep.core.replica import BUGS
from zrep.history import HistoryWriter, load_history, pair_ops
from zrep.localcluster import CLIENT_HOST, ClusterError, LocalCluster, loopback_hosts
from zrep.verify import check as verify_check

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130

STATE_DIR = Path(tempfile.gettempdir()) / "zrep-chaos"
LEADER_WAIT_S = 20.0
CONVERGE_S = 30.0
FINAL_READ_S = 15.0
STOP_NODE_S = 10.0
PROGRESS_EVERY_S = 1.0
PROGRESS_LINE_EVERY_S = 5.0  # when stderr is not a terminal: one line this often


class Interrupted(Exception):
    pass


@dataclass(frozen=True)
class Options:
    nodes: int = 3
    duration_s: float = 60.0
    seed: int = 0
    clients: int = 4
    mailboxes: int = 4
    faults: tuple[str, ...] | None = None  # None: every fault this machine can do
    nasty: bool = False
    history: str | None = None
    keep: bool = False
    dir: str | None = None
    as_json: bool = False
    bugs: tuple[str, ...] = ()
    netns: bool = True
    recovery_s: float = 20.0
    config: str | None = None
    heartbeat_ms: int = 50
    election_timeout_ms: int = 500

    def argv(self) -> list[str]:
        """The command line that reproduces these options (for the run inside a namespace)."""
        out = ["--nodes", str(self.nodes), "--duration", repr(self.duration_s), "--seed", str(self.seed),
               "--clients", str(self.clients), "--mailboxes", str(self.mailboxes),
               "--recovery-bound", repr(self.recovery_s), "--heartbeat-ms", str(self.heartbeat_ms),
               "--election-timeout-ms", str(self.election_timeout_ms)]
        if self.faults is not None:
            out += ["--faults", ",".join(self.faults)]
        for flag, on in (("--nasty", self.nasty), ("--keep", self.keep), ("--json", self.as_json),
                         ("--no-netns", not self.netns)):
            if on:
                out.append(flag)
        for name, value in (("--history", self.history), ("--dir", self.dir), ("--config", self.config)):
            if value is not None:
                out += [name, str(Path(value).resolve())]
        for bug in self.bugs:
            out += ["--unsafe-bug", bug]
        return out


# ---------------------------------------------------------------- output


class Say:
    """Lines on stderr; a progress line overwritten in place on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False
        self._last_line = 0.0

    def line(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(f"chaos: {text}\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\rchaos: {text}\x1b[K")
            self._open = True
        elif time.monotonic() - self._last_line >= PROGRESS_LINE_EVERY_S:
            self.stream.write(f"chaos: {text}\n")
            self._last_line = time.monotonic()
        self.stream.flush()


# ---------------------------------------------------------------- the state file (for --cleanup)


class StateFile:
    """`STATE_DIR/<run>.json`, locked (flock) while the run lives: --cleanup skips locked ones."""

    def __init__(self, info: dict[str, Any]) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="run-", suffix=".json", dir=STATE_DIR)
        self.path = Path(path)
        self.fh = os.fdopen(fd, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.fh.write(json.dumps(info))
        self.fh.flush()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.fh.close()


def cleanup_leftovers(say: Callable[[str], None]) -> int:
    """Remove what runs that died left behind: nodes, the rules' table, directories."""
    if netfaults.cleanup_table():
        say(f"removed the nftables table {netfaults.FAMILY} {netfaults.TABLE}")
    for state in sorted(STATE_DIR.glob("run-*.json")) if STATE_DIR.is_dir() else []:
        with open(state) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                say(f"{state}: its run is still going; left alone")
                continue
            try:
                info = json.load(fh)
            except ValueError:
                info = {}
        config = info.get("config")
        for pid in _node_pids(config) if config else []:
            try:
                os.killpg(pid, signal.SIGKILL)  # each node leads its own process group
                say(f"killed leftover node process group {pid} ({config})")
            except ProcessLookupError:
                pass
        run_dir = info.get("dir")
        if run_dir and not info.get("keep") and Path(run_dir).is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
            say(f"removed {run_dir}")
        state.unlink(missing_ok=True)
    say("clean")
    return EXIT_OK


def _node_pids(config: str) -> list[int]:
    """Group leaders running `zrep.node --config CONFIG` (ours: the path is the run's own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            pid = int(entry.name)
            if b"zrep.node" in args and config.encode() in args and os.getpgid(pid) == pid:
                out.append(pid)
        except (OSError, ValueError):
            continue
    return out


# ---------------------------------------------------------------- running inside a namespace


def run_sandboxed(opts: Options, say: Say) -> int:
    """Run this same command inside a fresh network + PID namespace; its exit code."""
    argv = [sys.executable, "-m", "zrep", "chaos", *opts.argv()]
    env = dict(os.environ, **{netfaults.NETNS_ENV: "1"})
    proc = subprocess.Popen(netfaults.sandbox_command(argv), env=env)

    def forward(signum: int, _frame: Any) -> None:
        # unshare blocks SIGINT/SIGTERM; the tool inside must get them to clean up and report.
        for pid in _children(proc.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            proc.kill()  # --kill-child then sends SIGTERM to the tool inside
            proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------- one run


class Run:
    def __init__(self, opts: Options, say: Say, stop: threading.Event) -> None:
        self.o = opts
        self.say = say
        self.stop = stop
        self.rng = random.Random(opts.seed)
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.faults = self._choose_faults()
        made = opts.dir is None
        self.dir = Path(opts.dir) if opts.dir else Path(tempfile.mkdtemp(prefix="zrep-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir_is_ours = made
        self.history_path = Path(opts.history) if opts.history else self.dir / "history.jsonl"
        self.final_path = self.history_path.with_name(self.history_path.stem + ".final.json")
        self.cluster: LocalCluster | None = None
        self.net: netfaults.NetFaults | None = None
        self.nemesis: Nemesis | None = None
        self.workload: Workload | None = None
        self.history: HistoryWriter | None = None
        self.state: StateFile | None = None
        self.passed = False
        self._closed = False

    # ------------------------------------------------------------ setup

    def _choose_faults(self) -> list[str]:
        wanted = list(self.o.faults) if self.o.faults is not None else list(FAULTS)
        out = []
        for f in wanted:
            why = self._unavailable(f)
            if why:
                self.skipped[f] = why
                self.say.line(f"{f} skipped: {why}")
            else:
                out.append(f)
        return out

    def _unavailable(self, fault: str) -> str:
        if fault != "partition":
            return ""
        if self.o.config is not None:
            from zrep.config import load_config

            hosts = {n.id: n.host for n in load_config(self.o.config).nodes}
        else:
            hosts = dict(enumerate(loopback_hosts(self.o.nodes), 1))
        return netfaults.partitions_unavailable(hosts)

    @property
    def partitions(self) -> bool:
        return "partition" in self.faults

    def sandbox(self) -> str:
        if netfaults.in_private_netns():
            return "in a private network namespace"
        if self.partitions:
            return "in the host's network namespace (rules removed at the end)"
        return "in the host's network namespace (no rules)"

    def setup(self) -> LocalCluster:
        o = self.o
        hosts = loopback_hosts(o.nodes) if self.partitions and o.config is None else None
        self.cluster = LocalCluster(self.dir / "cluster", nodes=o.nodes, hosts=hosts, heartbeat_ms=o.heartbeat_ms,
                                    election_timeout_ms=o.election_timeout_ms, bugs=o.bugs, start=False,
                                    client_host=CLIENT_HOST if self.partitions else None, config=o.config)
        self.state = StateFile({"pid": os.getpid(), "dir": str(self.dir) if self.dir_is_ours else None,
                                "config": str(self.cluster.config_path), "keep": o.keep,
                                "netns": netfaults.in_private_netns(), "nft": self.partitions})
        if self.partitions:
            self.net = netfaults.NetFaults(self.cluster.hosts)
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        self.history_path.write_text("")  # bodies are unique per run: never append to an old history
        self.history = HistoryWriter(self.history_path)
        return self.cluster

    # ------------------------------------------------------------ the run

    def execute(self) -> RunReport:
        c = self.setup()
        o = self.o
        self.say.line(f"seed {o.seed}: {len(c.ids)} nodes in {c.dir}, faults {','.join(self.faults) or 'none'}, "
                      f"{self.sandbox()}")
        c.start()
        try:
            c.wait_for_leader(LEADER_WAIT_S)
        except ClusterError:
            self.errors.append(f"no leader within {LEADER_WAIT_S:.0f}s of the start")
            return self._report([self._exits()], None, None, {})
        self._check_stop()
        cfg: ClusterConfig = c.cfg
        settings = WorkloadSettings(o.clients, tuple(f"box-{k}" for k in range(o.mailboxes)), o.seed,
                                    f"c{o.seed % 1_000_000}")
        assert self.history is not None
        self.workload = Workload(settings, cfg, self.history, c.client_host)
        self.nemesis = Nemesis(c, self.faults, self.rng, nasty=o.nasty, net=self.net, history=self.history,
                               stop=self.stop, election_timeout_s=o.election_timeout_ms / 1000)
        started = time.monotonic()
        self.origin_ns = time.monotonic_ns()
        self.workload.start()
        until = started + o.duration_s
        thread = threading.Thread(target=self._nemesis_run, args=(until,), name="chaos-nemesis", daemon=True)
        thread.start()
        self._progress_until(thread, until)
        thread.join()
        self._check_stop()
        self.nemesis.heal_all()
        ran_s = time.monotonic() - started
        heal_ns = time.monotonic_ns()
        recovery = self._recovery(heal_ns)
        stuck = self.workload.stop(settings.timeout_s * 3 + 5)
        if stuck:
            self.errors.append(f"client processes {stuck} did not stop in time")
        self._check_stop()
        replicas = self._converge()
        final = self._final_state(settings.mailboxes)
        if final is not None:  # for `zrep verify HISTORY --final FILE` later
            self.final_path.write_text(json.dumps({box: [list(row) for row in rows] for box, rows in final.items()}))
        self.nemesis.watch()
        codes = c.stop_all(signal.SIGTERM, STOP_NODE_S)
        self.say.line(f"nodes stopped: exit codes {codes}")
        self.history.close()
        return self._report([replicas, recovery, self._exits()], final, ran_s, {})

    def _nemesis_run(self, until: float) -> None:
        assert self.nemesis is not None
        try:
            self.nemesis.run(until)
        except Exception as e:  # reported, and the run still heals and checks
            self.errors.append(f"nemesis: {type(e).__name__}: {e}")
            self.say.line(traceback.format_exc().rstrip())

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted()

    def _progress_until(self, thread: threading.Thread, until: float) -> None:
        assert self.workload is not None and self.nemesis is not None
        stats = self.workload.stats
        last_t, last_done = time.monotonic(), 0
        while thread.is_alive() and not self.stop.wait(PROGRESS_EVERY_S):
            now = time.monotonic()
            done = stats.done
            rate = (done - last_done) / max(1e-6, now - last_t)
            last_t, last_done = now, done
            faults = ", ".join(f"{k} {v}" for k, v in sorted(self.nemesis.counts.items())) or "none yet"
            outcomes = {t: sum(v for k, v in stats.outcomes.items() if k.endswith(":" + t))
                        for t in ("ok", "fail", "info")}
            self.say.progress(f"{max(0.0, until - now):5.1f}s left | faults: {faults} | {rate:6.1f} ops/s | "
                              f"ok {outcomes['ok']} fail {outcomes['fail']} info {outcomes['info']}")

    # ------------------------------------------------------------ after the faults

    def _recovery(self, heal_ns: int) -> Check:
        """(e) An acknowledged send invoked after the heal, within the bound."""
        assert self.workload is not None
        bound = self.o.recovery_s
        deadline = time.monotonic() + bound
        desc = f"after the heal the cluster acknowledged a new write within {bound:g}s"
        while time.monotonic() < deadline:
            ack = self.workload.stats.first_ack_after(heal_ns)
            if ack is not None:
                took = (ack.ok_ns - heal_ns) / 1e9
                return Check(RECOVERY, True, desc, [f"first send invoked after the heal acknowledged "
                                                     f"{took:.2f}s after it (epoch {ack.epoch})"])
            if self.stop.wait(0.05):
                raise Interrupted()
            if self.nemesis is not None:
                self.nemesis.watch()
        return Check(RECOVERY, False, desc, [f"no send invoked after the heal was acknowledged within {bound:g}s"])

    def _converge(self) -> Check:
        """(c) Every node applied the same log: same applied index and digest, at least the highest commit.

        Two nodes at one applied index with different digests have applied
        different logs (the digest is a hash chain): that never heals, so it
        ends the wait at once.
        """
        c = self.cluster
        assert c is not None
        desc = "every node applied the same log (equal applied index and digest, hash chains)"
        top = max((s["commit"] for s in c.statuses(timeout=2.0).values()), default=0)
        deadline = time.monotonic() + CONVERGE_S
        while True:
            d = c.digests()
            by_index: dict[int, set[str]] = {}
            for digest, index in d.values():
                by_index.setdefault(index, set()).add(digest)
            if any(len(digests) > 1 for digests in by_index.values()):  # any two nodes, not only all
                return Check(REPLICAS, False, desc, self._divergence(top, timed_out=False))
            if len(d) == len(c.ids) and len(by_index) == 1:
                index, digests = by_index.popitem()
                if index >= top:
                    took = CONVERGE_S - (deadline - time.monotonic())
                    return Check(REPLICAS, True, desc, [f"all {len(c.ids)} nodes applied index {index}, "
                                                        f"digest {digests.pop()[:16]} ({took:.2f}s after the "
                                                        "clients stopped)"])
            if time.monotonic() >= deadline:
                return Check(REPLICAS, False, desc, self._divergence(top, timed_out=True))
            if self.stop.wait(0.05):
                raise Interrupted()

    def _divergence(self, top: int, timed_out: bool) -> list[str]:
        c = self.cluster
        assert c is not None
        st = c.statuses(timeout=2.0)
        ev = [f"did not converge within {CONVERGE_S:g}s (highest commit seen {top})"] if timed_out else []
        for i in c.ids:
            s = st.get(i)
            ev.append(f"node {i}: " + ("no status" if s is None else
                      f"role {s['role_name']}, epoch {s['epoch']}, commit {s['commit']}, "
                      f"applied {s['store_applied']}, digest {s['digest'][:16]}"))
        applied = {s["store_applied"] for s in st.values()}
        if len(st) > 1 and len(applied) == 1 and len({s["digest"] for s in st.values()}) > 1:
            ev.insert(1, f"same applied index {applied.pop()}, different digests: the nodes applied different logs")
        ev.extend(self._first_difference(list(st)))
        return ev

    def _first_difference(self, nodes: list[int]) -> list[str]:
        """Where the nodes' stores differ first, per mailbox (from each node's own stale read)."""
        c = self.cluster
        assert c is not None
        out = []
        for box in (f"box-{k}" for k in range(self.o.mailboxes)):
            views = {}
            for i in nodes:
                r = c.try_request(i, "stale_read", {"mailbox": box, "after": -1, "limit": MAX_READ_LIMIT}, 5.0)
                if r is not None and r.ok:
                    views[i] = {int(m[0]): bytes(m[2]).decode("utf-8", "replace") for m in r.result["messages"]}
            if len(views) < 2:
                continue
            ref_node, ref = next(iter(views.items()))
            for i, v in views.items():
                diff = sorted(o for o in set(ref) | set(v) if ref.get(o) != v.get(o))
                if diff:
                    o = diff[0]
                    out.append(f"{box} offset {o}: node {ref_node} has {ref.get(o)!r}, node {i} has {v.get(o)!r}")
                    break
        return out

    def _final_state(self, boxes: Sequence[str]) -> dict[str, list[tuple[int, str]]] | None:
        c = self.cluster
        assert c is not None
        try:
            with Client(client_config(c.cfg, c.client_host), timeout_s=FINAL_READ_S) as client:
                final: dict[str, list[tuple[int, str]]] = {}
                for box in boxes:
                    rows: list[tuple[int, str]] = []
                    after = -1
                    while True:
                        r = client.read(box, after=after, limit=MAX_READ_LIMIT)
                        rows += [(m.offset, m.body.decode("utf-8", "replace")) for m in r.messages]
                        if len(r.messages) < MAX_READ_LIMIT:
                            break
                        after = r.messages[-1].offset
                    final[box] = rows
                return final
        except Exception as e:  # noqa: BLE001 - reported as a failed run, checks that need it fail
            self.errors.append(f"could not read the final state: {type(e).__name__}: {e}")
            return None

    def _exits(self) -> Check:
        """(f) Every node process that ended was ended by us."""
        c = self.cluster
        assert c is not None
        c.reap()
        bad = c.unexpected_exits()
        desc = "no node process ended other than by the nemesis (SIGKILL) or our final SIGTERM (exit 0)"
        if bad:
            ev = [life.describe() for life in bad]
            for life in bad[:3]:
                tail = [ln for ln in c.node_log(life.node).splitlines() if ln.strip()][-3:]
                ev += [f"  node {life.node} log: {ln}" for ln in tail]
            return Check(EXITS, False, desc, ev)
        killed = sum(1 for life in c.lives if life.signal == signal.SIGKILL)
        return Check(EXITS, True, desc, [f"{len(c.lives)} node lives: {killed} ended by our SIGKILL, "
                                         f"the rest by our SIGTERM with exit 0"])

    # ------------------------------------------------------------ the report

    def _report(self, checks: list[Check], final: dict[str, list[tuple[int, str]]] | None,
                ran_s: float | None, extra: dict[str, Any]) -> RunReport:
        o = self.o
        verify_stats: dict[str, Any] = {}
        all_checks = list(checks)
        ops: dict[str, int] = {}
        rate = 0.0
        if self.history is not None and ran_s is not None:
            try:
                report = verify_check(pair_ops(load_history(self.history_path)), final)
                all_checks += from_verify(report)
                verify_stats = report.stats
            except Exception as e:  # noqa: BLE001 - a history we cannot check is a failed run
                self.errors.append(f"checking the history failed: {type(e).__name__}: {e}")
        if self.workload is not None:
            stats = self.workload.stats
            ops = dict(sorted(stats.outcomes.items()))
            rate = stats.done / ran_s if ran_s else 0.0
            self.errors += stats.errors
            sends, reads = ops.get("send:ok", 0), ops.get("read:ok", 0)
            all_checks.append(Check(PROGRESS, sends > 0 and reads > 0,
                                    "the workload had acknowledged sends and linearizable reads to check",
                                    [f"{sends} acknowledged sends, {reads} linearizable reads"]))
        if self.nemesis is not None:
            self.errors += self.nemesis.errors
        all_checks.append(Check(RUN, not self.errors, "the run itself completed (no tool errors)",
                                list(self.errors)))
        records = self.nemesis.records if self.nemesis else []
        origin = getattr(self, "origin_ns", 0)
        settings = {**{k: v for k, v in asdict(o).items() if k not in ("as_json",)},
                    "faults_asked": list(o.faults) if o.faults is not None else "all",
                    "sandbox": self.sandbox(), **extra}
        settings["faults"] = self.faults
        report = RunReport(
            settings=settings,
            faults={f: (self.nemesis.counts.get(f, 0) if self.nemesis else 0) for f in self.faults},
            fault_log=[r.to_dict(origin) for r in records],
            skipped_faults=dict(self.skipped), ops=ops, ops_per_s=round(rate, 1),
            failovers=self._failovers(), checks=all_checks,
            paths={"history": str(self.history_path), "final state": str(self.final_path),
                   "directory": str(self.dir)}, notes=self.notes,
            verify_stats=verify_stats)
        self.passed = report.ok
        return report

    def _failovers(self) -> list[dict[str, Any]]:
        if self.nemesis is None or self.workload is None:
            return []
        acks = sorted(self.workload.stats.acks, key=lambda a: a.ok_ns)
        origin = getattr(self, "origin_ns", 0)
        out = []
        for r in self.nemesis.records:
            if not r.leader_hit or r.epoch is None:
                continue
            first = next((a for a in acks if a.ok_ns >= r.start_ns and a.epoch > r.epoch), None)
            out.append({"fault": r.kind, "leader": r.leader, "epoch": r.epoch,
                        "at_s": round((r.start_ns - origin) / 1e9, 3),
                        "took_s": None if first is None else round((first.ok_ns - r.start_ns) / 1e9, 3)})
        return out

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        """Undo everything, whatever state the run is in. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self.workload is not None:
            steps.append(("stop the clients", lambda: self.workload.stop(1.0)))  # type: ignore[union-attr]
        if self.net is not None:
            steps.append(("remove the rules", self.net.remove))
        if self.cluster is not None:
            steps.append(("kill the nodes", self.cluster.close))
        if self.history is not None:
            steps.append(("close the history", self.history.close))
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - every other step must still run
                self.say.line(f"cleanup: could not {what}: {type(e).__name__}: {e}")
        self.net = None
        if self.state is not None:
            self.state.remove()
            self.state = None
        if self.dir_is_ours and not self.o.keep and self.passed:
            # A failed run keeps its directory: the logs and the history are the evidence.
            shutil.rmtree(self.dir, ignore_errors=True)


def run_chaos(opts: Options, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """One chaos run in this process; the exit code."""
    say = Say(err)
    stop = threading.Event()
    count = [0]

    def on_signal(signum: int, _frame: Any) -> None:
        count[0] += 1
        stop.set()
        if count[0] > 2:
            raise KeyboardInterrupt  # a third signal: stop waiting for a graceful end

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    run: Run | None = None
    try:
        run = Run(opts, say, stop)
        report = run.execute()
        run.close()
        if report.ok:
            kept = {"history", "final state"} if opts.history else set()
            report.paths = {k: v for k, v in report.paths.items() if k in kept or k == "directory" and opts.keep}
        elif run.dir_is_ours:
            say.line(f"the run directory is kept for inspection: {run.dir}")
        out.write((report.to_json() if opts.as_json else report.format()) + "\n")
        out.flush()
        return EXIT_OK if report.ok else EXIT_FAILED
    except (Interrupted, KeyboardInterrupt):
        say.line("interrupted: cluster stopped, rules removed")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - a bug of the tool: say so, distinct from a finding
        say.line(f"the chaos tool failed: {type(e).__name__}: {e}")
        traceback.print_exc(file=err)
        return EXIT_ERROR
    finally:
        if run is not None:
            run.close()
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- the command


def _faults_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise click.BadParameter(f"unknown fault {', '.join(unknown)}; choose from {','.join(FAULTS)}")
    return names


@click.command(name="chaos", epilog="Exit codes: 0 every check passed, 1 a check failed, 2 usage, "
                                    "3 the tool itself failed, 130 interrupted.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None, metavar="PATH",
              help="Use this cluster file's nodes and timing (data goes to the run directory). "
                   "Default: generate one on free ports.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True,
              help="Nodes of a generated cluster.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=1, max=24 * 3600), default=60.0,
              show_default=True, metavar="SECONDS", help="How long the nemesis runs.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of every choice. Default: random.")
@click.option("--clients", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Concurrent client processes (threads, one Client each).")
@click.option("--mailboxes", type=click.IntRange(min=1, max=100), default=4, show_default=True)
@click.option("--faults", callback=_faults_option, default=None, metavar="LIST",
              help=f"Comma-separated subset of {','.join(FAULTS)}. Default: all this machine can do.")
@click.option("--nasty", is_flag=True, help="Faults may take down a majority at once (the cluster must stall "
                                            "safely, never diverge).")
@click.option("--history", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the history (JSON lines) here, and the final state next to it (NAME.final.json), "
                   "both kept. Default: in the run directory.")
@click.option("--keep", is_flag=True, help="Keep the run directory (data, logs, history) even when every check "
                                           "passed. A failed run always keeps it.")
@click.option("--dir", "run_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Run directory. Default: a new temporary one.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--recovery-bound", "recovery_s", type=click.FloatRange(min=1), default=20.0, show_default=True,
              metavar="SECONDS", help="(e): after the heal, a new write must be acknowledged within this.")
@click.option("--heartbeat-ms", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--election-timeout-ms", type=click.IntRange(min=10), default=500, show_default=True)
@click.option("--no-netns", is_flag=True, help="Do not move into a private network namespace for partitions "
                                               "(the rules then live in this one; removed at the end).")
@click.option("--cleanup", is_flag=True, help="Remove what killed runs left behind (nodes, rules, "
                                              "directories) and exit.")
@click.option("--unsafe-bug", "bugs", multiple=True, type=click.Choice(sorted(BUGS)), hidden=True,
              help="Start every node with this planted bug (tests of the checker).")
def chaos(config: str | None, nodes: str, duration_s: float, seed: int | None, clients: int, mailboxes: int,
          faults: tuple[str, ...] | None, nasty: bool, history: str | None, keep: bool, run_dir: str | None,
          as_json: bool, recovery_s: float, heartbeat_ms: int, election_timeout_ms: int, no_netns: bool,
          cleanup: bool, bugs: tuple[str, ...]) -> None:
    """Run a local cluster under load with a seeded nemesis (kills, pauses, partitions, torn WAL tails,
    restarts of every node), then heal, converge and check the recorded history.

    The report gives the faults by type, the operations by outcome, the failovers and every check's
    verdict with evidence."""
    say = Say(sys.stderr)
    if cleanup:
        sys.exit(cleanup_leftovers(say.line))
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    opts = Options(nodes=int(nodes), duration_s=duration_s, seed=seed, clients=clients, mailboxes=mailboxes,
                   faults=faults, nasty=nasty, history=history, keep=keep, dir=run_dir, as_json=as_json,
                   bugs=bugs, netns=not no_netns, recovery_s=recovery_s, config=config,
                   heartbeat_ms=heartbeat_ms, election_timeout_ms=election_timeout_ms)
    wants_partitions = faults is None or "partition" in faults
    if (wants_partitions and not no_netns and not netfaults.in_private_netns()
            and not netfaults.sandbox_unavailable() and not _partition_blocker(opts)):
        say.line(f"seed {seed}: moving into a private network namespace (unshare) for partitions")
        sys.exit(run_sandboxed(opts, say))
    sys.exit(run_chaos(opts))


def _partition_blocker(opts: Options) -> str:
    if opts.config is None:
        return ""
    from zrep.config import load_config

    return netfaults.partitions_unavailable({n.id: n.host for n in load_config(opts.config).nodes})
