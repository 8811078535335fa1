"""Per-node links: one DEALER per node, sending frames and taking the replies.

Job: execute the Open/Send/Wait effects of zrep.client._retry over ZeroMQ,
blocking (`Links`) or on asyncio (`AsyncLinks`, zmq.asyncio).

Wire: one DEALER per node, made on first use (LINGER 0, a random routing id,
IMMEDIATE so a request never queues for a node we are not connected to);
each frame is a `ClientRequest` / `ClientReply` from zrep.wire.codec, or for
`send_many` a `ClientBatch` answered in `ClientReplies` frames.

Invariants
- A send never blocks: a link never connected waits at most until
  `connect_by` for its first connection; a link whose connection was lost
  fails at once (waiting would leave other nodes' answers unread).
- A garbled reply is dropped (the attempt times out and is retried).
- AsyncLinks hands each reply to the call that sent its req_id (`expect`);
  a reply no call expects is dropped as stale.
Not thread-safe (ZeroMQ sockets): one client per thread, or per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable

import zmq
import zmq.asyncio

from zrep.client._errors import ClientError
from zrep.client._retry import CANNOT_CONNECT
from zrep.errors import DecodeError
from zrep.wire import codec
from zrep.wire.client_messages import ClientReplies, ClientReply

RECONNECT_IVL_MS = 50
Replies = list[tuple[int, ClientReply]]


def _configure(sock: zmq.Socket, address: str) -> None:
    sock.linger = 0
    sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a node we are not connected to
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.ROUTING_ID, b"client-" + uuid.uuid4().hex[:16].encode())
    sock.connect(address)


def _replies_in(node: int, payload: bytes, max_frame_bytes: int) -> Replies:
    try:
        frame = codec.decode(payload, max_frame_bytes)
    except DecodeError:
        return []  # a garbled reply: the attempt times out and is retried
    if type(frame) is ClientReply:
        return [(node, frame)]
    if type(frame) is ClientReplies:  # the answers to a ClientBatch
        return [(node, reply) for reply in frame.replies]
    return []


def _closed() -> ClientError:
    return ClientError("this client is closed; make a new one")


class Links:
    """Blocking links: `send` and `poll` on zmq sockets."""

    def __init__(self, addresses: dict[int, str], max_frame_bytes: int) -> None:
        self._addresses = addresses  # shared with the Route: a leader hint may add a member
        self._max_frame_bytes = max_frame_bytes
        self._ctx = zmq.Context()
        self._sockets: dict[int, zmq.Socket] = {}
        self._node_of_socket: dict[zmq.Socket, int] = {}
        self._poller = zmq.Poller()
        self._connected_once: set[int] = set()  # nodes a request has reached over the current socket
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def open(self, nodes: Iterable[int]) -> None:
        for node in nodes:
            self._socket(node)

    def _socket(self, node: int) -> zmq.Socket:
        sock = self._sockets.get(node)
        if sock is None:
            if self._closed:
                raise _closed()
            sock = self._ctx.socket(zmq.DEALER)
            _configure(sock, self._addresses[node])
            self._sockets[node] = sock
            self._node_of_socket[sock] = node
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def send(self, node: int, payload: bytes, connect_by: float) -> str:
        """Send one frame; '' on success, else why it could not leave."""
        sock = self._socket(node)
        while True:
            try:
                sock.send(payload, zmq.NOBLOCK)
                self._connected_once.add(node)
                return ""
            except zmq.Again:
                if node in self._connected_once:
                    return f"lost the connection to {self._addresses[node]}"
                # A fresh socket: wait briefly for its first connection.
                wait_ms = (connect_by - time.monotonic()) * 1000
                if wait_ms <= 0 or not sock.poll(max(1, int(wait_ms)), zmq.POLLOUT):
                    return CANNOT_CONNECT + self._addresses[node]

    def poll(self, until: float) -> Replies:
        """Replies that arrive before `until` (returns at the first batch)."""
        timeout_ms = max(0, int((until - time.monotonic()) * 1000 + 0.999))
        out: Replies = []
        for sock, _ in self._poller.poll(timeout_ms):
            node = self._node_of_socket[sock]
            while True:
                try:
                    payload = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                out += _replies_in(node, payload, self._max_frame_bytes)
        return out


class Inbox:
    """The replies to one asyncio call, put by the link readers, taken by the call."""

    __slots__ = ("_items", "_event")

    def __init__(self) -> None:
        self._items: Replies = []
        self._event = asyncio.Event()

    def put(self, item: tuple[int, ClientReply]) -> None:
        self._items.append(item)
        self._event.set()

    async def take(self, until: float) -> Replies:
        """What arrived, or [] at `until`."""
        if not self._items:
            delay = until - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._event.wait()
        items, self._items = self._items, []
        self._event.clear()
        return items


class AsyncLinks:
    """asyncio links: one reader task per socket routes replies to the calls' inboxes."""

    def __init__(self, addresses: dict[int, str], max_frame_bytes: int) -> None:
        self._addresses = addresses
        self._max_frame_bytes = max_frame_bytes
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[int, zmq.asyncio.Socket] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._expected: dict[int, Inbox] = {}  # req_id -> the inbox of the call that sent it
        self._connected_once: set[int] = set()
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def expect(self, req_ids: Iterable[int], inbox: Inbox) -> None:
        for r in req_ids:
            self._expected[r] = inbox

    def forget(self, req_ids: Iterable[int]) -> None:
        for r in req_ids:
            self._expected.pop(r, None)

    def open(self, nodes: Iterable[int]) -> None:
        for node in nodes:
            self._socket(node)

    def _socket(self, node: int) -> zmq.asyncio.Socket:
        sock = self._sockets.get(node)
        if sock is None:
            if self._closed:
                raise _closed()
            sock = self._ctx.socket(zmq.DEALER)
            _configure(sock, self._addresses[node])
            self._sockets[node] = sock
            self._readers.append(asyncio.get_running_loop().create_task(self._read(node, sock)))
        return sock

    async def _read(self, node: int, sock: zmq.asyncio.Socket) -> None:
        while True:
            payload = await sock.recv()
            for item in _replies_in(node, payload, self._max_frame_bytes):
                inbox = self._expected.get(item[1].req_id)
                if inbox is not None:
                    inbox.put(item)

    async def send(self, node: int, payload: bytes, connect_by: float) -> str:
        """Send one frame; '' on success, else why it could not leave."""
        sock = self._socket(node)
        while True:
            try:
                await sock.send(payload, zmq.NOBLOCK)
                self._connected_once.add(node)
                return ""
            except zmq.Again:
                if node in self._connected_once:
                    return f"lost the connection to {self._addresses[node]}"
                wait_ms = (connect_by - time.monotonic()) * 1000
                if wait_ms <= 0 or not await sock.poll(max(1, int(wait_ms)), zmq.POLLOUT):
                    return CANNOT_CONNECT + self._addresses[node]
