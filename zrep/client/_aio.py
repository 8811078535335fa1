"""The asyncio client, public as `zrep.aio.Client`: the blocking client's calls as coroutines.

Job: run the steps of zrep.client._calls (the request, retry and answer
logic the blocking Client runs too) over zmq.asyncio links, so many calls
can be in flight from one event loop.

Invariants: the same guarantees as the blocking client: writes exactly once
through retries and failovers, linearizable reads by default; concurrent
calls each get their own seq, and every write's `low` stays at or below the
oldest seq still in flight. Each call registers the req_ids it sends and
takes only their replies. One Client per event loop (not thread-safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

from zrep.client._client import DEFAULT_POLL_S, WATCH_PAGE
from zrep.client._links import AsyncLinks, Curve, Inbox
from zrep.client._results import MailboxInfo, Membership, NodeStatus, ReadResult, Receipt
from zrep.client._retry import (
    Send,
    Steps,
    Wait,
)
from zrep.client._setup import ClientSetup
from zrep.wire.client_messages import Message

T = TypeVar("T")


class Client(ClientSetup):
    """An asyncio connection to a zrep cluster: `async with Client(config) as c: await c.send(...)`.

    `timeout_s` bounds a whole call, retries included; `attempt_timeout_s` is how
    long one node may stay silent before the next is tried.
    """

    _concurrent = True

    def _new_links(self, addresses: dict[int, str], max_frame_bytes: int, curve: Curve | None) -> AsyncLinks:
        return AsyncLinks(addresses, max_frame_bytes, curve)

    async def _drive(self, steps: Steps[T]) -> T:
        """Run the steps of one call over the asyncio links, taking only its own replies."""
        inbox = Inbox()
        sent: list[int] = []
        try:
            effect = next(steps)
            while True:
                if type(effect) is Wait:
                    result = await inbox.take(effect.until)
                elif type(effect) is Send:
                    self._links.expect(effect.req_ids, inbox)
                    sent += effect.req_ids
                    result = await self._links.send(effect.node, effect.payload, effect.connect_by)
                else:
                    result = self._links.open(effect.nodes)
                effect = steps.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            self._links.forget(sent)
            steps.close()

    # --- lifecycle -----------------------------------------------------------

    async def close(self) -> None:
        await self._links.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def preferred_node(self) -> int | None:
        """The node the next write or linearizable read goes to first (None before any answer)."""
        return self._calls.route.preferred

    @property
    def seq(self) -> int:
        """The seq of the last write this client started (0: none yet)."""
        return self._calls.seq

    # --- calls (see zrep.client.Client for what each promises) ---------------

    async def send(self, to: str, body: bytes | str, *, sender: str = "", ack: str = "majority") -> Receipt:
        """Append `body` to mailbox `to`; returns once `ack` replicas have it on disk."""
        return await self._drive(self._calls.send(to, body, sender, ack))

    async def send_many(self, to: str, bodies: Iterable[bytes | str], *, sender: str = "",
                        ack: str = "majority") -> list[Receipt]:
        """Append every body to `to`, pipelined in batch frames; their receipts in order."""
        return await self._drive(self._calls.send_many(to, bodies, sender, ack))

    async def delete(self, mailbox: str, offsets: list[int] | tuple[int, ...]) -> list[int]:
        """Delete messages by offset, all or nothing; returns the offsets deleted."""
        return await self._drive(self._calls.delete(mailbox, offsets))

    async def read(self, mailbox: str, *, after: int = -1, limit: int = 100, stale: bool = False) -> ReadResult:
        """Messages of `mailbox` with offset > `after`, oldest first, at most `limit`
        (linearizable unless `stale=True`)."""
        return await self._drive(self._calls.read(mailbox, after, limit, stale))

    async def mailboxes(self, pattern: str = "*") -> list[MailboxInfo]:
        """Every mailbox whose name matches the glob, with its live message count."""
        return await self._drive(self._calls.mailboxes(pattern))

    async def watch(self, mailbox: str, after: int = -1, poll_s: float = DEFAULT_POLL_S, *,
                    stale: bool = False) -> AsyncIterator[Message]:
        """`async for m in client.watch(box)`: the messages with offset > `after` as they
        are committed, forever, with no gap and no repeat (as the blocking watch)."""
        last = after
        while True:
            result = await self.read(mailbox, after=last, limit=WATCH_PAGE, stale=stale)
            for m in result.messages:
                last = m.offset
                yield m
            if len(result.messages) < WATCH_PAGE:  # after a full page more is waiting: read on at once
                await asyncio.sleep(poll_s)

    async def status(self, timeout_s: float = 1.0) -> list[NodeStatus]:
        """Ask every node at once; a node silent for `timeout_s` is reported down."""
        return await self._drive(self._calls.status(timeout_s))

    async def members(self) -> Membership:
        """As zrep.client.Client.members."""
        return await self._drive(self._calls.members())

    async def admin(self, op: str, node: int, *, rpc: str = "", pub: str = "", keys: Iterable[str] = (),
                    force: bool = False) -> Membership:
        """As zrep.client.Client.admin."""
        return await self._drive(self._calls.admin(op, node, rpc, pub, keys, force))
