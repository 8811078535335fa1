"""Runs `zrep.bench.load` worker processes for one load level and merges what they report.

Job: split a level (requests in flight, request count, warm-up) across a few
workers, start them (each in its own process group), hold them at a barrier
until every one has warmed up so that the measured windows overlap, pass on
their progress, collect their results and merge them: throughput = all acks
/ the wall time from the first worker's start to the last one's end;
percentiles over every latency sample.

Invariants: every read of a worker's output has a deadline; every worker
started is killed and reaped on leaving the `Workers` block, on error or
Ctrl-C too. Separate processes rather than threads: the load generator must
not share one interpreter (and its lock) with what it measures or with itself.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import selectors
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from zrep.bench.load import NO_ANSWER_S
from zrep.errors import ZrepError
from zrep.local.processes import kill_all, spawn

STARTUP_S = 30.0  # a worker's interpreter start and connect, on a busy 2-core machine


class BenchError(ZrepError):
    """The benchmark could not measure: one line saying what happened and what to do."""


# ---------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker measured (its `result` line)."""

    count: int
    errors: dict[str, int]
    start: float  # time.monotonic(), comparable across processes (Linux: CLOCK_MONOTONIC is system-wide)
    end: float
    latencies_ms: list[float]  # sorted
    cpu_s: float = 0.0  # the worker's CPU time in its window

    @classmethod
    def from_json(cls, text: str) -> WorkerReport:
        d = json.loads(text)
        return cls(int(d["count"]), {str(k): int(v) for k, v in d["errors"].items()}, float(d["start"]),
                   float(d["end"]), [float(x) for x in d["latencies_ms"]], float(d.get("cpu_s", 0.0)))


@dataclass(frozen=True, slots=True)
class LevelResult:
    """One level, all workers merged."""

    acked: int
    errors: dict[str, int]
    seconds: float  # wall time of the measured window
    per_s: float
    p50_ms: float | None  # None when the workers sent no latencies
    p99_ms: float | None
    max_ms: float | None
    client_cpu_s: float = 0.0  # CPU time of all workers in their windows
    # CPU per acknowledged request, in µs: {"leader": id, "nodes": {"id": µs}, "clients": µs}
    # (zrep.bench.suite fills it in: it knows the node processes).
    cpu_us_per_req: dict[str, Any] | None = None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_s": round(self.per_s, 1), "acked": self.acked, "errors": dict(self.errors),
                               "seconds": round(self.seconds, 3)}
        if self.max_ms is not None:
            out.update(p50_ms=self.p50_ms, p99_ms=self.p99_ms, max_ms=self.max_ms)
        if self.cpu_us_per_req is not None:
            out["cpu_us_per_req"] = self.cpu_us_per_req
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (a value that was measured, never an interpolation)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def merge(reports: Iterable[WorkerReport]) -> LevelResult:
    reports = list(reports)
    if not reports:
        raise ValueError("no worker reports")
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r.errors)
    acked = sum(r.count for r in reports)
    seconds = max(r.end for r in reports) - min(r.start for r in reports)
    samples = list(heapq.merge(*(r.latencies_ms for r in reports)))
    pct: tuple[float | None, ...] = (None, None, None)
    if samples:
        pct = (round(percentile(samples, 50), 3), round(percentile(samples, 99), 3), samples[-1])
    return LevelResult(acked, dict(sorted(errors.items())), seconds, acked / seconds if seconds > 0 else 0.0, *pct,
                       client_cpu_s=sum(r.cpu_s for r in reports))


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- the processes


