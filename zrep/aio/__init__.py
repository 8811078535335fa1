"""zrep's asyncio client: `zrep.aio.Client`, the same calls as `zrep.client.Client` as coroutines.

Job: the public name of zrep.client._aio, with the results and errors it
shares with the blocking client (the same classes, so one `except` serves both).
Invariants: re-exports only; the logic lives in zrep.client and is shared with
the blocking client.
"""

from zrep.client import (
    ClientError,
    ClientExpired,
    MailboxInfo,
    MemberInfo,
    Membership,
    Message,
    NodeStatus,
    NotAuthorized,
    OutcomeUnknown,
    ReadResult,
    Receipt,
    Rejected,
    Unavailable,
)
from zrep.client._aio import Client

__all__ = [
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
