"""What `zrep bench` prints and records: the machine, the commit, the progress
line, the readable table, and the history file.

Job: everything about presenting a result; nothing here measures. The
machine line and the commit go into every result, so a figure in the history
can always be told apart by where and on what code it was measured.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the repo (this is zrep/bench/report.py), for an editable install
DEFAULT_HISTORY = PACKAGE_ROOT / "bench" / "history.jsonl"


def _first(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file, if there is one."""
    try:
        with open(path) as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def machine() -> str:
    """One line: CPU model, cores, RAM, kernel, Python (e.g. 'AMD EPYC 7B13, 2 cores, 23.5 GiB, ...')."""
    cpu = _first("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem_kb = _first("/proc/meminfo", "MemTotal")
    ram = f"{int(mem_kb.split()[0]) / (1 << 20):.1f} GiB" if mem_kb else "RAM unknown"
    return (f"{cpu}, {os.cpu_count()} cores, {ram}, {platform.system()} {platform.release()} "
            f"{platform.machine()}, Python {platform.python_version()}")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB (VmRSS of /proc/PID/status)."""
    value = _first(f"/proc/{pid}/status", "VmRSS")
    if value is None:
        raise OSError(f"no VmRSS for pid {pid}: is it running on this machine?")
    return round(int(value.split()[0]) / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used, in seconds (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError) as e:
        raise OSError(f"no CPU time for pid {pid}: is it running on this machine? ({e})") from None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def git_commit() -> str | None:
    """The commit of the code that ran, '+dirty' if tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def append_history(path: Path, result: dict[str, Any]) -> None:
    """One JSON line per run, appended: the file is the record of every figure ever measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(result, sort_keys=True) + "\n")


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else a line per step."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._width = 0

    def update(self, text: str) -> None:
        """A passing figure: shown only where it can be overwritten."""
        if self.tty:
            line = f"bench: {text}"
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()

    def step(self, text: str) -> None:
        """A phase or step that started or ended: always shown."""
        if self.tty:
            self.update(text)
            self.stream.write("\n")
            self._width = 0
        else:
            self.stream.write(f"bench: {text}\n")
        self.stream.flush()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


_WIRE = {"batched": "requests batched on the wire (ClientBatch frames; --no-batch: one frame each)",
         "single": "one frame per request (--no-batch)"}


def format_floor(r: dict[str, Any]) -> str:
    rtt = r["rtt"]
    return (f"zmq round trip between two processes: p50 {rtt['p50_ms']} ms, p99 {rtt['p99_ms']} ms; "
            f"raw fsync {r['fsync_per_s']:,}/s{_format_together(r)}; 1-in-flight send floor (2 round trips + 1 fsync): "
            f"{r['send_floor_ms']} ms" + _format_ceiling(r.get("ceiling")))


def _format_together(r: dict[str, Any]) -> str:
    together = r.get("fsync_each_of_3_per_s")  # history lines before it have none
    return "" if together is None else f" ({together:,}/s each with 3 files flushed at once)"


def _format_ceiling(c: dict[str, Any] | None) -> str:
    if c is None:  # history lines before the ceiling existed
        return ""
    return (f"; ceiling (bare leader + 2 followers, fsync, 1 in flight): {c['per_s']:,.0f} sends/s, "
            f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms" + _format_ceiling_cpu(c.get("cpu_us_per_send")))


def _format_ceiling_cpu(cpu: dict[str, Any] | None) -> str:
    if cpu is None:
        return ""
    followers = " + ".join(f"{v:.0f}" for v in cpu["followers"])
    return f", CPU µs per send: leader {cpu['leader']:.0f}, followers {followers}, client {cpu['client']:.0f}"


def format_cpu(cpu: dict[str, Any]) -> str:
    """'leader 67, followers 35 + 35, clients 21': the CPU each part spent per request."""
    nodes, leader = cpu["nodes"], str(cpu["leader"])
    followers = " + ".join(f"{v:.0f}" for k, v in nodes.items() if k != leader)
    return f"leader {nodes[leader]:.0f}, followers {followers}, clients {cpu['clients']:.0f}"


def format_text(r: dict[str, Any]) -> str:
    """The readable report: one table for sends, then one line per other figure."""
    c = r.get("cluster")
    out = [f"zrep bench, {r['date']}, commit {r.get('commit') or 'unknown'}", f"machine: {r['machine']}"]
    if c:
        out += [f"cluster: {c['nodes']} nodes, heartbeat {c['heartbeat_ms']} ms, election timeout "
                f"{c['election_timeout_ms']} ms, fsync {'on' if c['fsync'] else 'off'}, {r['body_bytes']}-byte bodies",
                f"load: {_WIRE.get(r.get('wire', 'single'), r.get('wire'))}"]
    out.append("")
    if r.get("floor"):
        out += ["floor: " + format_floor(r["floor"]), ""]
    if r["sends"]:
        out.append(f"{'acknowledged sends':<22}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}")
        for n, s in r["sends"].items():
            out.append(f"{n + ' in flight':<22}{s['per_s']:>10,.0f}{_ms(s['p50_ms']):>10}{_ms(s['p99_ms']):>10}"
                       f"{_ms(s['max_ms']):>10}{sum(s['errors'].values()):>8}")
        cpu = [f"{n} in flight: {format_cpu(s['cpu_us_per_req'])}" for n, s in r["sends"].items() if s.get("cpu_us_per_req")]
        if cpu:
            out.append("CPU per acknowledged send, in µs: " + "; ".join(cpu))
        out.append("")
    if r.get("secure"):
        out.append(f"{'sends with CURVE':<22}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}{'secure/plain':>14}")
        for n, s in r["secure"]["sends"].items():
            out.append(f"{n + ' in flight':<22}{s['per_s']:>10,.0f}{_ms(s['p50_ms']):>10}{_ms(s['p99_ms']):>10}"
                       f"{r['secure']['secure_over_plain'][n]:>14}")
        out.append("")
    if r["reads"]:
        for kind in ("linearizable", "stale"):
            rd = r["reads"][kind]
            where = "at the leader" if kind == "linearizable" else "at the followers"
            out.append(f"{kind} reads {where}, {r['reads']['in_flight']} in flight: {rd['per_s']:,.0f}/s "
                       f"(p50 {_ms(rd.get('p50_ms'))} ms, p99 {_ms(rd.get('p99_ms'))} ms)"
                       + (f"; CPU per read, in µs: {format_cpu(rd['cpu_us_per_req'])}" if rd.get("cpu_us_per_req") else ""))
    if r["catchup_per_s"] is not None:
        cu = r["catchup"]
        out.append(f"catch-up: {cu['entries']:,} entries in {cu['seconds']:.2f} s = {r['catchup_per_s']:,.0f} "
                   f"entries/s (node {cu['node']} restarted with {cu['had']:,} entries in its own log)")
        if "rebuild_s" in cu:
            out.append(f"  of which {cu['rebuild_s']:.2f} s to start and rebuild its store from its own log, "
                       f"then {cu['after_rebuild_per_s']:,.0f} entries/s received and applied")
    if r["rss_mb_per_node"] is not None:
        mem = r["memory"]
        nodes = ", ".join(f"node {i}: {mb:,.1f}" for i, mb in mem["rss_mb"].items())
        out.append(f"memory with {mem['messages']:,} messages stored: max {r['rss_mb_per_node']:,.1f} MiB per node "
                   f"({nodes} MiB)")
    if r.get("membership"):
        m = r["membership"]
        out.append(f"membership: a wiped follower added and promoted in {m['learner']['add_to_promoted_s']:.2f} s "
                   f"with {m['messages']:,} messages stored")
        t = m["transfer"]
        out.append(f"  during {t['transfers']} leadership transfers the longest write took {t['longest_write_ms']} ms "
                   f"(median {t['median_write_ms']} ms, {t['errors']} errors); transfers took "
                   + ", ".join(f"{d:.0f}" for d in t["transfer_ms"]) + " ms")
    if r["failover"]:
        f = r["failover"]
        out.append(f"failover ({f['kills']} leader kills, a fresh default cluster): median {f['median_ms']:,.0f} ms, "
                   f"max {f['max_ms']:,.0f} ms from SIGKILL to the next acknowledged send")
        if f.get("pause"):  # history lines from before the pause kind have none
            p = f["pause"]
            out.append(f"failover ({p['kills']} leader pauses): median {p['median_ms']:,.0f} ms, "
                       f"max {p['max_ms']:,.0f} ms from SIGSTOP to the next acknowledged send")
    return "\n".join(out)
