"""`ClusterWatch`: what the dashboard shows, refreshed once a second from the nodes, over the network.

Job: in its own thread, every REFRESH_S ask every node for its status (the
client protocol), scrape its /metrics and read its new /events; every
MAILBOXES_S list the mailboxes; keep the last HISTORY_S of acknowledged
writes/s and their p99 latency; publish it all as one JSON-ready dict
(`state()`), replaced whole, so a page request never sees half an update.

Invariants: read-only (status, mailboxes, GET); each fetch has a short
timeout, so a dead or paused node makes it "down", never a stall; nothing
here imports zrep.node. Writes/s is the sum over the nodes of their
zrep_writes_acknowledged_total (each write is counted by the node that
answered it); p99 is read from the summed latency histograms of `send`.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from zrep.client import Client
from zrep.config import ClusterConfig
from zrep.dashboard.events import EventReader
from zrep.errors import ZrepError

REFRESH_S = 1.0
MAILBOXES_S = 2.0
HISTORY_S = 300
TIMELINE_EVENTS = 300
MAX_MAILBOXES = 200
FETCH_TIMEOUT_S = 0.8


def scrape(url: str, timeout: float = FETCH_TIMEOUT_S) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value)]} of one /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for have, value in samples.get(name, ()):
        if all(have.get(k) == v for k, v in labels.items()):
            return value
    return None


def _send_buckets(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[float, float]:
    return {float(lab["le"]): v for lab, v in samples.get("zrep_client_request_seconds_bucket", ())
            if lab.get("op") == "send"}


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of cumulative buckets {le: count}, interpolated inside its bucket (as PromQL does)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for b in bounds:
        if buckets[b] >= rank:
            if b == float("inf"):
                return lower_bound
            span = buckets[b] - lower_count
            return lower_bound + (b - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = b, buckets[b]
    return lower_bound


class ClusterWatch:
    """Polls the cluster in a daemon thread; `state()` is the latest picture."""

    def __init__(self, cfg: ClusterConfig, refresh_s: float = REFRESH_S) -> None:
        self.cfg = cfg
        self.refresh_s = refresh_s
        self._client = Client(cfg, timeout_s=1.0, attempt_timeout_s=0.5)
        self._events = EventReader(cfg, timeout=FETCH_TIMEOUT_S)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(cfg.nodes)), thread_name_prefix="zrep-scrape")
        self._timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_EVENTS)
        self._history: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_S / refresh_s) + 1)
        self._last_totals: tuple[float, float, dict[float, float]] | None = None  # (t, acked, buckets)
        self._mailboxes: list[list[Any]] = []
        self._mailboxes_error = ""
        self._state: dict[str, Any] = {"t": 0.0, "nodes": [], "leader": None, "history": [], "events": [],
                                       "mailboxes": [], "unreachable": {}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zrep-dashboard-watch", daemon=True)
        # Its own thread and Client (a Client is single-threaded): listing waits for a leader.
        self._boxes_thread = threading.Thread(target=self._run_mailboxes, name="zrep-dashboard-boxes", daemon=True)

    def start(self) -> ClusterWatch:
        self._thread.start()
        self._boxes_thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._boxes_thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._events.close()
        self._client.close()

    def state(self) -> dict[str, Any]:
        return self._state

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._state = self.refresh()
            except Exception as e:  # noqa: BLE001 (the page shows it; the next turn tries again)
                self._state = dict(self._state, error=f"{type(e).__name__}: {e}")
            self._stop.wait(max(0.05, self.refresh_s - (time.monotonic() - started)))

    def refresh(self) -> dict[str, Any]:
        now = time.time()
        scrapes = {n.id: self._pool.submit(scrape, n.metrics) for n in self.cfg.nodes if n.metrics}
        statuses = self._client.status(timeout_s=FETCH_TIMEOUT_S)
        metrics: dict[int, dict[str, Any] | None] = {}
        for node, fut in scrapes.items():
            try:
                metrics[node] = fut.result()
            except (OSError, ValueError):
                metrics[node] = None
        timeline = self._events.read(now - HISTORY_S if not self._timeline else 0.0)
        self._timeline.extend(timeline.events)
        leader = self._leader(statuses)
        nodes = [self._card(s, metrics.get(s.id), statuses, leader) for s in statuses]
        self._record(now, metrics)
        return {"t": now, "nodes": nodes, "leader": leader, "history": list(self._history),
                "events": sorted(self._timeline, key=lambda e: (e.get("t", 0), e.get("node", 0), e.get("seq", 0))),
                "mailboxes": self._mailboxes, "mailboxes_error": self._mailboxes_error,
                "unreachable": {str(k): v for k, v in timeline.unreachable.items()}}

    @staticmethod
    def _leader(statuses: list[Any]) -> int | None:
        """The leader a majority of the live nodes agree on, of the highest epoch; None if none."""
        best: tuple[int, int] | None = None
        for s in statuses:
            if s.up and s.role == "leader" and s.epoch is not None and (best is None or s.epoch > best[0]):
                best = (s.epoch, s.id)
        return best[1] if best else None

    def _card(self, s: Any, m: dict[str, Any] | None, statuses: list[Any], leader: int | None) -> dict[str, Any]:
        lead = next((x for x in statuses if x.id == leader), None)
        lag = None
        if s.up and lead is not None and lead.last_index is not None and s.last_index is not None:
            lag = max(0, lead.last_index - s.last_index)
        rss = _value(m, "zrep_process_resident_memory_bytes") if m else None
        return {"id": s.id, "up": s.up, "role": s.role or "down", "epoch": s.epoch, "leader": s.leader,
                "last_index": s.last_index, "commit": s.commit, "applied": s.applied, "lag": lag,
                "last_heard_ms": s.last_heard_ms, "rss_mb": round(rss / 2**20, 1) if rss else None,
                "pid": s.raw.get("pid") if s.raw else None, "error": s.error,
                "metrics": self.cfg.node(s.id).metrics, "healthy_metrics": m is not None}

    def _record(self, now: float, metrics: dict[int, dict[str, Any] | None]) -> None:
        live = [m for m in metrics.values() if m is not None]
        acked = sum(_value(m, "zrep_writes_acknowledged_total") or 0.0 for m in live)
        buckets: dict[float, float] = {}
        for m in live:
            for le, v in _send_buckets(m).items():
                buckets[le] = buckets.get(le, 0.0) + v
        last, self._last_totals = self._last_totals, (now, acked, buckets)
        if last is None:
            return
        t0, acked0, buckets0 = last
        span = max(1e-3, now - t0)
        delta = {le: max(0.0, v - buckets0.get(le, 0.0)) for le, v in buckets.items()}
        p99 = quantile(delta, 0.99)
        # A node that went down takes its counts with it: never show a negative rate.
        self._history.append({"t": now, "writes_per_s": round(max(0.0, acked - acked0) / span, 1),
                              "p99_ms": round(p99 * 1000, 2) if p99 is not None else None})

    def _run_mailboxes(self) -> None:
        client = Client(self.cfg, timeout_s=MAILBOXES_S, attempt_timeout_s=0.5)
        try:
            while not self._stop.is_set():
                try:
                    boxes = client.mailboxes()
                    self._mailboxes = [[b.name, b.count, b.bytes] for b in
                                       sorted(boxes, key=lambda b: -b.count)][:MAX_MAILBOXES]
                    self._mailboxes_error = ""
                except (ZrepError, OSError) as e:
                    self._mailboxes_error = str(e)
                self._stop.wait(MAILBOXES_S)
        finally:
            client.close()
