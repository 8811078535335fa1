"""zrep's client library: the one public API of the package.

Job: re-export what a program that talks to a cluster needs (the `Client`,
its results and its errors); everything else in `zrep.client` is private:
_client (the blocking Client), _aio (the asyncio Client, public as zrep.aio),
_calls (the calls as sans-I/O steps, seq/low bookkeeping), _retry (one
request's attempts, backoff, hints, targets), _batch (send_many windows and
frames), _links (per-node DEALERs), _results, _errors.
Invariants: imports only zrep.wire, zrep.config, zrep.security and zrep.errors (never the
store or the node); `__all__` is pinned by tests/client/test_exports.py.
"""

from zrep.client._client import Client
from zrep.client._errors import (
    ClientError,
    ClientExpired,
    NotAuthorized,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from zrep.client._results import MailboxInfo, MemberInfo, Membership, NodeStatus, ReadResult, Receipt
from zrep.wire.client_messages import Message

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
