"""Stores filled the same way in unit and real-process tests."""

from __future__ import annotations

from zrep.store.commands import pack_send
from zrep.store.store import Store


def filled_store(n: int, **limits: int) -> Store:
    s = Store(**limits)
    for i in range(1, n + 1):
        s.apply(i, pack_send("c", i, i, f"s{i % 3}", f"box{i % 2}", b"m%d" % i))
    return s
