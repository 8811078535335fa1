"""zrep.chaos.history and zrep.chaos.verify: the history format, and the checker on valid and broken runs.

Hand-written histories cover each violation the chaos tool must catch; a small
sequential model of the mailbox service, run with random real-time windows,
unknown outcomes and failures, generates valid concurrent histories that must
all be accepted, and mutations of them that must all be rejected.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zrep.chaos.history import (
    Event,
    HistoryError,
    HistoryWriter,
    Op,
    load_history,
    pair_ops,
    validate_event,
)
from zrep.cli.verify import verify
from zrep.chaos.verify import (
    ACKED,
    ACKS,
    DUPS,
    FAILED,
    FINAL,
    LIN,
    PHANTOM,
    STALE,
    Report,
    check,
    load_final,
)

# --- building histories by hand ------------------------------------------------------------------

S = 1_000_000_000  # times below are in seconds, stored in nanoseconds


def send(body: str, t0: float, t1: float | None, offset: int | None = None, *, type: str = "ok",
         p: int | str = "s", key: str = "m", index: int | None = None) -> Op:
    extras = {} if type != "ok" else {"offset": offset, "index": offset + 1 if index is None else index}
    return Op(p, "send", key, body, type, body if type == "ok" else None, extras,
              int(t0 * S), None if t1 is None else int(t1 * S))


def read(result: list[str] | None, t0: float, t1: float | None, *, frm: int = 0, p: int | str = "r",
         key: str = "m", stale: bool = False, offsets: list[int] | None = None, limit: int | None = None,
         type: str = "ok") -> Op:
    value: dict[str, int] = {"from": frm} if limit is None else {"from": frm, "limit": limit}
    extras = {} if offsets is None else {"offsets": offsets}
    return Op(p, "stale_read" if stale else "read", key, value, type, result, extras,
              int(t0 * S), None if t1 is None else int(t1 * S))


def delete(offsets: list[int], t0: float, t1: float | None, *, type: str = "ok", p: int | str = "d",
           key: str = "m") -> Op:
    return Op(p, "delete", key, offsets, type, sorted(offsets) if type == "ok" else None, {},
              int(t0 * S), None if t1 is None else int(t1 * S))


def failed(report: Report) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def assert_ok(report: Report) -> None:
    assert report.ok, report.format()


def evidence(report: Report, name: str) -> str:
    return "\n".join(next(c for c in report.checks if c.name == name).evidence)


# --- the history file ----------------------------------------------------------------------------


def test_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    ticks = iter(range(100, 10_000, 7))
    with HistoryWriter(path, clock=lambda: next(ticks)) as w:
        h = w.invoke(1, "send", "m", "hello")
        w.complete(h, "ok", "hello", offset=0, index=1)
        h = w.invoke(2, "read", "m", {"from": 0})
        w.note("kill", node=2)
        w.complete(h, "ok", ["hello"], offsets=[0])
        h = w.invoke(2, "delete", "m", [0])
        w.complete(h, "info", "timeout")
        h = w.invoke(2, "send", "m", "bye")  # a process may go on after an info
    events = load_history(path)
    assert [e.line for e in events] == list(range(1, 9))
    assert events[0] == Event(1, "invoke", "send", "m", "hello", 100, {}, 1)
    ops = pair_ops(events)
    assert [(o.f, o.type) for o in ops] == [("send", "ok"), ("read", "ok"), ("delete", "info"), ("send", "info")]
    assert ops[0].extras == {"offset": 0, "index": 1} and ops[0].complete_time == 107
    assert ops[1].result == ["hello"] and ops[1].extras == {"offsets": [0]}
    assert ops[2].complete_time is None and ops[3].complete_time is None and ops[3].complete_line is None


def test_writer_refuses_what_the_loader_would_refuse(tmp_path: Path) -> None:
    with HistoryWriter(tmp_path / "h.jsonl") as w:
        h = w.invoke(1, "send", "m", "x")
        with pytest.raises(HistoryError, match="already has an op"):
            w.invoke(1, "send", "m", "y")
        with pytest.raises(HistoryError, match="offset"):
            w.complete(h, "ok", "x")  # an ok send needs its offset and index
        with pytest.raises(HistoryError, match="outcome"):
            w.complete(h, "done")
        with pytest.raises(HistoryError, match="redefine"):
            w.complete(h, "fail", time=3)
        w.complete(h, "fail", "NO_LEADER")
        with pytest.raises(HistoryError, match="already has an outcome"):
            w.complete(h, "ok", "x", offset=0, index=1)
        with pytest.raises(HistoryError, match="read invoke"):
            w.invoke(2, "read", "m", {"after": 3})
        with pytest.raises(HistoryError, match="not plain JSON"):
            w.note("kill", value={1, 2})
    assert len(load_history(tmp_path / "h.jsonl")) == 2


def test_writer_is_thread_safe_and_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        def client(p: int) -> None:
            for i in range(200):
                h = w.invoke(p, "send", "m", f"{p}-{i}")
                w.complete(h, "ok", None, offset=i, index=1 + i)

        threads = [threading.Thread(target=client, args=(p,)) for p in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = load_history(path)  # would refuse times out of order or torn lines
    assert len(events) == 8 * 200 * 2
    assert len(pair_ops(events)) == 1600


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    ('{"process": 1, "type": "invoke", "f": "send", "key": "m", "time": 5}', "line 2: missing field(s) value"),
    ('{"process": 1, "type": "invoke", "f": "write", "key": "m", "value": 1, "time": 5}', "line 2: f must be"),
    ('{"process": true, "type": "invoke", "f": "send", "key": "m", "value": "a", "time": 5}', "line 2: process"),
    ('{"process": 1, "type": "invoke", "f": "send", "key": "", "value": "a", "time": 5}', "line 2: key"),
    ('{"process": 1, "type": "invoke", "f": "send", "key": "m", "value": 3, "time": 5}', "line 2: send invoke"),
    ('{"process": 1, "type": "invoke", "f": "delete", "key": "m", "value": [1, 1], "time": 5}', "distinct"),
    ('{"process": 1, "type": "ok", "f": "read", "key": "m", "value": [1], "time": 5}', "list of bodies"),
    ('{"process": 1, "type": "ok", "f": "read", "key": "m", "value": ["a"], "offsets": [], "time": 5}', "one per"),
    ('{"process": 1, "type": "invoke", "f": "send", "key": "m", "value": "a", "time": 1}', "line 2: time 1 is before"),
    ('{"process": 1, "type": "invoke", "f": "send", "key": "m", "value": "a", "time": 5.0}', "line 2: time must"),
])
def test_load_history_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "h.jsonl"
    first = '{"process": 0, "type": "invoke", "f": "send", "key": "m", "value": "z", "time": 2}'
    path.write_text(first + "\n" + line + "\n")
    with pytest.raises(HistoryError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_history(path)
    assert "\n" not in str(e.value)


def test_pair_ops_refuses_broken_pairing() -> None:
    def ev(p: int, t: str, f: str = "send", v: Any = "a", **x: Any) -> Event:
        return validate_event({"process": p, "type": t, "f": f, "key": "m", "value": v, "time": 1, **x})

    with pytest.raises(HistoryError, match="invokes while"):
        pair_ops([ev(1, "invoke"), ev(1, "invoke", v="b")])
    with pytest.raises(HistoryError, match="no open invoke"):
        pair_ops([ev(1, "fail")])
    with pytest.raises(HistoryError, match="completes read"):
        pair_ops([ev(1, "invoke"), ev(1, "ok", f="read", v=[])])
    with pytest.raises(HistoryError, match="not the invoked body"):
        pair_ops([ev(1, "invoke"), ev(1, "ok", v="b", offset=0, index=1)])
    with pytest.raises(HistoryError, match="unique"):
        check(pair_ops([ev(1, "invoke"), ev(1, "info"), ev(2, "invoke")]))


# --- violations, one at a time --------------------------------------------------------------------


def test_valid_simple_history() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1.5, 3, 1), read(["a", "b"], 4, 5), read(["b"], 4, 6, frm=1)]
    report = check(ops, {"m": [(0, "a"), (1, "b")]})
    assert_ok(report)
    assert report.stats["ops"] == 4 and report.stats["mailboxes"] == 1


def test_lost_acknowledged_send() -> None:
    ops = [send("a", 1, 2, 0), send("b", 3, 4, 1)]
    report = check(ops, {"m": [(1, "b")]})
    assert failed(report) == {ACKED}
    assert "'a'" in evidence(report, ACKED) and "no delete of offset 0 can have applied" in evidence(report, ACKED)


def test_acknowledged_send_at_another_offset_or_overwritten() -> None:
    assert ACKED in failed(check([send("a", 1, 2, 0)], {"m": [(3, "a")]}))
    report = check([send("a", 1, 2, 0), send("b", 1, 2, 1, type="info")], {"m": [(0, "b")]})
    assert ACKED in failed(report) and "holds 'b'" in evidence(report, ACKED)


def test_deleted_acknowledged_send_is_not_lost() -> None:
    ops = [send("a", 1, 2, 0), send("b", 3, 4, 1), delete([0], 5, 6)]
    assert_ok(check(ops, {"m": [(1, "b")]}))
    # A delete of unknown outcome may have applied too.
    ops = [send("a", 1, 2, 0), send("b", 3, 4, 1), delete([0], 5, None, type="info")]
    assert_ok(check(ops, {"m": [(1, "b")]}))
    assert_ok(check(ops, {"m": [(0, "a"), (1, "b")]}))


def test_duplicate_in_final_state_and_in_a_read() -> None:
    ops = [send("a", 1, 2, 0)]
    assert failed(check(ops, {"m": [(0, "a"), (1, "a")]})) >= {DUPS}
    report = check(ops + [read(["a", "a"], 3, 4)], {"m": [(0, "a")]})
    assert DUPS in failed(report) and "twice" in evidence(report, DUPS)
    # The same body in two mailboxes.
    assert DUPS in failed(check(ops, {"m": [(0, "a")], "n": [(0, "a")]}))


def test_duplicate_of_an_unacknowledged_send_is_caught() -> None:
    ops = [send("x", 1, None, type="info"), read(["x", "x"], 5, 6)]
    assert DUPS in failed(check(ops))


def test_failed_send_appears() -> None:
    ops = [send("a", 1, 2, 0), send("f", 1, 2, type="fail")]
    report = check(ops, {"m": [(0, "a"), (1, "f")]})
    assert FAILED in failed(report) and "'f'" in evidence(report, FAILED)
    report = check(ops + [read(["a", "f"], 3, 4)])  # in a read, no final state needed
    assert FAILED in failed(report)


def test_phantom_messages() -> None:
    ops = [send("a", 1, 2, 0)]
    report = check(ops, {"m": [(0, "a"), (1, "ghost")]})
    assert PHANTOM in failed(report) and "never sent" in evidence(report, PHANTOM)
    # A body sent to one mailbox shows up in another.
    report = check(ops + [send("b", 1, 2, 0, key="n", index=9)], {"m": [(0, "a"), (1, "b")], "n": []})
    assert PHANTOM in failed(report)
    # Offset 2 acknowledged, but nothing could have filled offset 1.
    report = check([send("a", 1, 2, 0), send("c", 3, 4, 2)])
    assert PHANTOM in failed(report) and "only 0 sends" in evidence(report, PHANTOM)
    assert_ok(check([send("a", 1, 2, 0), send("b", 1, None, type="info"), send("c", 3, 4, 2)]))
    # An absurd offset is reported, not turned into an array of that size.
    report = check([send("a", 1, 2, 0), read(["a"], 3, 4, offsets=[10**12])], {"m": [(10**15, "a")]})
    assert PHANTOM in failed(report) and "only 1 sends" in evidence(report, PHANTOM)


def test_stale_linearizable_read_misses_a_send_acknowledged_before_it_began() -> None:
    ops = [send("a", 1, 2, 0), send("b", 3, 4, 1), read(["a"], 5, 6)]
    report = check(ops, {"m": [(0, "a"), (1, "b")]})
    assert failed(report) == {LIN}
    text = evidence(report, LIN)
    assert "'b'" in text and "did not see offset 1" in text
    # The same result from a stale read is fine.
    assert_ok(check(ops[:2] + [read(["a"], 5, 6, stale=True)], {"m": [(0, "a"), (1, "b")]}))
    # And from a read that began before b was acknowledged.
    assert_ok(check(ops[:2] + [read(["a"], 3.5, 6)], {"m": [(0, "a"), (1, "b")]}))


def test_read_sees_a_send_invoked_after_it_completed() -> None:
    ops = [send("a", 1, 2, 0), read(["a", "b"], 3, 4), send("b", 5, 6, 1)]
    assert failed(check(ops, {"m": [(0, "a"), (1, "b")]})) == {LIN}
    stale = [send("a", 1, 2, 0), read(["a", "b"], 3, 4, stale=True), send("b", 5, 6, 1)]
    assert failed(check(stale, {"m": [(0, "a"), (1, "b")]})) == {STALE}


def test_read_of_a_value_later_rolled_back() -> None:
    # x was never acknowledged; a read saw it; it is not in the final state and nothing deleted it.
    ops = [send("a", 1, 2, 0), send("x", 3, None, type="info"), read(["a", "x"], 4, 5), send("c", 6, 7, 1)]
    report = check(ops, {"m": [(0, "a"), (1, "c")]})
    assert LIN in failed(report)
    assert "rolled-back" in evidence(report, LIN)
    # Without the later send at x's offset the same loss is caught too.
    report = check(ops[:3], {"m": [(0, "a")]})
    assert LIN in failed(report) and "'x'" in evidence(report, LIN)
    # And in a stale read.
    stale = ops[:2] + [read(["a", "x"], 4, 5, stale=True)]
    assert STALE in failed(check(stale, {"m": [(0, "a")]}))


def test_read_value_later_deleted_is_fine() -> None:
    ops = [send("a", 1, 2, 0), send("x", 3, None, type="info"), read(["a", "x"], 4, 5),
           delete([1], 6, 7)]
    assert_ok(check(ops, {"m": [(0, "a")]}))
    # But not by a delete that completed before the read began.
    ops = [send("a", 1, 2, 0), send("x", 1, None, type="info"), delete([1], 2, 3), read(["a", "x"], 4, 5)]
    assert LIN in failed(check(ops, {"m": [(0, "a")]}))


def test_reads_going_backwards_in_real_time() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, None, type="info"),
           read(["a", "b"], 3, 4, p="r1"), read(["a"], 5, 6, p="r2")]
    report = check(ops, {"m": [(0, "a"), (1, "b")]})
    assert failed(report) == {LIN}
    text = evidence(report, LIN)
    assert "process r1" in text and "process r2" in text and "did not see offset 1" in text
    # Overlapping reads may disagree.
    ops[3] = read(["a"], 3.5, 6, p="r2")
    assert_ok(check(ops, {"m": [(0, "a"), (1, "b")]}))


def test_reads_going_backwards_on_deletes() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), delete([0], 3, None, type="info"),
           read(["b"], 4, 5, p="r1"), read(["a", "b"], 6, 7, p="r2")]
    report = check(ops, {"m": [(1, "b")]})
    assert failed(report) == {LIN}
    assert "found offset 0 deleted" in evidence(report, LIN)


def test_read_misses_a_message_in_the_middle() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), send("c", 1, 2, 2), read(["a", "c"], 3, 4)]
    report = check(ops, {"m": [(0, "a"), (1, "b"), (2, "c")]})
    assert failed(report) == {LIN} and "skipped offset 1" in evidence(report, LIN)


def test_read_order_must_follow_offsets() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), read(["b", "a"], 3, 4)]
    assert failed(check(ops, {"m": [(0, "a"), (1, "b")]})) == {LIN}
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), read(["a"], 3, 4, frm=1)]
    assert failed(check(ops, {"m": [(0, "a"), (1, "b")]})) == {LIN}


def test_sends_must_be_ordered_by_offset_in_real_time() -> None:
    ops = [send("a", 1, 2, 1, index=2), send("b", 3, 4, 0, index=1)]
    report = check(ops, {"m": [(0, "b"), (1, "a")]})
    assert failed(report) == {LIN}


def test_acknowledged_delete_must_hold() -> None:
    ops = [send("a", 1, 2, 0), delete([0], 3, 4), read(["a"], 5, 6)]
    assert failed(check(ops, {"m": []})) == {LIN}
    report = check(ops[:2], {"m": [(0, "a")]})
    assert failed(report) == {FINAL} and "acknowledged" in evidence(report, FINAL)


def test_delete_invoked_after_a_read_cannot_explain_its_hole() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), read(["b"], 3, 4), delete([0], 5, 6)]
    assert failed(check(ops, {"m": [(1, "b")]})) == {LIN}
    ops[3] = delete([0], 3.5, 6)  # concurrent with the read: fine
    assert_ok(check(ops, {"m": [(1, "b")]}))


def test_deletes_are_atomic() -> None:
    base = [send("a", 1, 2, 0), send("b", 1, 2, 1), send("c", 1, 2, 2)]
    half = read(["b", "c"], 4, 5)  # sees offset 0 deleted but offset 1 live
    ops = base + [delete([0, 1], 3, None, type="info"), half]
    assert failed(check(ops, {"m": [(2, "c")]})) == {LIN}
    assert failed(check(base + [delete([0, 1], 3, None, type="info"), read(["b", "c"], 4, 5, stale=True)],
                        {"m": [(2, "c")]})) == {STALE}
    # Offset 1 is live at the end, so that delete never applied: nothing removed offset 0.
    report = check(base + [delete([0, 1], 3, None, type="info")], {"m": [(1, "b"), (2, "c")]})
    assert failed(report) == {ACKED} and "no delete of offset 0 can have applied" in evidence(report, ACKED)
    unacked = [send("a", 1, None, type="info"), send("b", 1, 2, 1), send("c", 1, 2, 2)]
    report = check(unacked + [delete([0, 1], 3, None, type="info")], {"m": [(1, "b"), (2, "c")]})
    assert failed(report) == {FINAL} and "offset 0" in evidence(report, FINAL)


def test_acknowledgements_consistent() -> None:
    assert failed(check([send("a", 1, 2, 0), send("b", 1, 2, 0, index=2)])) >= {ACKS}
    assert ACKS in failed(check([send("a", 1, 2, 0, index=5), send("b", 1, 2, 1, index=5)]))
    assert ACKS in failed(check([send("a", 1, 2, 0, index=5), send("b", 1, 2, 1, index=4)]))
    ops = [send("a", 1, 2, 0), delete([0], 3, 4), delete([0], 5, 6, p="e")]
    assert ACKS in failed(check(ops, {"m": []}))


def test_info_operations_whose_effect_shows_late_or_never() -> None:
    ops = [send("a", 1, 2, 0), send("x", 1.5, None, type="info"), send("y", 2, None, type="info"),
           read(["a"], 3, 4), read(["a"], 5, 6), read(["a", "x"], 7, 8), read(["a", "x"], 9, 10, frm=0)]
    # x applied long after it timed out; y never did (or after the final read).
    assert_ok(check(ops, {"m": [(0, "a"), (1, "x")]}))
    # y applied after the history ended: only the final state shows it.
    assert_ok(check(ops, {"m": [(0, "a"), (1, "x"), (2, "y")]}))
    # Never applied at all: fine, as long as no read saw it.
    assert_ok(check(ops[:5], {"m": [(0, "a")]}))
    assert LIN in failed(check(ops, {"m": [(0, "a")]}))


def test_concurrent_sends_and_overlapping_reads() -> None:
    ops = [send("a", 1, 5, 1, p=1), send("b", 1, 5, 0, p=2),  # b applied first though invoked together
           read(["b"], 2, 3, p=3), read([], 1, 2.5, p=4), read(["b", "a"], 3, 6, p=5),
           read(["a"], 4, 7, frm=1, p=6)]
    assert_ok(check(ops, {"m": [(0, "b"), (1, "a")]}))


def test_deletes_and_holes_valid() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), send("c", 1, 2, 2), delete([1], 3, 4),
           read(["a", "c"], 5, 6), delete([0, 2], 7, 8), read([], 9, 10), send("d", 11, 12, 3),
           read(["d"], 13, 14), read(["d"], 13, 14, frm=2, offsets=[3])]
    assert_ok(check(ops, {"m": [(3, "d")]}))


def test_trailing_deleted_offsets_do_not_pin_a_read() -> None:
    # The last message was deleted: the read may have happened before or after it was sent.
    ops = [send("a", 1, 2, 0), send("b", 3, 4, 1), delete([1], 5, 6), read(["a"], 3.5, 7)]
    assert_ok(check(ops, {"m": [(0, "a")]}))


def test_unknown_offsets_inferred_from_reads() -> None:
    # x and y timed out; a read with offsets pins them; the final state lost x without a delete.
    ops = [send("x", 1, None, type="info"), send("y", 1, None, type="info"), send("c", 2, 3, 2),
           read(["x", "y", "c"], 4, 5)]
    assert_ok(check(ops, {"m": [(0, "x"), (1, "y"), (2, "c")]}))
    report = check(ops, {"m": [(1, "y"), (2, "c")]})
    assert {LIN, FINAL} <= failed(report)
    # Inference: only offsets 0 and 1 are free below c.
    ops2 = ops + [delete([0], 6, 7), read(["y", "c"], 8, 9)]
    assert_ok(check(ops2, {"m": [(1, "y"), (2, "c")]}))


def test_read_ending_in_messages_of_unknown_offset_is_still_bounded() -> None:
    # x timed out; the read returns it without offsets, but misses c, acknowledged before it began.
    ops = [send("a", 1, 2, 0), send("x", 1, None, type="info"), send("c", 3, 4, 2), read(["x"], 5, 6, frm=1)]
    assert_ok(check(ops[:3] + [read(["x", "c"], 5, 6, frm=1)], {"m": [(0, "a"), (1, "x"), (2, "c")]}))
    report = check(ops, {"m": [(0, "a"), (1, "x"), (2, "c")]})
    assert failed(report) == {LIN} and "did not see offset 2" in evidence(report, LIN)
    # Without the final state x's offset is unknown, yet c still bounds the read.
    assert failed(check(ops)) == {LIN}
    # Two messages of unknown offset cannot fit in the one free offset below c.
    two = [send("a", 1, 2, 0), send("x", 1, None, type="info"), send("y", 1, None, type="info"),
           send("c", 1, 2, 2), read(["x", "y"], 5, 6, frm=1, stale=True)]
    report = check(two)
    assert failed(report) == {STALE} and "skipped offset 2 ('c')" in evidence(report, STALE)
    # Same, when a delete of offset 1 leaves their places open to inference.
    report = check(two + [delete([1], 1, None, type="info")])
    assert failed(report) == {STALE} and "only 1 offset(s) are free" in evidence(report, STALE)


def test_a_delete_of_an_offset_live_at_the_end_never_applied() -> None:
    # Two info deletes name offset 1; b is live at the end, so neither removed it: a read that
    # skipped b saw an impossible state.
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), send("c", 1, 2, 2),
           delete([0, 1], 3, None, type="info", p="d1"), delete([1], 3, None, type="info", p="d2"),
           read(["c"], 4, 5, frm=1)]
    report = check(ops, {"m": [(0, "a"), (1, "b"), (2, "c")]})
    assert failed(report) == {LIN} and "skipped offset 1" in evidence(report, LIN)
    assert_ok(check(ops))  # without the final state either delete may have applied


def test_equal_timestamps_count_as_concurrent() -> None:
    # The read begins in the very nanosecond b's send is acknowledged: either order is possible.
    ops = [send("a", 1, 2, 0), send("b", 2, 3, 1), read(["a"], 3, 4)]
    assert_ok(check(ops, {"m": [(0, "a"), (1, "b")]}))
    ops[2] = read(["a"], 3.000000001, 4)
    assert failed(check(ops, {"m": [(0, "a"), (1, "b")]})) == {LIN}


def test_read_offsets_that_contradict_the_final_state() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), read(["a", "b"], 3, 4, offsets=[0, 2])]
    report = check(ops, {"m": [(0, "a"), (1, "b")]})
    assert LIN in failed(report) and "puts it at offset 1" in evidence(report, LIN)


def test_limited_read_sees_a_window() -> None:
    ops = [send("a", 1, 2, 0), send("b", 1, 2, 1), send("c", 1, 2, 2), read(["a", "b"], 3, 4, limit=2)]
    assert_ok(check(ops, {"m": [(0, "a"), (1, "b"), (2, "c")]}))
    ops[3] = read(["a"], 3, 4, limit=2)  # not truncated: it must have seen b and c
    assert LIN in failed(check(ops, {"m": [(0, "a"), (1, "b"), (2, "c")]}))


def test_several_mailboxes_are_independent() -> None:
    ops = [send("a", 1, 2, 0, key="m", index=1), send("b", 1, 2, 0, key="n", index=2),
           read(["a"], 3, 4, key="m"), read(["b"], 3, 4, key="n"), read([], 3, 4, key="o")]
    assert_ok(check(ops, {"m": [(0, "a")], "n": [(0, "b")]}))
    assert failed(check(ops, {"m": [(0, "a")], "n": []})) == {ACKED, LIN}  # n lost b, which a read saw
    assert failed(check(ops[:2], {"m": [(0, "a")], "n": []})) == {ACKED}


def test_without_final_state_final_checks_are_skipped() -> None:
    report = check([send("a", 1, 2, 0)])
    assert report.ok
    skipped = {c.name for c in report.checks if c.skipped}
    assert skipped == {ACKED, FINAL}
    assert "SKIP acknowledged_sends_durable" in report.format()


def test_report_format_and_json(tmp_path: Path) -> None:
    _write_history(tmp_path / "h.jsonl", [send("a", 1, 2, 0), send("b", 3, 4, 1), read(["a"], 5, 6)])
    report = check(pair_ops(load_history(tmp_path / "h.jsonl")), {"m": [(0, "a"), (1, "b")]})
    text = report.format()
    assert "FAIL linearizable" in text and "VIOLATIONS FOUND" in text and "PASS no_duplicates" in text
    data = json.loads(report.to_json())
    assert data["ok"] is False
    lin = next(c for c in data["checks"] if c["name"] == LIN)
    assert lin["violations"] >= 1 and lin["evidence"] and "line" in lin["evidence"][0]


def test_final_state_shape_is_validated() -> None:
    with pytest.raises(ValueError):
        check([], {"m": [(0, b"bytes")]})  # type: ignore[list-item]
    with pytest.raises(ValueError):
        check([], {"m": "abc"})  # type: ignore[dict-item]
    assert FINAL in failed(check([send("a", 1, 2, 0), send("b", 1, 2, 1)], {"m": [(0, "a"), (0, "b")]}))


# --- the command ---------------------------------------------------------------------------------


def _write_history(path: Path, ops: list[Op]) -> None:
    events = []
    for i, op in enumerate(ops):
        base = {"process": f"p{i}", "f": op.f, "key": op.key}
        events.append((op.invoke_time, 0, {**base, "type": "invoke", "value": op.value, "time": op.invoke_time}))
        if op.complete_time is not None:
            events.append((op.complete_time, 1, {**base, "type": op.type, "value": op.result,
                                                 "time": op.complete_time, **op.extras}))
    path.write_text("".join(json.dumps(e) + "\n" for _, _, e in sorted(events, key=lambda e: e[:2])))


def test_cli_exit_codes(tmp_path: Path) -> None:
    hist, final = tmp_path / "h.jsonl", tmp_path / "final.json"
    _write_history(hist, [send("a", 1, 2, 0), send("b", 3, 4, 1), read(["a", "b"], 5, 6)])
    final.write_text(json.dumps({"m": [[0, "a"], [1, "b"]]}))
    runner = CliRunner()
    res = runner.invoke(verify, [str(hist), "--final", str(final)])
    assert res.exit_code == 0, res.output
    assert "OK:" in res.output
    final.write_text(json.dumps({"m": [[0, "a"]]}))
    res = runner.invoke(verify, [str(hist), "--final", str(final), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.output)["ok"] is False
    hist.write_text(hist.read_text() + "garbage\n")
    res = runner.invoke(verify, [str(hist)])
    assert res.exit_code == 2 and "line 7: not JSON" in res.output
    final.write_text('{"m": [[0]]}')
    _write_history(hist, [send("a", 1, 2, 0)])
    assert runner.invoke(verify, [str(hist), "--final", str(final)]).exit_code == 2
    assert load_final is not None


# --- a model of the service, for generated histories ---------------------------------------------


@dataclass
class _Pending:
    process: int
    f: str
    key: str
    value: Any
    applied: bool = False
    failed: bool = False  # applied as a refusal (a delete of offsets no longer live)
    result: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Model:
    """A linearizable mailbox service: ops take effect at one instant between invoke and completion.

    An op may time out (info) before or after taking effect, and an info op may
    still take effect later, even after the history ends; a fail never takes effect.
    Stale reads return one of the last few states. The events it records form a
    valid history. Consumers delete what they read, so mailboxes stay short
    while their offsets grow (reads from 0 then skip long deleted prefixes).
    """

    STALE_VERSIONS = 15

    def __init__(self, rng: random.Random, boxes: tuple[str, ...] = ("a", "b"), procs: int = 6,
                 p_info: float = 0.05, p_fail: float = 0.05) -> None:
        self.rng, self.boxes, self.procs = rng, boxes, procs
        self.p_info, self.p_fail = p_info, p_fail
        self.now = 0
        self.step = 0  # counts applied changes: a version number for stale reads
        self.index = 0
        self.bodies: dict[str, list[str]] = {b: [] for b in boxes}
        self.sent_at: dict[str, list[int]] = {b: [] for b in boxes}
        self.live_now: dict[str, set[int]] = {b: set() for b in boxes}
        self.recent_deletes: dict[str, deque[tuple[int, int]]] = {b: deque(maxlen=64) for b in boxes}
        self.events: list[dict[str, Any]] = []
        self.open: dict[int, _Pending] = {}
        self.zombies: list[_Pending] = []  # timed out before taking effect: may still take effect
        self.next_process = procs
        self.free = list(range(procs))
        self.counter = 0

    # -- the sequential object --

    def live(self, box: str, version: int | None = None) -> list[tuple[int, str]]:
        """(offset, body) live at `version` (default: now), in offset order."""
        offs = set(self.live_now[box])
        if version is not None and version < self.step:
            sent = self.sent_at[box]
            # Deleted since `version`: live then. At most 3 offsets per step, so the deque holds them all.
            offs |= {o for o, step in self.recent_deletes[box] if step > version}
            offs = {o for o in offs if sent[o] <= version}
        return [(o, self.bodies[box][o]) for o in sorted(offs)]

    def apply(self, op: _Pending) -> None:
        op.applied = True
        if op.f == "send":
            self.step += 1
            self.index += 1
            self.bodies[op.key].append(op.value)
            self.sent_at[op.key].append(self.step)
            self.live_now[op.key].add(len(self.bodies[op.key]) - 1)
            op.result, op.extras = op.value, {"offset": len(self.bodies[op.key]) - 1, "index": self.index}
        elif op.f == "delete":
            if not self.live_now[op.key].issuperset(op.value):
                op.failed = True  # NO_SUCH_MESSAGE: nothing applied
                return
            self.step += 1
            self.index += 1
            self.live_now[op.key].difference_update(op.value)
            self.recent_deletes[op.key].extend((o, self.step) for o in op.value)
            op.result = sorted(op.value)
        else:
            version = None if op.f == "read" else self.rng.randint(max(0, self.step - self.STALE_VERSIONS),
                                                                    self.step)
            rows = [(o, b) for o, b in self.live(op.key, version) if o >= op.value["from"]]
            if "limit" in op.value:
                rows = rows[:op.value["limit"]]
            op.result = [b for _, b in rows]
            if self.rng.random() < 0.5:
                op.extras = {"offsets": [o for o, _ in rows]}

    # -- the concurrent clients --

    def event(self, op: _Pending, type: str, value: Any, **extras: Any) -> None:
        self.events.append({"process": op.process, "type": type, "f": op.f, "key": op.key, "value": value,
                            "time": self.now, **extras})

    def invoke(self) -> None:
        rng, p = self.rng, self.free.pop(self.rng.randrange(len(self.free)))
        box = rng.choice(self.boxes)
        roll = rng.random()
        live = sorted(self.live_now[box])
        if roll < 0.35 or (roll < 0.6 and not live):
            self.counter += 1
            f, value = "send", f"{box}-{self.counter}"
        elif roll < 0.6:
            # Mostly the oldest messages, as a consumer would.
            pool = live[:4] if rng.random() < 0.7 else live
            value = sorted(rng.sample(pool, min(len(pool), rng.randint(1, 2))))
            if rng.random() < 0.2 and self.bodies[box]:  # sometimes an offset already gone: it fails
                value = sorted(set(value) | {rng.randrange(len(self.bodies[box]))})
            f = "delete"
        else:
            f = "stale_read" if roll > 0.9 else "read"
            n = len(self.bodies[box])
            start = rng.choice([0, 0, live[0] if live else n, rng.randint(max(0, n - 10), n + 1)])
            value = {"from": start} if rng.random() < 0.8 else {"from": start, "limit": rng.randint(1, 4)}
        op = _Pending(p, f, box, value)
        self.open[p] = op
        self.event(op, "invoke", value)

    def complete(self, op: _Pending) -> None:
        rng = self.rng
        del self.open[op.process]
        if not op.applied and rng.random() < self.p_info / (self.p_info + self.p_fail):
            self.event(op, "info", None)
            self.zombies.append(op)
        elif not op.applied:
            self.event(op, "fail", "NO_LEADER")
        elif op.failed:
            self.event(op, "fail" if rng.random() < 0.8 else "info", "NO_SUCH_MESSAGE")
        elif rng.random() < self.p_info:
            self.event(op, "info", None)  # took effect, the answer was lost
        else:
            self.event(op, "ok", op.result, **op.extras)
        if self.events[-1]["type"] == "info" and rng.random() < 0.5:
            self.free.append(self.next_process)  # a fresh process id; otherwise the same one goes on
            self.next_process += 1
        else:
            self.free.append(op.process)

    def run(self, n_ops: int) -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, str]]]]:
        rng, invoked = self.rng, 0
        while invoked < n_ops or self.open:
            self.now += rng.choice((0, 1, 3, 10, 100))  # 0: events at the same instant
            roll = rng.random()
            if self.free and invoked < n_ops and roll < 0.35:
                self.invoke()
                invoked += 1
            elif self.open and roll < 0.7:
                op = rng.choice(list(self.open.values()))
                if not op.applied and (rng.random() < 0.8 or self.p_info + self.p_fail == 0):
                    self.apply(op)
                else:
                    self.complete(op)
            elif self.zombies and roll < 0.75:
                self.apply(self.zombies.pop(rng.randrange(len(self.zombies))))
        for op in self.zombies:  # after the history ends, some still take effect
            if rng.random() < 0.5:
                self.apply(op)
        return self.events, {b: self.live(b) for b in self.boxes}


def generate(seed: int, n_ops: int, **kwargs: Any) -> tuple[list[Op], dict[str, list[tuple[int, str]]]]:
    events, final = Model(random.Random(seed), **kwargs).run(n_ops)
    return pair_ops(validate_event(e) for e in events), final


# --- generated histories -------------------------------------------------------------------------


def _without_read_offsets(ops: list[Op]) -> list[Op]:
    return [replace(o, extras={}) if o.f in ("read", "stale_read") else o for o in ops]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(5, 150), st.sampled_from([("a",), ("a", "b", "c")]),
       st.sampled_from([(0.0, 0.0), (0.05, 0.05), (0.3, 0.1), (0.6, 0.0)]), st.sampled_from([2, 6, 16]),
       st.booleans())
def test_generated_valid_histories_are_accepted(seed: int, n: int, boxes: tuple[str, ...],
                                                odds: tuple[float, float], procs: int, offsets: bool) -> None:
    ops, final = generate(seed, n, boxes=boxes, p_info=odds[0], p_fail=odds[1], procs=procs)
    if not offsets:
        ops = _without_read_offsets(ops)  # every read's offsets are then inferred
    assert_ok(check(ops, final))
    assert_ok(check(ops))  # without the final state too


def test_generated_history_through_the_file_and_the_command(tmp_path: Path) -> None:
    events, final = Model(random.Random(3)).run(400)
    hist, fin = tmp_path / "h.jsonl", tmp_path / "final.json"
    hist.write_text("".join(json.dumps(e) + "\n" for e in events))
    fin.write_text(json.dumps(final))
    ops = pair_ops(load_history(hist))
    assert len(ops) == 400 and all(o.invoke_line > 0 for o in ops)
    assert_ok(check(ops, load_final(fin)))
    res = CliRunner().invoke(verify, [str(hist), "--final", str(fin)])
    assert res.exit_code == 0, res.output
    # Lose one acknowledged message that nothing deleted: exit 1, and the report names it.
    deleted = {(e["key"], o) for e in events if e["f"] == "delete" and e["type"] == "invoke" for o in e["value"]}
    victim = next(e for e in events if e["f"] == "send" and e["type"] == "ok"
                  and (e["key"], e["offset"]) not in deleted)
    final[victim["key"]] = [row for row in final[victim["key"]] if row[1] != victim["value"]]
    fin.write_text(json.dumps(final))
    res = CliRunner().invoke(verify, [str(hist), "--final", str(fin)])
    assert res.exit_code == 1 and repr(victim["value"]) in res.output


def _deleted_somewhere(ops: list[Op], key: str, offset: int) -> bool:
    return any(o.f == "delete" and o.key == key and o.type != "fail" and offset in o.value for o in ops)


def _replace_result(ops: list[Op], r: Op, result: list[str]) -> list[Op]:
    extras = dict(r.extras)
    if "offsets" in extras:
        keep = {b: o for b, o in zip(r.result, r.extras["offsets"])}
        extras["offsets"] = [keep[b] for b in result]
    return [replace(r, result=result, extras=extras) if o is r else o for o in ops]


def mutate(kind: str, ops: list[Op], final: dict[str, list[tuple[int, str]]], rng: random.Random,
           ) -> tuple[list[Op], dict[str, list[tuple[int, str]]]] | None:
    """A surely invalid variant of a valid history, or None when this one offers no place for `kind`."""
    reads = [o for o in ops if o.f == "read" and o.type == "ok"]
    acked = [o for o in ops if o.f == "send" and o.type == "ok"
             and not _deleted_somewhere(ops, o.key, o.extras["offset"])]
    if kind == "drop_acked" and acked:
        s = rng.choice(acked)
        return ops, {**final, s.key: [(o, b) for o, b in final[s.key] if b != s.value]}
    if kind == "duplicate_in_read":
        rs = [r for r in reads if r.result]
        if rs:
            r = rng.choice(rs)
            i = rng.randrange(len(r.result))
            return [replace(o, result=o.result[:i + 1] + o.result[i:], extras={}) if o is r else o
                    for o in ops], final
    if kind == "failed_appears":
        fs = [o for o in ops if o.f == "send" and o.type == "fail"]
        if fs:
            s = rng.choice(fs)
            top = max((o for o, _ in final[s.key]), default=0)
            return ops, {**final, s.key: final[s.key] + [(top + 100, s.value)]}
    if kind == "stale_read":
        pairs = [(r, s) for r in reads for s in acked if s.key == r.key and s.complete_time < r.invoke_time
                 and s.value in r.result]
        if pairs:
            r, s = rng.choice(pairs)
            return _replace_result(ops, r, [b for b in r.result if b != s.value]), final
    if kind == "backwards":
        # r1 saw b (never deleted); r2, begun after r1 completed, no longer does.
        live_final = {b for rows in final.values() for _, b in rows}
        pairs = [(r1, r2, b) for r1 in reads for r2 in reads if r1.key == r2.key
                 and r1.complete_time < r2.invoke_time for b in set(r1.result) & set(r2.result)
                 if b in live_final]
        if pairs:
            r1, r2, b = rng.choice(pairs)
            return _replace_result(ops, r2, [x for x in r2.result if x != b]), final
    if kind == "rollback":
        # A read saw b; the final state lost it though nothing deleted its offset. The checker must
        # know b's offset (acknowledged or reported by a read): else b may have sat where a delete hit.
        where = {b: (key, o) for key, rows in final.items() for o, b in rows}
        placed = {o.value for o in ops if o.f == "send" and o.type == "ok"}
        placed |= {b for r in reads if "offsets" in r.extras for b in r.result}
        seen = [(r, b) for r in reads for b in r.result
                if b in where and b in placed and not _deleted_somewhere(ops, *where[b])]
        if seen:
            r, b = rng.choice(seen)
            key = where[b][0]
            return ops, {**final, key: [(o, x) for o, x in final[key] if x != b]}
    return None


MUTATIONS = ("drop_acked", "duplicate_in_read", "failed_appears", "stale_read", "backwards", "rollback")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(10, 120), st.sampled_from(MUTATIONS))
def test_mutated_histories_are_rejected(seed: int, n: int, kind: str) -> None:
    ops, final = generate(seed, n, boxes=("a", "b"), p_info=0.1, p_fail=0.1)
    mutated = mutate(kind, ops, final, random.Random(seed))
    if mutated is None:
        return
    report = check(*mutated)
    assert not report.ok, f"{kind} not caught"
    expected = {"drop_acked": ACKED, "duplicate_in_read": DUPS, "failed_appears": FAILED,
                "stale_read": LIN, "backwards": LIN}.get(kind)
    assert expected is None or expected in failed(report), report.format()


def test_mutations_find_places() -> None:
    """The mutation test is not vacuous: every kind finds a place in most histories."""
    hits = {k: 0 for k in MUTATIONS}
    for seed in range(40):
        ops, final = generate(seed, 150, boxes=("a", "b"), p_info=0.1, p_fail=0.1)
        for k in MUTATIONS:
            m = mutate(k, ops, final, random.Random(seed))
            if m is not None:
                hits[k] += 1
                assert not check(*m).ok, (k, seed)
    assert all(v >= 20 for v in hits.values()), hits


# --- performance ---------------------------------------------------------------------------------


def test_twenty_thousand_ops_in_seconds() -> None:
    ops, final = generate(7, 20_000, boxes=("a", "b", "c"), procs=10, p_info=0.03, p_fail=0.03)
    assert len(ops) == 20_000
    started = time.perf_counter()
    report = check(ops, final)
    elapsed = time.perf_counter() - started
    assert_ok(report)
    assert elapsed < 20, elapsed
    assert report.stats["graph_nodes"] > 10_000
