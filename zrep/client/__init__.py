"""zrep's client library: the one public API of the package.

Job: re-export what a program that talks to a cluster needs (the `Client`,
its results and its errors); everything else in `zrep.client` is private.
Invariants: imports only zrep.wire, zrep.config and zrep.errors (never the
store or the node); `__all__` is pinned by tests/client/test_exports.py.
"""

from zrep.client._client import (
    Client,
    ClientError,
    ClientExpired,
    MailboxInfo,
    NodeStatus,
    OutcomeUnknown,
    ReadResult,
    Receipt,
    Rejected,
    Unavailable,
)
from zrep.wire.client_messages import Message

__all__ = [
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
