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
    "MemberInfo",
    "Membership",
    "Message",
    "NodeStatus",
    "NotAuthorized",
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


def test_zrep_aio_has_the_same_names_with_its_own_client() -> None:
    import zrep.aio
    from zrep.client._aio import Client as AioClient

    assert zrep.aio.__all__ == EXPECTED
    assert zrep.aio.Client is AioClient and zrep.aio.Client is not zrep.client.Client
    for name in EXPECTED:
        if name != "Client":
            assert getattr(zrep.aio, name) is getattr(zrep.client, name), name  # one except serves both
    blocking = {n for n in dir(zrep.client.Client) if not n.startswith("_")}
    asynchronous = {n for n in dir(AioClient) if not n.startswith("_")}
    assert blocking == asynchronous  # the same calls
