"""The client's membership calls and its refresh of the member list, driven step by step (sans I/O).

The steps of zrep.client._calls are generators: each Send is answered here with
the reply a node would give, so what the client does with a `members` answer
(new members' addresses, removed members dropped, the leader asked) is checked
without sockets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from zrep.client import Membership, OutcomeUnknown, Rejected
from zrep.client._calls import Calls
from zrep.client._links import Links
from zrep.client._results import membership_of
from zrep.client._retry import Open, Send, Wait
from zrep.config import load_config
from zrep.node.requests import admin_result, reply_for
from zrep.wire import codec
from zrep.wire.client_messages import Code, ClientReply, error_reply, not_leader_reply, ok_reply

ROOT = Path(__file__).resolve().parents[2]


def calls() -> Calls:
    return Calls(load_config(ROOT / "config" / "cluster.toml"), "c1", 5.0, 0.5, concurrent=False)


def view(leader: int, *members: tuple[int, str, str]) -> dict[str, Any]:
    return {"cluster_id": "1", "forming": False, "config_index": 7, "committed": True, "committed_voters": [1, 2],
            "leader": leader, "members": [{"id": i, "incarnation": "", "role": role, "rpc": rpc, "pub": "",
                                           "state": "live", "lag": 0, "lost_state": False}
                                          for i, role, rpc in members]}


def drive(steps: Any, answer: Any) -> tuple[Any, list[tuple[int, str, dict[str, Any]]]]:
    """Run `steps`, answering each request with answer(node, op, args) -> ClientReply (req_id filled in)."""
    asked: list[tuple[int, str, dict[str, Any]]] = []
    pending: list[tuple[int, ClientReply]] = []
    try:
        effect = next(steps)
        while True:
            if isinstance(effect, Send):
                req = codec.decode(effect.payload, 1 << 20)
                asked.append((effect.node, req.op, req.args))
                reply = answer(effect.node, req.op, req.args)
                if reply is None:  # this node stays silent
                    effect = steps.send("")
                    continue
                pending.append((effect.node, type(reply)(req.req_id, reply.ok, reply.code, reply.message,
                                                         reply.result)))
                effect = steps.send("")
            elif isinstance(effect, Wait):
                got, pending = pending, []
                effect = steps.send(got)
            else:
                assert isinstance(effect, Open)
                effect = steps.send(None)
    except StopIteration as stop:
        return stop.value, asked


def test_members_asks_the_leader_a_follower_names_and_learns_new_and_removed_members() -> None:
    c = calls()
    answers = {1: view(2, (1, "voter", ""), (2, "voter", "")),  # a follower's view: no lag, names the leader
               2: view(2, (1, "voter", ""), (2, "voter", ""), (4, "learner", "tcp://127.0.0.1:7104"))}

    result, asked = drive(c.members(), lambda node, op, args: ok_reply(0, answers[node]))
    assert [(n, a["op"]) for n, _, a in asked] == [(1, "members"), (2, "members")]
    assert isinstance(result, Membership) and result.node == 2 and result.learners == [4]
    assert c.route.addresses == {1: "tcp://127.0.0.1:7101", 2: "tcp://127.0.0.1:7102", 4: "tcp://127.0.0.1:7104"}
    assert c.route.preferred == 2


def test_after_a_failover_the_next_call_refreshes_the_members() -> None:
    c = calls()
    c.route.failover = True  # as after a silent node
    members = view(1, (1, "voter", ""), (2, "voter", ""))  # node 3 was removed

    def answer(node: int, op: str, args: dict[str, Any]) -> ClientReply:
        return ok_reply(0, members if op == "admin" else {"mailboxes": [], "applied": 3})

    result, asked = drive(c.mailboxes("*"), answer)
    assert result == [] and [op for _, op, _ in asked] == ["mailboxes", "admin"]
    assert sorted(c.route.addresses) == [1, 2] and not c.route.failover
    _, asked = drive(c.mailboxes("*"), answer)
    assert [op for _, op, _ in asked] == ["mailboxes"], "no failover since: no refresh"


def test_a_principal_refused_members_stops_asking_and_its_call_still_succeeds() -> None:
    c = calls()
    c.route.failover = True

    def answer(node: int, op: str, args: dict[str, Any]) -> ClientReply:
        if op == "admin":
            return error_reply(0, Code.FORBIDDEN, "principal \"app\" may not admin: it is not an admin")
        return ok_reply(0, {"mailboxes": [], "applied": 3})

    result, _ = drive(c.mailboxes("*"), answer)
    assert result == [] and sorted(c.route.addresses) == [1, 2, 3]
    c.route.failover = True
    _, asked = drive(c.mailboxes("*"), answer)
    assert [op for _, op, _ in asked] == ["mailboxes"]


def test_a_change_follows_the_leader_and_refusals_and_timeouts_are_told_apart() -> None:
    c = calls()

    def at_leader(answer: ClientReply) -> Any:
        return lambda node, op, args: not_leader_reply(0, 3, "tcp://127.0.0.1:7103") if node != 3 else answer

    done = ok_reply(0, {**view(3, (1, "voter", ""), (3, "voter", "")), "index": 9})
    result, asked = drive(c.admin("remove", 2), at_leader(done))
    assert [n for n, _, _ in asked] == [1, 3] and result.index == 9 and result.voters == [1, 3]
    assert asked[-1][2] == {"op": "remove", "id": 2, "rpc": "", "pub": "", "keys": (), "force": False}

    # The replies as the node makes them from the Service's answers (zrep.node.requests).
    refused = reply_for(0, admin_result({"ok": False, "error": "UNAVAILABLE",
                                         "message": "the live voters would not make a quorum"}), str)
    with pytest.raises(Rejected) as e:
        drive(c.admin("remove", 1), at_leader(refused))
    assert e.value.code == "REFUSED" and "node 3 refused the change: the live voters" in str(e.value)

    late = reply_for(0, admin_result({"ok": False, "error": "TIMEOUT", "message": "the change did not commit in time"}),
                     str)
    with pytest.raises(OutcomeUnknown, match="did not commit in time"):
        drive(c.admin("demote", 1), at_leader(late))


def test_bad_changes_are_refused_before_anything_is_sent() -> None:
    c = calls()
    for op, kw in [("add", {}), ("remove", {"rpc": "tcp://x"}), ("members", {}), ("drop", {})]:
        with pytest.raises(Rejected):
            drive(c.admin(op, 4, **kw), lambda *a: pytest.fail("nothing may be sent"))


def test_a_change_whose_unanswered_attempt_applied_it_is_answered_from_members() -> None:
    c = calls()
    c.route.preferred = 3
    after = view(1, (1, "voter", ""), (2, "voter", ""))  # node 3, the old leader, is gone

    def answer(node: int, op: str, args: dict[str, Any]) -> ClientReply | None:
        if node == 3:
            return None  # it applied the removal of itself, then failed before answering
        if args["op"] == "remove":
            return reply_for(0, {"ok": False, "error": "BAD_REQUEST", "message": "node 3 is not a member"}, str)
        return ok_reply(0, after)

    result, asked = drive(c.admin("remove", 3), answer)
    assert [(n, a["op"]) for n, _, a in asked] == [(3, "remove"), (1, "remove"), (1, "members")]
    assert result.voters == [1, 2]

    # The same refusal without an unanswered attempt is the caller's mistake: Rejected.
    with pytest.raises(Rejected, match="not a member"):
        drive(c.admin("remove", 3), answer)


def test_a_members_answer_with_a_new_address_moves_the_link_there() -> None:
    ctx = zmq.Context()
    old, new = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    try:
        old_port, new_port = old.bind_to_random_port("tcp://127.0.0.1"), new.bind_to_random_port("tcp://127.0.0.1")
        c = calls()
        c.route.addresses.update({1: f"tcp://127.0.0.1:{old_port}"})
        links = Links(c.route.addresses, 1 << 20)
        try:
            assert links.send(1, b"first", time.monotonic() + 2) == ""
            assert old.poll(2000) and old.recv_multipart()[-1] == b"first"
            c._learn(membership_of(1, view(1, (1, "voter", f"tcp://127.0.0.1:{new_port}"), (2, "voter", ""))))
            assert c.route.addresses[1] == f"tcp://127.0.0.1:{new_port}"
            assert links.send(1, b"second", time.monotonic() + 2) == ""
            assert new.poll(2000) and new.recv_multipart()[-1] == b"second"
        finally:
            links.close()
    finally:
        old.close(0)
        new.close(0)
        ctx.term()
