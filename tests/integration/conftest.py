"""Real-process tests: every test here is marked `processes`; fixtures for real local clusters.

`make_cluster(**kwargs)` builds a `LocalCluster` (tests/integration/harness.py) in the
test's tmp_path; `cluster` is a started 3-node cluster. At teardown every
process group either started is killed, whatever the test's outcome, and the
tail of every node's log is printed (pytest shows it when the test failed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so tests can `from harness import ...`

from harness import LocalCluster  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.processes)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    made: list[LocalCluster] = []

    def make(start: bool = True, **kwargs: Any) -> LocalCluster:
        c = LocalCluster(tmp_path / f"cluster-{len(made)}", start=False, **kwargs)
        made.append(c)  # registered before any process starts, so none can leak
        if start:
            c.start()
        return c

    try:
        yield make
    finally:
        for c in made:
            try:
                print(c.log_tails())
            finally:
                c.close()


@pytest.fixture
def cluster(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    return make_cluster()
