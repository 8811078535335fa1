"""Fast paths against the slow definitions they replace: each must give the same answers."""

from __future__ import annotations

import random

from zrep.service import _DurableRun


class _FakeReplica:
    """durable_on as the real leader computes it: the members whose match reaches the index."""

    def __init__(self, matches: dict[int, int]) -> None:
        self.matches = matches
        self.calls = 0

    def durable_on(self, index: int) -> tuple[int, ...]:
        self.calls += 1
        return tuple(sorted(m for m, match in self.matches.items() if match >= index))


def test_durable_run_equals_durable_on_for_any_order_of_indexes() -> None:
    rng = random.Random(7)
    for _ in range(300):
        matches = {m: rng.randint(0, 30) for m in (1, 2, 3, 4, 5)}
        end = rng.randint(0, 30)
        run = _DurableRun(_FakeReplica(matches), end)
        ref = _FakeReplica(matches)
        # Mostly ascending, as entries are applied, with duplicates naming older indexes.
        asks = sorted(rng.randint(1, end) for _ in range(10)) if end else []
        asks += [rng.randint(1, 31) for _ in range(5)]
        for index in asks:
            assert run.at(index) == list(ref.durable_on(index)), (matches, end, index)


def test_durable_run_asks_the_replica_once_per_run_not_once_per_entry() -> None:
    replica = _FakeReplica({1: 100, 2: 100, 3: 90})
    run = _DurableRun(replica, 100)
    for index in range(1, 101):
        run.at(index)
    assert replica.calls <= 2 * 8  # two runs, each found by a binary search over 100 indexes


def test_durable_run_hands_out_lists_the_caller_may_change() -> None:
    run = _DurableRun(_FakeReplica({1: 5, 2: 5}), 5)
    first = run.at(1)
    first.append(99)
    assert run.at(2) == [1, 2]
