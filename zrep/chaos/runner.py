"""One chaos run: a local cluster under load and a seeded nemesis for a
bounded time, then heal, converge and check. The command around it is
zrep.cli.chaos.

Phases:
  1. a cluster (LocalCluster) from a cluster file or generated on free ports,
     each node on its own loopback address (127.0.0.1, .2, ...; clients on
     127.0.0.100 when partitions run); its data in the run directory, on a
     power-cut file system of its own when power cuts run (disks.py);
  2. clients (workload.py) for the whole run, every op in the history;
  3. faults (nemesis.py) until the duration is over, a progress line on
     stderr meanwhile;
  4. heal everything; (e) an acknowledged write invoked after the heal;
     stop the clients; (c) every node applied the same log; read the final
     state; stop the nodes with SIGTERM; (f) every node exit was ours
     (cluster_checks.py);
  5. zrep.chaos.verify.check(history, final state): (a), (b), (d) and the rest;
  6. the report (report.py): text, or JSON with --json.

Exit codes: 0 every check passed; 1 a check failed; 3 the tool itself
failed (a bug here, not a finding); 130 interrupted.

Invariants:
  * Bounded: the nemesis stops at the duration; every later phase has its
    own timeout (the recovery bound, CONVERGE_S, FINAL_READ_S, STOP_NODE_S,
    the clients' timeouts).
  * Whatever happens (exception, signal), `Run.close` heals the network,
    kills every node process group, unmounts the power-cut disks, removes
    the rules' table and the state file; a passing run also removes the
    directory it made (a failing one keeps it: logs and history are the
    evidence).
  * Signal handlers only set an Event; the main thread does the work.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from zrep.chaos import netfaults
from zrep.chaos.cluster_checks import (
    Final,
    Interrupted,
    final_state,
    no_unexpected_exits,
    replicas_identical,
    writes_resume,
)
from zrep.chaos.disks import Disks
from zrep.chaos.history import HistoryWriter, load_history, pair_ops
from zrep.chaos.leftovers import StateFile
from zrep.chaos.membership import MembershipOperator
from zrep.chaos.nemesis import FAULTS, Nemesis
from zrep.chaos.powerfs.mount import unavailable as power_cuts_unavailable
from zrep.chaos.report import PROGRESS, RUN, Check, RunReport, from_verify
from zrep.chaos.verify import check as verify_check
from zrep.chaos.workload import Workload, WorkloadSettings
from zrep.config import ClusterConfig, load_config
from zrep.local.cluster import CLIENT_HOST, ClusterError, LocalCluster, loopback_hosts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130

LEADER_WAIT_S = 20.0
CONVERGE_S = 30.0
FINAL_READ_S = 15.0
STOP_NODE_S = 10.0
PROGRESS_EVERY_S = 1.0
PROGRESS_LINE_EVERY_S = 5.0  # when stderr is not a terminal: one line this often


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
    election_timeout_ms: int = 300  # the shipped cluster files' default
    snapshot_entries: int = 200  # far below the default: kills and restarts meet snapshots in a short run
    secure: bool = False  # a generated cluster with CURVE on every socket (keys made for the run)
    membership: bool = False  # an operator adds, removes, replaces and transfers alongside the faults

    def argv(self) -> list[str]:
        """The command line that reproduces these options (for the run inside a namespace)."""
        out = ["--nodes", str(self.nodes), "--duration", repr(self.duration_s), "--seed", str(self.seed),
               "--clients", str(self.clients), "--mailboxes", str(self.mailboxes),
               "--recovery-bound", repr(self.recovery_s), "--heartbeat-ms", str(self.heartbeat_ms),
               "--election-timeout-ms", str(self.election_timeout_ms),
               "--snapshot-entries", str(self.snapshot_entries)]
        if self.faults is not None:
            out += ["--faults", ",".join(self.faults)]
        for flag, on in (("--nasty", self.nasty), ("--keep", self.keep), ("--json", self.as_json),
                         ("--no-netns", not self.netns), ("--secure", self.secure),
                         ("--membership", self.membership)):
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


# ---------------------------------------------------------------- one run


class Run:
    def __init__(self, opts: Options, say: Say, stop: threading.Event) -> None:
        self.o = opts
        self.say = say
        self.stop = stop
        self.rng = random.Random(opts.seed)
        self.skipped: dict[str, str] = {}
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
        self.disks: Disks | None = None
        self.nemesis: Nemesis | None = None
        self.workload: Workload | None = None
        self.history: HistoryWriter | None = None
        self.state: StateFile | None = None
        self.passed = False
        self._closed = False
        self.origin_ns = time.monotonic_ns()  # fault times in the report count from the workload's start

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
        if fault == "power-cut":
            return power_cuts_unavailable()
        if fault != "partition":
            return ""
        if self.o.config is not None:
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
        hosts = loopback_hosts(o.nodes) if o.config is None else None  # one address per node, always
        self.cluster = LocalCluster(self.dir / "cluster", nodes=o.nodes, hosts=hosts, heartbeat_ms=o.heartbeat_ms,
                                    election_timeout_ms=o.election_timeout_ms, bugs=o.bugs, start=False,
                                    client_host=CLIENT_HOST if self.partitions else None, config=o.config,
                                    snapshot_entries=o.snapshot_entries, secure=o.secure and o.config is None)
        if "power-cut" in self.faults:
            self.disks = Disks(self.cluster, self.dir / "powerfs")
        self.state = StateFile({"pid": os.getpid(), "dir": str(self.dir) if self.dir_is_ours else None,
                                "config": str(self.cluster.config_path), "keep": o.keep,
                                "netns": netfaults.in_private_netns(), "nft": self.partitions,
                                "mounts": self.disks.mountpoints if self.disks else []})
        if self.disks is not None:
            self.disks.ensure_mounted()  # every node's data directory on its own power-cut disk
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
            return self._report([no_unexpected_exits(c)], None, None)
        self._check_stop()
        cfg: ClusterConfig = c.cfg
        settings = WorkloadSettings(o.clients, tuple(f"box-{k}" for k in range(o.mailboxes)), o.seed,
                                    f"c{o.seed % 1_000_000}", key=str(c.client_key) if c.client_key else None)
        assert self.history is not None
        self.workload = Workload(settings, cfg, self.history, c.client_host)
        self.nemesis = Nemesis(c, self.faults, self.rng, nasty=o.nasty, net=self.net, history=self.history,
                               stop=self.stop, election_timeout_s=o.election_timeout_ms / 1000, disks=self.disks)
        started = time.monotonic()
        self.origin_ns = time.monotonic_ns()
        self.workload.start()
        until = started + o.duration_s
        thread = threading.Thread(target=self._nemesis_run, args=(until,), name="chaos-nemesis", daemon=True)
        thread.start()
        operator = None
        if o.membership:
            operator = MembershipOperator(c, self.nemesis, random.Random(f"membership-{o.seed}"), self.stop,
                                          key=settings.key)
            operator.start(until)
        self._progress_until(thread, until)
        thread.join()
        if operator is not None:
            operator.join()  # its last change finishes before the heal
            self.errors += operator.errors
            if operator.refusals:
                self.say.line("membership changes refused or unanswered meanwhile (retried): " +
                              ", ".join(f"{k} {v}" for k, v in sorted(operator.refusals.items())))
        self._check_stop()
        ran_s = time.monotonic() - started
        checks, final = self._after_faults(settings)
        return self._report(checks, final, ran_s)

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

    def _after_faults(self, settings: WorkloadSettings) -> tuple[list[Check], Final | None]:
        c, nemesis, workload = self.cluster, self.nemesis, self.workload
        assert c is not None and nemesis is not None and workload is not None and self.history is not None
        nemesis.heal_all()
        heal_ns = time.monotonic_ns()
        recovery = writes_resume(workload.stats, heal_ns, self.o.recovery_s, self.stop, nemesis.watch)
        stuck = workload.stop(settings.timeout_s * 3 + 5)
        if stuck:
            self.errors.append(f"client processes {stuck} did not stop in time")
        self._check_stop()
        replicas = replicas_identical(c, settings.mailboxes, CONVERGE_S, self.stop)
        final: Final | None = None
        try:
            final = final_state(c, settings.mailboxes, FINAL_READ_S)
            # Kept for `zrep verify HISTORY --final FILE`.
            self.final_path.write_text(json.dumps({box: [list(row) for row in rows] for box, rows in final.items()}))
        except Exception as e:  # noqa: BLE001 - reported: the checks that need it fail
            self.errors.append(f"could not read the final state: {type(e).__name__}: {e}")
        nemesis.watch()
        codes = c.stop_all(signal.SIGTERM, STOP_NODE_S)
        self.say.line(f"nodes stopped: exit codes {codes}")
        self.history.close()
        return [replicas, recovery, no_unexpected_exits(c)], final

    # ------------------------------------------------------------ the report

    def _report(self, checks: list[Check], final: Final | None, ran_s: float | None) -> RunReport:
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
        origin = self.origin_ns
        settings = {**{k: v for k, v in asdict(o).items() if k not in ("as_json",)},
                    "faults_asked": list(o.faults) if o.faults is not None else "all",
                    "sandbox": self.sandbox()}
        settings["faults"] = self.faults
        report = RunReport(
            settings=settings,
            faults={f: (self.nemesis.counts.get(f, 0) if self.nemesis else 0) for f in self.faults},
            fault_log=[r.to_dict(origin) for r in records],
            skipped_faults=dict(self.skipped), ops=ops, ops_per_s=round(rate, 1),
            failovers=self._failovers(), checks=all_checks,
            paths={"history": str(self.history_path), "final state": str(self.final_path),
                   "directory": str(self.dir)},
            verify_stats=verify_stats)
        self.passed = report.ok
        return report

    def _failovers(self) -> list[dict[str, Any]]:
        if self.nemesis is None or self.workload is None:
            return []
        acks = sorted(self.workload.stats.acks, key=lambda a: a.ok_ns)
        origin = self.origin_ns
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
        if self.disks is not None:
            steps.append(("unmount the power-cut disks", self.disks.close))
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
