"""The configuration as a log entry, and who counts: (id, incarnation) voters only."""

from __future__ import annotations

import random

import pytest

from zrep.core.membership import (
    CONFIG_MARK,
    Config,
    Member,
    decode_config,
    encode_config,
    is_config,
    provisional_config,
    voter_change,
)
from zrep.core.log import LogView
from zrep.core.messages import Coordinator, Entry, HardState, Promise, Role
from zrep.core.replica import Replica
from zrep.errors import DecodeError

FORMED = Config(7, (Member(1, 11), Member(2, 22), Member(3, 33), Member(4, 0, voter=False)))


def test_a_configuration_round_trips_through_its_log_entry():
    data = encode_config(FORMED)
    assert is_config(data) and data[:1] == CONFIG_MARK
    assert decode_config(data) == FORMED


@pytest.mark.parametrize("data", [b"\xc1", b"\xc1[1,2]", b"\xc1[1,7,[[1,1,true,\"\",\"\"]]]", b"\xc1\xff",
                                  b"\xc1[1,7,[[1,1,true,\"\",\"\",[]],[1,2,true,\"\",\"\",[]]]]", b"x"])
def test_malformed_configuration_entries_are_refused(data):
    with pytest.raises(DecodeError):
        decode_config(data)


def test_only_the_named_incarnation_of_a_voter_counts():
    assert FORMED.counts(1, 11) and not FORMED.counts(1, 12)
    assert not FORMED.counts(4, 0)  # a learner never counts
    assert FORMED.is_member(4, 99)  # a learner added as "0" is whichever disk answers
    assert FORMED.quorum() == 2


def test_a_forming_configuration_counts_any_incarnation_but_needs_every_seed():
    p = provisional_config([1, 2, 3])
    assert p.counts(2, 12345) and p.quorum() == 3
    with pytest.raises(ValueError):
        encode_config(p)


def test_voter_change_counts_voter_keys():
    assert voter_change(FORMED, FORMED.without(4)) == 0  # a learner
    assert voter_change(FORMED, FORMED.without(3)) == 1
    assert voter_change(FORMED, FORMED.with_member(Member(3, 34))) == 2  # a new disk is a new voter


def _candidate() -> Replica:
    r = Replica(1, FORMED, incarnation=11, rng=random.Random(1))
    r._become_candidate()
    r.ready()
    return r


def test_a_promise_from_another_incarnation_does_not_elect():
    r = _candidate()
    r.step(Promise(2, 1, r.hs.epoch, True, 999))  # node 2's disk was wiped: a new incarnation
    r.step(Promise(4, 1, r.hs.epoch, True, 44))  # a learner
    assert r.role == Role.CANDIDATE
    r.step(Promise(3, 1, r.hs.epoch, True, 33))
    assert r.role == Role.LEADER


def test_learners_and_observers_never_campaign():
    observer = Replica(2, FORMED, incarnation=999, rng=random.Random(1))  # a wiped node 2
    learner = Replica(4, FORMED, incarnation=44, rng=random.Random(1))
    for r in (observer, learner):
        for _ in range(10 * r.timing.election_ticks):
            r.tick()
        assert r.role == Role.FOLLOWER and not r.can_campaign()
        r.step(Coordinator(1, r.id, 5, 0, 0, 11))  # still answers by the usual rules
        assert r.ready().after_persist[0].granted


def _pump(nodes: dict[int, Replica], ticks: int) -> None:
    """Run `nodes` (only they are up) for `ticks`, delivering every message at once."""
    for _ in range(ticks):
        for r in nodes.values():
            r.tick()
        moving = True
        while moving:
            moving = False
            for r in list(nodes.values()):
                if not r.has_ready():
                    continue
                ready = r.ready()
                r.advance(ready)
                for m in (*ready.messages, *ready.after_persist):
                    targets = [d for d in nodes if d != r.id] if m.dst == 0 else [m.dst]
                    for d in targets:
                        if d in nodes:
                            nodes[d].step(m)
                            moving = True


def test_a_wiped_voter_cannot_help_elect_a_node_that_lacks_a_committed_entry():
    """The issue's counterexample: e committed on A (1) and C (3), B (2) lags; C is wiped and
    comes back under a new incarnation; A is down. B and the new C must wait, not forget."""
    three = Config(7, (Member(1, 11), Member(2, 22), Member(3, 33)))
    entries = [Entry(1, 1, encode_config(three)), Entry(1, 2, b"")]
    b = Replica(2, three, incarnation=22, rng=random.Random(2), hard_state=HardState(1, 1),
                log=LogView(entries), commit=2)  # lacks e (index 3), committed on 1 and 3
    wiped_c = Replica(3, Config(0, ()), incarnation=99, rng=random.Random(3))  # --join, empty
    _pump({2: b, 3: wiped_c}, 40 * b.timing.election_ticks)
    assert b.role != Role.LEADER and wiped_c.role != Role.LEADER
    assert b.hs.epoch == 1  # it never even claimed an epoch: the new C's answers do not count


def test_a_node_added_back_after_its_removal_starts_with_nothing_known():
    """The removed incarnation's progress (its match, its incarnation) must not be what a
    promotion of the re-added learner pins: a dead disk would become a voter again."""
    r = _candidate()
    r.step(Promise(2, 1, r.hs.epoch, True, 22))
    assert r.role == Role.LEADER
    pr = r.tracker[3]
    pr.inc, pr.match = 33, r.log.last_index  # node 3 was caught up under its old disk
    r.commit = r._epoch_start = r.log.last_index  # (as if its no-op committed)
    index, why = r.change_config(FORMED.without(4).without(3))
    assert index and not why
    r.commit = index
    index, why = r.change_config(FORMED.without(4).without(3).with_member(Member(3, 0, voter=False)))
    assert index, why
    assert r.tracker[3].inc == 0 and r.tracker[3].match == 0


def test_a_node_demoted_by_a_pending_configuration_still_runs_while_the_committed_voters_need_it():
    """Voters 1-4 (committed); the leader 1 appended a configuration demoting 3, which only 1
    and 3 hold, then died. 3 holds the freshest log, so 2 and 4 cannot win without it: 3 must
    run (counting promises by its latest configuration, not its own), commit the change and
    step down (the Raft thesis, 4.2.2). Found by the 5-node simulator sweep, seed 4940."""
    four = Config(7, (Member(1, 11), Member(2, 22), Member(3, 33), Member(4, 44)))
    demoted = four.with_member(Member(3, 33, voter=False))
    common = [Entry(1, 1, encode_config(four)), Entry(1, 2, b"")]
    nodes = {
        2: Replica(2, four, incarnation=22, rng=random.Random(2), hard_state=HardState(1, 1),
                   log=LogView(common), commit=2),
        3: Replica(3, four, incarnation=33, rng=random.Random(3), hard_state=HardState(1, 1),
                   log=LogView([*common, Entry(1, 3, encode_config(demoted))]), commit=2),
        4: Replica(4, four, incarnation=44, rng=random.Random(4), hard_state=HardState(1, 1),
                   log=LogView(common), commit=2),
    }
    assert not nodes[3].config.counts(3, 33) and nodes[3].can_campaign()
    _pump(nodes, 20 * nodes[2].timing.election_ticks)
    assert all(r.commit >= 3 and r.config == demoted for r in nodes.values())
    assert not nodes[3].can_campaign() and nodes[3].role != Role.LEADER
    assert any(r.role == Role.LEADER for r in nodes.values())
