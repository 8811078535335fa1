"""The runners' freshness check agrees with the node's own on every combination of the files a node writes."""

from __future__ import annotations

import itertools

from zrep.local.datadir import NODE_FILES, is_fresh
from zrep.storage import identity


def test_the_runner_and_the_node_agree_on_a_fresh_directory(tmp_path):
    for n in range(len(NODE_FILES) + 1):
        for names in itertools.combinations(NODE_FILES, n):
            d = tmp_path / "-".join(names or ("none",))
            d.mkdir()
            for name in names:
                (d / name).write_bytes(b"x")
            assert is_fresh(d) == identity.is_fresh(d) == (not names)
    assert is_fresh(tmp_path / "missing") and identity.is_fresh(tmp_path / "missing")
