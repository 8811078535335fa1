"""A node's HTTP side door: /metrics (Prometheus), /healthz and /events, in its own thread.

Job: serve what the loop counts (zrep.node.stats, the transport's counters, the
replica's indexes, the journal's timeline) to scrapers, `zrep cluster events`
and `zrep dashboard`, on the node's optional `metrics` address.

Invariants:
  * Nothing here takes a lock the loop waits on: `NodeCollector` reads plain
    ints and copies dicts/lists/deques with one C-level call each, at scrape
    time; the loop does no metrics work beyond its counters.
  * The server runs in daemon threads; the loop never calls into it after
    `start`. A scrape cannot stall the loop; it costs a moment of the GIL (a
    rendering of ~150 samples takes 2-3 ms), and /metrics is rendered at most
    every MIN_RENDER_S however many scrape it (later ones get that text).
  * Bad clients stay cheap (zrep.httpd.GuardedServer): at most MAX_CONNECTIONS
    at once, each cut REQUEST_DEADLINE_S after it was accepted (slowloris),
    over-long request lines or headers answered 414/431, garbage 400.
  * Read-only: GET only; nothing a request says reaches the node's state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from zrep.config import parse_http
from zrep.core.messages import Role
from zrep.httpd import GuardedServer, Handler
from zrep.node.stats import Buckets
from zrep.service.service import ROLE_NAMES

if TYPE_CHECKING:
    from zrep.node.loop import Node

STALL_S = 5.0  # /healthz says 503 when the loop has not turned for this long
MIN_RENDER_S = 0.25  # /metrics is rendered at most this often; scrapes in between get the last text


def _histogram(name: str, doc: str, labels: list[str], series: list[tuple[list[str], Buckets]]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for values, buckets in series:
        cumulative, total = buckets.cumulative()
        fam.add_metric(values, cumulative, total)
    return fam


class NodeCollector(Collector):
    """Reads the node's plain counters when scraped (another thread than the loop)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:  # noqa: C901 (a flat list of metrics)
        node = self.node
        rep, stats, comp = node.replica, node.stats, node.compaction
        role = rep.role
        fam = GaugeMetricFamily("zrep_role", "1 for the role this node has now", labels=["role"])
        for r in Role:
            fam.add_metric([ROLE_NAMES[r]], 1.0 if r == role else 0.0)
        yield fam
        yield GaugeMetricFamily("zrep_epoch", "The node's epoch (its promised or current leadership period)", value=rep.hs.epoch)
        yield GaugeMetricFamily("zrep_leader_id", "The leader this node knows (0: none)", value=rep.leader)
        config = rep.config
        yield GaugeMetricFamily("zrep_cluster_nodes", "Voting members of the configuration in force",
                                value=len(config.voters))
        yield GaugeMetricFamily("zrep_cluster_learners", "Learners (replicated to, never counted)",
                                value=len(config.learners))
        yield GaugeMetricFamily("zrep_config_index", "Log index of the configuration in force (0: the seeds)",
                                value=rep.config_index)
        yield GaugeMetricFamily("zrep_config_pending", "1 while the configuration in force is not committed",
                                value=1.0 if rep.config_index > rep.commit else 0.0)
        yield GaugeMetricFamily("zrep_voter", "1 if this node, under its incarnation, is a voter",
                                value=1.0 if config.counts(rep.id, rep.inc) else 0.0)
        yield CounterMetricFamily("zrep_leader_changes", "Times the known leader changed", value=stats.leader_changes)
        fam = CounterMetricFamily("zrep_elections", "Elections by outcome, as this node took part",
                                  labels=["outcome"])
        fam.add_metric(["started"], stats.elections_started)
        fam.add_metric(["won"], stats.elections_won)
        fam.add_metric(["lost"], stats.elections_lost)
        fam.add_metric(["stood_aside"], stats.elections_stood_aside)
        yield fam
        log = rep.log
        yield GaugeMetricFamily("zrep_log_first_index", "First index in the log (after compaction)", value=log.first_index)
        yield GaugeMetricFamily("zrep_log_last_index", "Last index in the log", value=log.last_index)
        yield GaugeMetricFamily("zrep_commit_index", "Highest index known committed", value=rep.commit)
        yield GaugeMetricFamily("zrep_applied_index", "Highest index applied to the store", value=rep.applied)
        if role == Role.LEADER:
            progress = dict(rep.tracker.progress)  # one C-level copy: the loop may replace entries meanwhile
            last = log.last_index
            match = GaugeMetricFamily("zrep_follower_match_index", "Leader only: each follower's match index",
                                      labels=["follower"])
            lag = GaugeMetricFamily("zrep_follower_lag_entries", "Leader only: entries each follower lacks",
                                    labels=["follower"])
            for peer, pr in sorted(progress.items()):
                match.add_metric([str(peer)], pr.match)
                lag.add_metric([str(peer)], max(0, last - pr.match))
            yield match
            yield lag
        requests = CounterMetricFamily("zrep_client_requests", "Client requests taken, by op", labels=["op"])
        for op, n in sorted(dict(stats.requests).items()):
            requests.add_metric([op], n)
        yield requests
        answers = CounterMetricFamily("zrep_client_answers", "Client answers by op and outcome (OK or the error code)",
                                      labels=["op", "outcome"])
        acked = refused = 0
        refused_by: dict[str, int] = {}
        for (op, outcome), n in sorted(dict(stats.answers).items()):
            answers.add_metric([op, outcome], n)
            if op in ("send", "delete"):
                if outcome == "OK":
                    acked += n
                else:
                    refused += n
                    refused_by[outcome] = refused_by.get(outcome, 0) + n
        yield answers
        yield CounterMetricFamily("zrep_writes_acknowledged", "Writes (send, delete) answered OK by this node",
                                  value=acked)
        fam = CounterMetricFamily("zrep_proposals_refused", "Writes answered with an error, by code",
                                  labels=["reason"])
        for reason, n in sorted(refused_by.items()):
            fam.add_metric([reason], n)
        yield fam
        yield _histogram("zrep_client_request_seconds", "From a request taken to its answer, by op", ["op"],
                         [([op], b) for op, b in sorted(dict(stats.latency).items())])
        yield _histogram("zrep_turn_requests", "Client requests taken per loop turn (that took any)", [],
                         [([], stats.turn_requests)])
        yield _histogram("zrep_wal_append_entries", "Entries per WAL append (group commit size)", [],
                         [([], stats.wal_batch)])
        yield _histogram("zrep_wal_fsync_seconds", "WAL flush (write + fdatasync) latency", [], [([], stats.fsync)])
        yield CounterMetricFamily("zrep_wal_fsync_bytes", "Bytes made durable by WAL flushes", value=stats.fsync_bytes)
        yield CounterMetricFamily("zrep_snapshots", "Snapshots written", value=stats.snapshots)
        yield CounterMetricFamily("zrep_snapshot_failures", "Snapshots that failed", value=stats.snapshot_failures)
        yield CounterMetricFamily("zrep_snapshot_seconds", "Time spent writing snapshots", value=stats.snapshot_seconds)
        yield GaugeMetricFamily("zrep_snapshot_index", "Index of the last durable snapshot", value=comp.index)
        yield CounterMetricFamily("zrep_compactions", "Log compactions (WAL rewrites)", value=stats.compactions)
        yield CounterMetricFamily("zrep_compaction_seconds", "Time the loop spent compacting",
                                  value=stats.compaction_seconds)
        yield CounterMetricFamily("zrep_snapshot_installs", "Snapshots installed from a leader", value=stats.installs)
        yield GaugeMetricFamily("zrep_store_messages", "Live messages in the store", value=stats.store_messages)
        yield GaugeMetricFamily("zrep_store_mailboxes", "Mailboxes in the store", value=stats.store_mailboxes)
        yield GaugeMetricFamily("zrep_store_bytes", "Body bytes of the live messages in the store",
                                value=stats.store_bytes)
        yield GaugeMetricFamily("zrep_snapshot_bytes", "Size of the durable snapshot (the store as of its index)",
                                value=stats.snapshot_bytes)
        yield GaugeMetricFamily("zrep_wal_bytes", "Bytes of the WAL file known durable", value=node.wal.synced_offset)
        counters = node.transport.counters.as_dict()
        fam = CounterMetricFamily("zrep_frames_dropped", "Frames refused or dropped by the transport, by cause",
                                  labels=["cause"])
        for cause, n in sorted(counters.items()):
            fam.add_metric([cause], n)
        fam.add_metric(["core_dropped"], rep.dropped)
        yield fam
        yield GaugeMetricFamily("zrep_pending_requests", "Client requests waiting for their entry or read",
                                value=len(node.service.pending))
        yield GaugeMetricFamily("zrep_uptime_seconds", "Seconds since the node started", value=time.monotonic() - node.started)


