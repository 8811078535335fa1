"""Pending: every waiting request is answered once, by its entry or by its deadline."""

from __future__ import annotations

from zrep.service.pending import Pending


def codes(done):
    return [(d.route, d.result.get("error", "OK")) for d in done]


def test_a_write_is_answered_when_its_entry_is_applied_and_only_once():
    p = Pending()
    p.add_write(("c", 1), "r1", deadline=10)
    p.add_write(("c", 1), "r1-retry", deadline=12)  # a retry that arrived while the first waits
    assert p.on_applied(("c", 2), 5, {"ok": True}) == []
    assert codes(p.on_applied(("c", 1), 6, {"ok": True})) == [("r1", "OK"), ("r1-retry", "OK")]
    assert p.on_applied(("c", 1), 6, {"ok": True}) == []
    assert p.expire(100) == [] and len(p) == 0


def test_deadlines_expire_in_time_even_after_the_earliest_one_was_answered():
    p = Pending()
    p.add_write(("c", 1), "early", deadline=5)
    p.add_write(("c", 2), "late", deadline=20)
    p.add_read("q", "read", deadline=30, query=None)
    p.on_applied(("c", 1), 1, {"ok": True})
    assert p.expire(4) == []
    assert p.expire(10) == []  # nothing due: the stale earliest deadline only costs one scan
    assert codes(p.expire(20)) == [("late", "TIMEOUT")]
    p.add_write(("c", 3), "new", deadline=25)  # earlier than the read: must still be seen
    assert codes(p.expire(25)) == [("new", "TIMEOUT")]
    assert codes(p.expire(30)) == [("read", "TIMEOUT")]
    assert len(p) == 0


def test_reads_are_answered_once_their_index_is_applied_in_index_order():
    p = Pending()
    for ctx, index in ((1, 7), (2, 3), (3, 5)):
        p.add_read(ctx, f"r{ctx}", deadline=100, query=ctx)
        assert p.on_read_index(ctx, index) == []
    p.add_read(4, "unconfirmed", deadline=100, query=4)
    assert p.reads_ready(2) == []
    assert p.reads_ready(5) == [("r2", 2), ("r3", 3)]
    assert p.reads_ready(9) == [("r1", 1)]
    assert p.reads_ready(9) == [] and len(p) == 1


def test_a_failed_or_expired_read_is_never_answered_again():
    p = Pending()
    p.add_read(1, "fails", deadline=100, query=None)
    assert codes(p.on_read_index(1, -1)) == [("fails", "NO_LEADER")]
    p.add_read(2, "expires", deadline=10, query=None)
    p.on_read_index(2, 4)
    assert codes(p.expire(10)) == [("expires", "TIMEOUT")]
    assert p.reads_ready(100) == [] and len(p) == 0


def test_ack_all_waits_for_every_member_or_its_deadline():
    p = Pending()
    p.add_write(("c", 1), "all", deadline=50, ack_all=True)
    p.on_applied(("c", 1), 3, {"ok": True})
    assert p.check_all(lambda i: (1, 2), (1, 2, 3), now=10) == []
    [done] = p.check_all(lambda i: (1, 2, 3), (1, 2, 3), now=11)
    assert done.result["all_durable"] and done.result["durable_on"] == [1, 2, 3]


def test_reads_sharing_a_ctx_are_answered_failed_and_expired_each() -> None:
    p = Pending()
    for route in ("a", "b", "c"):
        p.add_read(1, route, deadline=100 if route != "c" else 10, query=route)
    assert len(p) == 3
    assert p.expire(50)[0].route == "c" and len(p) == 2
    assert p.on_read_index(1, 4) == [] and p.reads_ready(3) == []
    assert p.reads_ready(4) == [("a", "a"), ("b", "b")] and len(p) == 0
    p.add_read(2, "x", deadline=100, query=None)
    p.add_read(2, "y", deadline=100, query=None)
    assert codes(p.on_read_index(2, -1)) == [("x", "NO_LEADER"), ("y", "NO_LEADER")] and len(p) == 0
