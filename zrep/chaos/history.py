"""Operation histories of a chaos run: write them, load them strictly, pair them.

Job: the one file format the chaos tool records and `zrep verify` (or any
Jepsen/Elle-style checker) reads. JSON lines, one event a line:

    {"process": P, "type": "invoke"|"ok"|"fail"|"info", "f": F,
     "key": MAILBOX, "value": V, "time": NANOSECONDS, ...extras}

`f` and the shape of `value` per event:

    send        invoke: the body (str, unique per run)
                ok:     the body again or null; extras "offset" (int >= 0, its
                        0-based offset in the mailbox) and "index" (int >= 1, its
                        log index) are required
    read        invoke: {"from": K} (int >= 0), optionally "limit" (int >= 1)
    stale_read  ok:     list of bodies (str) of the live messages with offset >= K,
                        in offset order; optional extra "offsets" (list of int,
                        one per body) when the client knows them
    delete      invoke: list of distinct offsets (int >= 0), at least one
                ok:     list of the offsets deleted

`fail` and `info` events may carry any value. `info` means the outcome is
unknown: the op may take effect at any time after its invoke, even after the
history ends. `fail` means it certainly did not take effect. Other keys are
kept as extras (error text, node ids...). Events of process "nemesis" (type
"info", any f and value, key optional) are annotations: loaded, never paired.

Invariants
- A file that `load_history` accepts has non-decreasing times, and every event
  has the fields and types above. Any problem raises HistoryError naming the
  line, on one line.
- `HistoryWriter` only writes events that `load_history` accepts: it refuses a
  second invoke by a busy process and a second completion of one op, takes the
  time and writes the line under one lock (so file order is time order), and
  flushes every line (a killed chaos tool loses at most the line being written).
- `pair_ops` gives each invoke exactly one outcome. An invoke that never
  completed is `info` (unknown). A process may invoke again after an `info`.

Must not import zmq or any zrep module: the history is plain data.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FUNCTIONS = ("send", "read", "stale_read", "delete")
TYPES = ("invoke", "ok", "fail", "info")
OUTCOMES = ("ok", "fail", "info")
NEMESIS = "nemesis"
_BASE_KEYS = ("process", "type", "f", "key", "value", "time")


class HistoryError(ValueError):
    """The history file (or an event about to be written) is malformed."""


@dataclass(frozen=True, slots=True)
class Event:
    process: int | str
    type: str
    f: str
    key: str | None  # None only for nemesis annotations
    value: Any
    time: int  # nanoseconds, monotonic
    extras: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # 1-based line in the file; 0 when not read from a file

    def to_json(self) -> str:
        obj: dict[str, Any] = {"process": self.process, "type": self.type, "f": self.f,
                               "key": self.key, "value": self.value, "time": self.time}
        obj.update(self.extras)
        try:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise HistoryError(f"event is not plain JSON: {e}") from None


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: an invoke and its outcome."""

    process: int | str
    f: str
    key: str
    value: Any  # the invoke value
    type: str  # "ok" | "fail" | "info"
    result: Any  # the completion value (None for info without one)
    extras: dict[str, Any]  # the completion's extras (offset, index, offsets, ...)
    invoke_time: int
    complete_time: int | None  # None for info: the op may take effect until forever
    invoke_line: int = 0
    complete_line: int | None = None


# --- validation -----------------------------------------------------------------


def _is_int(v: Any, low: int = 0) -> bool:
    return type(v) is int and v >= low  # bool is not an int here


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise HistoryError(what)


def _check_process(p: Any) -> None:
    _need(_is_int(p) or (type(p) is str and p != ""), f"process must be an int >= 0 or a non-empty str, got {p!r}")