def health(node: Node) -> tuple[int, str]:
    """(HTTP status, one line): 200 when the loop turns and a leader of the node's epoch is known."""
    rep = node.replica
    stalled = time.monotonic() - node.turned_at
    if stalled > STALL_S:
        return 503, f"node {node.id}: the loop has not turned for {stalled:.1f} s"
    if rep.leader:
        return 200, f"node {node.id}: ok, {ROLE_NAMES[rep.role]}, leader {rep.leader} in epoch {rep.hs.epoch}"
    return 503, f"node {node.id}: no leader known in epoch {rep.hs.epoch} ({ROLE_NAMES[rep.role]})"


class _Server(GuardedServer):
    def __init__(self, address: tuple[str, int], node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        ProcessCollector(namespace="zrep", registry=self.registry)
        self._render_lock = threading.Lock()  # between HTTP threads only: the loop never takes it
        self._rendered = (-MIN_RENDER_S, b"")
        super().__init__(address, _Handler)

    def exposition(self) -> bytes:
        """The text of /metrics, rendered at most every MIN_RENDER_S whatever the number of scrapers:
        a rendering costs ~2-3 ms of the GIL, so a scrape storm cannot take more than ~1% of it."""
        with self._render_lock:
            at, text = self._rendered
            now = time.monotonic()
            if now - at >= MIN_RENDER_S:
                text = generate_latest(self.registry)
                self._rendered = (now, text)
            return text


class _Handler(Handler):
    server: _Server
    server_version = "zrep-metrics"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        node = self.server.node
        if url.path == "/metrics":
            self.send(200, CONTENT_TYPE_LATEST, self.server.exposition())
        elif url.path == "/healthz":
            code, line = health(node)
            self.send(code, "text/plain; charset=utf-8", (line + "\n").encode())
        elif url.path == "/events":
            self._events(node, parse_qs(url.query))
        else:
            self.send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /events\n")

    def _events(self, node: Node, query: dict[str, list[str]]) -> None:
        try:
            after = int(query.get("after", ["0"])[0])
            since = float(query.get("since", ["0"])[0])
        except ValueError:
            self.send(400, "text/plain; charset=utf-8", b"after must be an integer, since a unix time\n")
            return
        journal = node.journal
        body = {"node": node.id, "boot": journal.boot, "seq": journal.seq, "events": journal.since(after, since)}
        self.send(200, "application/json", json.dumps(body, default=str).encode())


class MetricsServer:
    """The running HTTP server of one node; `close()` stops it."""

    def __init__(self, node: Node, bind: str) -> None:
        self.server = _Server(parse_http(bind), node)
        self.thread = self.server.serve_in_thread(f"zrep-metrics-{node.id}")

    def close(self) -> None:
        self.server.close()
