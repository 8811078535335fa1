"""The errors a client call raises, and what each promises about the write.

Job: one exception per outcome a caller must handle differently.
Invariants: `Unavailable` promises nothing was accepted; `OutcomeUnknown`
(and its `ClientExpired`) says a write may have been applied; `Rejected`
is a final refusal that retrying cannot change. All are `ZrepError`s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zrep.errors import ZrepError

if TYPE_CHECKING:
    from zrep.client._results import Receipt


class ClientError(ZrepError):
    """Base of the errors a client call raises. Raised by `send_many`, `receipts` holds
    by position the Receipt of each message stored, None for the others."""

    receipts: list[Receipt | None] | None = None


class Unavailable(ClientError):
    """No node, or no leader, answered before the deadline: the cluster has no quorum
    or is unreachable. Nothing was accepted; retrying later is safe."""


class OutcomeUnknown(ClientError):
    """A write may have been accepted but no answer came in time. Calling the same write
    again on the same Client retries it with the same (client id, seq): safe, applied at
    most once in all."""


class ClientExpired(OutcomeUnknown):
    """The store forgot this client id (evicted or never admitted): the outcome of its
    pending write is unknown and retrying with this id cannot tell. Use a new client id."""


class Rejected(ClientError):
    """The store or node refused the request (bad mailbox, too large, no such message,
    bad request). Retrying the same request gets the same answer."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class NotAuthorized(ClientError):
    """The cluster refused this client's key (not listed, or the wrong key for a node), or a
    node's key is not the one the cluster file lists. Retrying cannot help until an operator
    changes the cluster file or the client uses another key."""