def _check_invoke_value(f: str, v: Any) -> None:
    if f == "send":
        _need(type(v) is str, f"send invoke value must be the body (str), got {v!r}")
    elif f in ("read", "stale_read"):
        _need(type(v) is dict and "from" in v and set(v) <= {"from", "limit"},
              f'{f} invoke value must be {{"from": K}} (optionally "limit"), got {v!r}')
        _need(_is_int(v["from"]), f"{f} invoke 'from' must be an int >= 0, got {v['from']!r}")
        _need("limit" not in v or _is_int(v["limit"], 1), f"{f} invoke 'limit' must be an int >= 1")
    else:
        _need(type(v) is list and len(v) > 0 and all(_is_int(o) for o in v) and len(set(v)) == len(v),
              f"delete invoke value must be a non-empty list of distinct offsets (int >= 0), got {v!r}")


def _check_ok(f: str, v: Any, extras: dict[str, Any]) -> None:
    if f == "send":
        _need(v is None or type(v) is str, f"send ok value must be the body or null, got {v!r}")
        _need(_is_int(extras.get("offset")), "send ok needs 'offset' (int >= 0)")
        _need(_is_int(extras.get("index"), 1), "send ok needs 'index' (int >= 1)")
    elif f in ("read", "stale_read"):
        _need(type(v) is list and all(type(b) is str for b in v), f"{f} ok value must be a list of bodies (str)")
        offs = extras.get("offsets")
        _need(offs is None or (type(offs) is list and len(offs) == len(v) and all(_is_int(o) for o in offs)),
              f"{f} ok 'offsets' must be a list of ints >= 0, one per body")
    else:
        _need(type(v) is list and all(_is_int(o) for o in v), "delete ok value must be a list of offsets")