class Workers:
    """Worker processes speaking bench_load's line protocol. Use as a context manager."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.procs: list[subprocess.Popen[bytes]] = []
        self._errs: list[Any] = []
        self._buf: list[bytes] = []
        self.progress: list[tuple[int, int]] = []  # (acked, errors) per worker

    def __enter__(self) -> Workers:
        try:
            for cmd in self.commands:
                err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker can never block on it
                self._errs.append(err)
                self.procs.append(spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0))
                self._buf.append(b"")
                self.progress.append((0, 0))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        kill_all(self.procs)
        for err in self._errs:
            err.close()

    def go(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")

    def _died(self, i: int, waiting_for: str) -> BenchError:
        p = self.procs[i]
        try:
            code = p.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        self._errs[i].seek(0)
        lines = self._errs[i].read().decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "nothing on stderr"
        return BenchError(f"load worker {i + 1} ended (exit code {code}) before '{waiting_for}': {last}; "
                          f"try it alone: {shlex.join(['python', *self.commands[i][1:]])}")

    def _take(self, i: int, word: str) -> str | None:
        """Consume worker i's complete lines up to the first that starts with `word`; its text."""
        while b"\n" in self._buf[i]:
            line, self._buf[i] = self._buf[i].split(b"\n", 1)
            head, _, rest = line.decode().partition(" ")
            if head == "progress":
                acked, errors = rest.split()
                self.progress[i] = (int(acked), int(errors))
            elif head == word:
                return rest
        return None

    def wait_for(self, word: str, timeout: float, on_progress: Callable[[], None] | None = None) -> list[str]:
        """The text after `word` in each worker's next line starting with it, in worker order."""
        got = {i: text for i in range(len(self.procs)) if (text := self._take(i, word)) is not None}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for i, p in enumerate(self.procs):
                if i not in got:
                    assert p.stdout is not None
                    sel.register(p.stdout, selectors.EVENT_READ, i)
            while len(got) < len(self.procs):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [str(i + 1) for i in range(len(self.procs)) if i not in got]
                    raise BenchError(f"load workers {', '.join(missing)} sent no '{word}' within {timeout:.0f} s: "
                                     "the cluster is too slow or stuck; check it, or lower the counts")
                for key, _ in sel.select(min(left, 1.0)):
                    i = key.data
                    data = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
                    if not data:
                        raise self._died(i, word)
                    self._buf[i] += data
                    text = self._take(i, word)
                    if text is not None:
                        got[i] = text
                        sel.unregister(key.fileobj)
                if on_progress is not None:
                    on_progress()
        return [got[i] for i in range(len(self.procs))]


# ---------------------------------------------------------------- one level


def run_level(rpc: str | Sequence[str], *, op: str = "send", in_flight: int, workers: int, count: int, seconds: float,
              warmup: int = 0, latencies: bool = True, mailbox: str = "bench", body_bytes: int = 100,
              batch: bool = True, on_progress: Callable[[int, int, float], None] | None = None,
              on_go: Callable[[], None] | None = None, curve: tuple[str, dict[str, bytes]] | None = None) -> LevelResult:
    """Run one level against `rpc` (or, given several, worker i against the i-th,
    round robin) and merge the workers' reports.

    One worker for one request in flight; else up to `workers` workers, each
    with its share of the requests in flight, of the count and of the warm-up.
    `batch`: the workers send ClientBatch frames (else one frame per request).
    `on_progress(acked, errors, seconds since go)` is called as reports come;
    `on_go()` just before the workers leave the barrier (the measured window begins).
    """
    n = 1 if in_flight == 1 else max(1, min(workers, in_flight, count))
    tag = uuid.uuid4().hex[:12]  # client ids unique across levels and runs: the store remembers them
    rpcs = [rpc] if isinstance(rpc, str) else list(rpc)
    commands = [
        [sys.executable, "-m", "zrep.bench.load", "--rpc", rpcs[i % len(rpcs)], "--op", op, "--client", f"bench-{tag}-{i + 1}",
         "--mailbox", mailbox, "--body-bytes", str(body_bytes), "--in-flight", str(f), "--count", str(c),
         "--seconds", str(seconds), "--warmup", str(w), *([] if latencies else ["--no-latencies"]),
         *([] if batch else ["--no-batch"]),
         *(["--key", curve[0], "--server-key", curve[1][rpcs[i % len(rpcs)]].decode()] if curve else [])]
        for i, (f, c, w) in enumerate(zip(split(in_flight, n), split(count, n), split(warmup, n)))
    ]
    with Workers(commands) as w:
        w.wait_for("ready", STARTUP_S + seconds + NO_ANSWER_S)
        if on_go is not None:
            on_go()
        started = time.monotonic()
        w.go()

        def progress() -> None:
            if on_progress is not None:
                on_progress(sum(a for a, _ in w.progress), sum(e for _, e in w.progress), time.monotonic() - started)

        results = w.wait_for("result", seconds + 2 * NO_ANSWER_S, progress)
    return merge(WorkerReport.from_json(r) for r in results)
