"""The blocking client: find a node, send writes with (client id, seq), retry
through failovers, read, list, watch and ask every node for its status.

Job: the public calls of `zrep.client.Client`. Each runs the steps of
zrep.client._calls (the logic it shares with the asyncio client, whose rules
are in zrep.client._calls, _retry and _batch) over blocking ZeroMQ links
(zrep.client._links).

Invariants: one call at a time (a synchronous client), so `low` is the seq
of the current call; every call ends by its deadline (`timeout_s`, retries
included). Not thread-safe (ZeroMQ sockets): one Client per thread.
Imports only the codec, client messages, config and errors from zrep.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from zrep.client._links import Curve, Links
from zrep.client._results import MailboxInfo, Membership, NodeStatus, ReadResult, Receipt
from zrep.client._retry import (
    Send,
    Steps,
    Wait,
)
from zrep.client._setup import ClientSetup
from zrep.wire.client_messages import Message

DEFAULT_POLL_S = 0.2
WATCH_PAGE = 100  # messages per watch read: a page of big bodies must still fit one frame
T = TypeVar("T")


class Client(ClientSetup):
    """A connection to a zrep cluster. See zrep.client._calls for its rules.

    `timeout_s` bounds a whole call, retries included; `attempt_timeout_s` is how
    long one node may stay silent before the next is tried.
    """

    def _new_links(self, addresses: dict[int, str], max_frame_bytes: int, curve: Curve | None) -> Links:
        return Links(addresses, max_frame_bytes, curve)

    def _drive(self, steps: Steps[T]) -> T:
        """Run the steps of one call over the blocking links."""
        try:
            effect = next(steps)
            while True:
                if type(effect) is Wait:
                    result = self._links.poll(effect.until)
                elif type(effect) is Send:
                    result = self._links.send(effect.node, effect.payload, effect.connect_by)
                else:
                    result = self._links.open(effect.nodes)
                effect = steps.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            steps.close()

    # --- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        self._links.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def preferred_node(self) -> int | None:
        """The node the next write or linearizable read goes to first (None before any answer)."""
        return self._calls.route.preferred

    @property
    def seq(self) -> int:
        """The seq of the last write this client made (0: none yet)."""
        return self._calls.seq

    # --- writes --------------------------------------------------------------

    def send(self, to: str, body: bytes | str, *, sender: str = "", ack: str = "majority") -> Receipt:
        """Append `body` to mailbox `to`; returns once `ack` replicas have it on disk."""
        return self._drive(self._calls.send(to, body, sender, ack))

    def send_many(self, to: str, bodies: Iterable[bytes | str], *, sender: str = "",
                  ack: str = "majority") -> list[Receipt]:
        """Append every body to mailbox `to`, pipelined in batch frames; their receipts
        in order, once `ack` replicas have each on disk. Each body is a write of its
        own (consecutive seqs), exactly once across retries like `send`. On an error
        the messages already stored are in the exception's `receipts`."""
        return self._drive(self._calls.send_many(to, bodies, sender, ack))

    def delete(self, mailbox: str, offsets: list[int] | tuple[int, ...]) -> list[int]:
        """Delete messages by offset, all or nothing; returns the offsets deleted."""
        return self._drive(self._calls.delete(mailbox, offsets))

    # --- reads ---------------------------------------------------------------

    def read(self, mailbox: str, *, after: int = -1, limit: int = 100, stale: bool = False) -> ReadResult:
        """Messages of `mailbox` with offset > `after`, oldest first, at most `limit`.

        Linearizable by default (sees every write acknowledged before the call);
        `stale=True` asks any node's local store, whose `applied` says how fresh it is.
        """
        return self._drive(self._calls.read(mailbox, after, limit, stale))

    def mailboxes(self, pattern: str = "*") -> list[MailboxInfo]:
        """Every mailbox whose name matches the glob, with its live message count.

        Linearizable: the wire has no stale variant of this op.
        """
        return self._drive(self._calls.mailboxes(pattern))

    def watch(
        self, mailbox: str, after: int = -1, poll_s: float = DEFAULT_POLL_S, *, stale: bool = False
    ) -> Iterator[Message]:
        """Yield the messages of `mailbox` with offset > `after` as they are committed, forever.

        No gap, no repeat: each read continues from the last offset yielded, and
        offsets are stable, so it holds across failovers and whichever node
        answers. Reads are linearizable by default: a watcher never lags behind
        an acknowledged write and never follows a node cut off in a minority.
        Raises Unavailable if no read succeeds within timeout_s; call again with
        `after` = the last offset seen to resume.
        """
        last = after
        while True:
            result = self.read(mailbox, after=last, limit=WATCH_PAGE, stale=stale)
            for m in result.messages:
                last = m.offset
                yield m
            if len(result.messages) < WATCH_PAGE:  # after a full page more is waiting: read on at once
                time.sleep(poll_s)

    # --- membership ----------------------------------------------------------

    def members(self) -> Membership:
        """The cluster's configuration as the leader sees it: each member's role, incarnation,
        addresses, liveness and lag; whether the latest configuration has committed."""
        return self._drive(self._calls.members())

    def admin(self, op: str, node: int, *, rpc: str = "", pub: str = "", keys: Iterable[str] = (),
              force: bool = False) -> Membership:
        """A membership change at the leader: op is add (a learner; needs rpc and pub), promote,
        demote, remove or update (new rpc and pub). Returns the configuration once the change
        has committed. Raises Rejected("REFUSED") when the leader refuses it (the message says
        why and what to do), OutcomeUnknown when it did not commit in time."""
        return self._drive(self._calls.admin(op, node, rpc, pub, keys, force))

    # --- status --------------------------------------------------------------

    def status(self, timeout_s: float = 1.0) -> list[NodeStatus]:
        """Ask every node at once; a node silent for `timeout_s` is reported down."""
        return self._drive(self._calls.status(timeout_s))