def validate_event(obj: Any) -> Event:
    """Check one decoded JSON object against the format; HistoryError if it is off."""
    _need(type(obj) is dict, f"an event must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in _BASE_KEYS if k not in obj and not (k == "key" and obj.get("process") == NEMESIS)]
    _need(not missing, f"missing field(s) {', '.join(missing)}")
    p, t, f, key, value, ts = (obj.get(k) for k in _BASE_KEYS)
    _check_process(p)
    _need(t in TYPES, f"type must be one of {', '.join(TYPES)}, got {t!r}")
    _need(_is_int(ts), f"time must be an int >= 0 (nanoseconds), got {ts!r}")
    extras = {k: v for k, v in obj.items() if k not in _BASE_KEYS}
    if p == NEMESIS:
        _need(t == "info" and type(f) is str and (key is None or type(key) is str),
              "nemesis events must be type info with a str f")
        return Event(p, t, f, key, value, ts, extras)
    _need(f in FUNCTIONS, f"f must be one of {', '.join(FUNCTIONS)}, got {f!r}")
    _need(type(key) is str and key != "", f"key must be a non-empty mailbox name, got {key!r}")
    if t == "invoke":
        _check_invoke_value(f, value)
    elif t == "ok":
        _check_ok(f, value, extras)
    return Event(p, t, f, key, value, ts, extras)


def load_history(path: str | Path) -> list[Event]:
    """All events of a history file, validated; HistoryError('line N: ...') on the first problem."""
    events: list[Event] = []
    last = -1
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            try:
                obj = json.loads(text)
            except ValueError as e:
                raise HistoryError(f"line {n}: not JSON ({e.msg})") from None
            try:
                ev = validate_event(obj)
            except HistoryError as e:
                raise HistoryError(f"line {n}: {e}") from None
            if ev.time < last:
                raise HistoryError(f"line {n}: time {ev.time} is before the previous line's {last}; "
                                   "events must be in time order")
            last = ev.time
            events.append(Event(ev.process, ev.type, ev.f, ev.key, ev.value, ev.time, ev.extras, n))
    return events


# --- pairing --------------------------------------------------------------------


def _where(ev: Event) -> str:
    return f"line {ev.line}" if ev.line else f"event at time {ev.time}"


def _pair(inv: Event, done: Event) -> Op:
    if done.f != inv.f or done.key != inv.key:
        raise HistoryError(f"{_where(done)}: process {done.process!r} completes {done.f} {done.key!r} but "
                           f"invoked {inv.f} {inv.key!r} at {_where(inv)}")
    if done.type == "ok" and inv.f == "send" and done.value is not None and done.value != inv.value:
        raise HistoryError(f"{_where(done)}: send ok value {done.value!r} is not the invoked body {inv.value!r}")
    end = None if done.type == "info" else done.time
    return Op(inv.process, inv.f, inv.key, inv.value, done.type, done.value, dict(done.extras),
              inv.time, end, inv.line, done.line or None)


def pair_ops(events: Iterable[Event]) -> list[Op]:
    """Pair invokes with their outcome, in invoke order. Unfinished invokes become info."""
    open_ops: dict[int | str, tuple[int, Event]] = {}
    slots: list[Op | Event] = []  # an Event marks a slot still open
    for ev in events:
        if ev.process == NEMESIS:
            continue
        if ev.type == "invoke":
            if ev.process in open_ops:
                prev = open_ops[ev.process][1]
                raise HistoryError(f"{_where(ev)}: process {ev.process!r} invokes while its {prev.f} from "
                                   f"{_where(prev)} has no outcome")
            open_ops[ev.process] = (len(slots), ev)
            slots.append(ev)
            continue
        if ev.process not in open_ops:
            raise HistoryError(f"{_where(ev)}: {ev.type} for process {ev.process!r}, which has no open invoke")
        slot, inv = open_ops.pop(ev.process)
        slots[slot] = _pair(inv, ev)
    out: list[Op] = []
    for s in slots:
        if isinstance(s, Event):  # never completed: outcome unknown
            out.append(Op(s.process, s.f, s.key, s.value, "info", None, {}, s.time, None, s.line, None))
        else:
            out.append(s)
    return out


# --- writing --------------------------------------------------------------------


@dataclass(slots=True)
class Handle:
    """An invoked op waiting for its outcome; give it back to `complete`."""

    process: int | str
    f: str
    key: str
    invoke_time: int
    done: bool = False


class HistoryWriter:
    """Thread-safe appender of history events; one flushed line per event.

    `invoke(...)` returns a Handle; `complete(handle, "ok"|"fail"|"info", value, **extras)`
    records its outcome. Events are validated before they are written.
    """

    def __init__(self, path: str | Path, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._file = open(path, "a", encoding="utf-8")
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: set[int | str] = set()
        self._last = -1

    def invoke(self, process: int | str, f: str, key: str, value: Any) -> Handle:
        with self._lock:
            if process in self._busy:
                raise HistoryError(f"process {process!r} already has an op without outcome")
            now = self._write({"process": process, "type": "invoke", "f": f, "key": key, "value": value})
            self._busy.add(process)
        return Handle(process, f, key, now)

    def complete(self, handle: Handle, type: str, value: Any = None, **extra: Any) -> None:
        if type not in OUTCOMES:
            raise HistoryError(f"outcome must be one of {', '.join(OUTCOMES)}, got {type!r}")
        clash = set(extra) & set(_BASE_KEYS)
        if clash:
            raise HistoryError(f"extras may not redefine {', '.join(sorted(clash))}")
        with self._lock:
            if handle.done:
                raise HistoryError(f"the {handle.f} of process {handle.process!r} already has an outcome")
            self._write({"process": handle.process, "type": type, "f": handle.f, "key": handle.key,
                         "value": value, **extra})
            handle.done = True
            self._busy.discard(handle.process)

    def note(self, f: str, value: Any = None, **extra: Any) -> None:
        """A nemesis annotation (kill, pause, partition...); checkers ignore it."""
        with self._lock:
            self._write({"process": NEMESIS, "type": "info", "f": f, "key": None, "value": value, **extra})

    def _write(self, obj: dict[str, Any]) -> int:
        # Time taken under the lock, so line order is time order.
        now = max(self._clock(), self._last)
        obj["time"] = now
        ev = validate_event(obj)
        line = ev.to_json()  # serialising before writing: an unserialisable value writes nothing
        self._file.write(line + "\n")
        self._file.flush()
        self._last = now
        return now

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
