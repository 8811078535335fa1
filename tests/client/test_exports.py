"""zrep.client's public surface, pinned (as httpx's test_exported_members and trio's test_exports).

A name added to or dropped from `__all__` must change this list on purpose.
"""

from __future__ import annotations

import zrep.client

EXPECTED = [
    "Client",
    "ClientError",
    "ClientExpired",
    "MailboxInfo",
    "Message",
    "NodeStatus",
    "OutcomeUnknown",
    "ReadResult",
    "Receipt",
    "Rejected",
    "Unavailable",
]


def test_all_is_pinned() -> None:
    assert zrep.client.__all__ == EXPECTED


def test_every_exported_name_exists_and_is_public() -> None:
    for name in zrep.client.__all__:
        member = getattr(zrep.client, name)
        assert not name.startswith("_")
        assert getattr(member, "__module__", "").startswith(("zrep.client", "zrep.wire")), name


def test_nothing_public_is_left_out_of_all() -> None:
    public = {n for n in dir(zrep.client) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(zrep.client, n)).__name__ == "module"}
    assert public - modules == set(EXPECTED)
