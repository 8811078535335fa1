"""The cluster's event timeline: every node's /events, merged and sorted by time.

Job: ask each node's metrics address for its ring of recent events
(zrep.node.journal), merge them into one list sorted by wall-clock time,
follow new ones (by per-node sequence number, noticing a restart by the
node's boot time), and format a line per event.

Invariants: a node that does not answer within the timeout is reported in
`Timeline.unreachable` and skipped, never waited on longer; events are never
repeated by `follow` (per node: (boot, seq) only moves forward). Nodes'
clocks are trusted as they are: events of one node keep their order (seq),
across nodes the order is as good as the clocks.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from zrep.config import ClusterConfig

FETCH_TIMEOUT_S = 2.0
_SINCE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_since(text: str) -> float:
    """Seconds in "10m", "90s", "1.5h", "2d" (a bare number is seconds); ValueError otherwise."""
    m = _SINCE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: write 10m, 90s, 2h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def get_json(url: str, timeout: float = FETCH_TIMEOUT_S) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@dataclass
class Timeline:
    """Merged events (oldest first) and the nodes that could not be asked, with why."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unreachable: dict[int, str] = field(default_factory=dict)


class EventReader:
    """Reads and follows the timeline of every node of `cfg` that has a metrics address."""

    def __init__(self, cfg: ClusterConfig, timeout: float = FETCH_TIMEOUT_S) -> None:
        self.sources = {n.id: n.metrics for n in cfg.nodes if n.metrics}
        self.without = [n.id for n in cfg.nodes if not n.metrics]
        self.timeout = timeout
        self._seen: dict[int, tuple[float, int]] = {}  # node -> (boot, last seq) already returned
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.sources)), thread_name_prefix="zrep-events")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def read(self, since_t: float = 0.0) -> Timeline:
        """New events of every node (all of them the first time) not older than `since_t`."""
        out = Timeline()
        futures = {node: self._pool.submit(self._one, node, url, since_t) for node, url in self.sources.items()}
        for node, fut in futures.items():
            try:
                out.events += fut.result()
            except (OSError, ValueError, urllib.error.URLError) as e:
                out.unreachable[node] = _why(e)
        for node in self.without:
            out.unreachable[node] = "no metrics address in the cluster file"
        out.events.sort(key=lambda e: (e.get("t", 0.0), e.get("node", 0), e.get("seq", 0)))
        return out

    def _one(self, node: int, url: str, since_t: float) -> list[dict[str, Any]]:
        boot, after = self._seen.get(node, (0.0, 0))
        body = get_json(f"{url}/events?after={after}&since={since_t}", self.timeout)
        if body.get("boot") != boot and after:  # restarted: its sequence numbers start over
            body = get_json(f"{url}/events?since={since_t}", self.timeout)
        events = [e for e in body.get("events", []) if isinstance(e, dict)]
        self._seen[node] = (body.get("boot", 0.0), int(body.get("seq", after)))
        return events

    def follow(self, since_t: float, poll_s: float = 0.5) -> Iterator[Timeline]:
        """The timeline since `since_t`, then every `poll_s` what is new; forever."""
        yield self.read(since_t)
        while True:
            time.sleep(poll_s)
            yield self.read(since_t)


def _why(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason if reason is not None else e) or type(e).__name__


def format_event(e: dict[str, Any]) -> str:
    """One line: local time with milliseconds, node, kind, text."""
    t = float(e.get("t", 0.0))
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    return f"{stamp}  node {e.get('node', '?')}  {e.get('event', '?'):<18} {e.get('text', '')}"
