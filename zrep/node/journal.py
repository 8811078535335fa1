"""A node's log lines and its event timeline: one record per thing worth telling.

Job: every line the node logs goes through `Journal.event(kind, text, **fields)`:
it is written to the log (text, as before, or one JSON object per line with
`--log-format json`) and kept in a bounded ring with its wall-clock time, which
the metrics server hands out as the node's timeline (`/events`, read by
`zrep cluster events` and `zrep dashboard`).

Event kinds (the `event` field): started, stopped, warning, role, leader,
leader_lost, election_started, election_claim, election_won, election_lost,
stood_aside, following, stepped_down, snapshot, snapshot_failed, compaction,
install, snapshot_ship, follower_behind, follower_caught_up, slow_fsync,
refused_peer, refused_client, note (anything else the core says).

Invariants:
  * Only the loop thread appends; the metrics thread copies the ring with one
    C-level `list(deque)` call under the GIL (no lock, the loop never waits).
  * The ring is bounded (RING_EVENTS): old events fall off, memory stays flat.
  * Each event has a per-node sequence number and the node's boot time, so a
    follower of the timeline can ask for "after seq N" and notice a restart.
  * The text format of a line is unchanged: "<local time> node <id>: <text>".
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

RING_EVENTS = 2000

# The core's notes (zrep.core.replica._note) as timeline kinds, by the words they start with
# (after "node N epoch E tick T: "). The first match wins; anything else is a "note".
_NOTE_KINDS: tuple[tuple[str, str], ...] = (
    ("suspects leader", "election_started"),
    ("claims epoch", "election_claim"),
    ("is leader with promises", "election_won"),
    ("got promises from", "election_lost"),
    ("a better-ranked node will run", "stood_aside"),
    ("a peer still hears a healthy leader", "stood_aside"),
    ("only ", "stood_aside"),  # "only K of N answered; not running"
    ("following node", "following"),
    ("saw epoch", "stepped_down"),
    ("heard from", "stepped_down"),  # a leader that lost its majority
    ("installed the snapshot", "install"),
    ("node ", "snapshot_ship"),  # "node P needs entry ... below the log start" and the like
)


def note_kind(text: str) -> str:
    """The timeline kind of a core note (its text after the "node N epoch E tick T: " prefix)."""
    for start, kind in _NOTE_KINDS:
        if text.startswith(start):
            if kind == "snapshot_ship" and "below the log start" not in text:
                return "note"
            return kind
    return "note"


def stamp(t: float) -> str:
    """Local time with milliseconds, as every log line starts."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Journal:
    """The node's log writer and event ring."""

    def __init__(self, node_id: int, write: Callable[[str], None], log_format: str = "text",
                 ring: int = RING_EVENTS) -> None:
        if log_format not in ("text", "json"):
            raise ValueError(f"log format {log_format!r}: use text or json")
        self.node_id = node_id
        self.boot = time.time()
        self.ring: deque[dict[str, Any]] = deque(maxlen=ring)
        self.seq = 0
        self._write = write
        self._json = log_format == "json"

    def event(self, kind: str, text: str, level: str = "info", **fields: Any) -> None:
        t = time.time()
        self.seq += 1
        record = {"t": t, "seq": self.seq, "node": self.node_id, "event": kind, "level": level, "text": text}
        if fields:
            record["fields"] = fields
        self.ring.append(record)
        if self._json:
            line = {"time": stamp(t), "ts": round(t, 3), "node": self.node_id, "level": level, "event": kind,
                    "message": text, "fields": fields}
            self._write(json.dumps(line, ensure_ascii=False, default=str))
        else:
            self._write(f"{stamp(t)} node {self.node_id}: {text}")

    def say(self, text: str) -> None:
        """A line of the node's own (a warning if it says so)."""
        if text.startswith("warning: "):
            self.event("warning", text, level="warning")
        else:
            self.event("note", text)

    def since(self, after_seq: int = 0, since_t: float = 0.0) -> list[dict[str, Any]]:
        """The ring's events after `after_seq` and not older than `since_t` (another thread may call it)."""
        events = list(self.ring)  # one C call: atomic under the GIL
        return [e for e in events if e["seq"] > after_seq and e["t"] >= since_t]
