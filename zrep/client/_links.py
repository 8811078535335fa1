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
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from zrep.client._errors import ClientError, NotAuthorized
from zrep.client._retry import CANNOT_CONNECT
from zrep.config import ClusterConfig
from zrep.errors import DecodeError
from zrep.security.keys import KeyFileError, load_secret
from zrep.security.zap import curve_client
from zrep.wire import codec
from zrep.wire.client_messages import ClientReplies, ClientReply

_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)

RECONNECT_IVL_MS = 50
Replies = list[tuple[int, ClientReply]]


@dataclass(frozen=True, slots=True)
class Curve:
    """A client's CURVE keys and each node's public key (the first its cluster file lists)."""

    public: bytes
    secret: bytes
    server_keys: dict[int, tuple[bytes, ...]]  # each node's listed keys, its current one first
    key_file: str

    def refused(self, node: int, address: str) -> NotAuthorized:
        return NotAuthorized(f"node {node} ({address}) refused key {self.public[:8].decode()}... ({self.key_file}): "
                             "not listed in the cluster file; ask an operator to add it to a [[principals]] entry "
                             "and reload the nodes")

    def failed(self, node: int, address: str) -> str:
        keys = ", ".join(k[:8].decode() + "..." for k in self.server_keys[node])
        return (f"secure handshake with node {node} ({address}) failed: its key is none of {keys} as the cluster "
                "file says, or it runs without security")


_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def curve_for(config: ClusterConfig, key: str | os.PathLike[str] | None) -> Curve | None:
    """The client's CURVE settings for this cluster: None when it runs without security."""
    if not config.security.curve:
        return None
    if key is None:
        raise NotAuthorized("this cluster requires a client key (security.mode is curve): pass --key FILE, "
                            "set ZREP_KEY, or Client(key=...); make one with: zrep keys new NAME")
    try:
        pair = load_secret(key)
    except KeyFileError as e:
        raise NotAuthorized(str(e)) from None
    return Curve(pair.public, pair.secret, {n: tuple(ks) for n, ks in config.security.node_keys.items() if ks},
                 str(key))


def _configure(sock: zmq.Socket, address: str, curve: Curve | None = None, node: int = 0, key_index: int = 0) -> None:
    if curve is not None:
        keys = curve.server_keys[node]
        curve_client(sock, curve.public, curve.secret, keys[key_index % len(keys)])
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


RETRY_NEXT_KEY = "retry with the node's next key"


def _closed() -> ClientError:
    return ClientError("this client is closed; make a new one")


class _KeyRotation:
    """The handshake events both link kinds react to the same way (curve): a refused key is final;
    a node whose key is not the one we tried (twice in a row: a rotation under way) is tried with
    its next listed key, and once every listed key failed, the reason is returned."""

    _curve: Curve | None
    _addresses: dict[int, str]
    _protocol_failures: dict[int, int]
    _key_index: dict[int, int]

    def _drop(self, node: int) -> None:
        raise NotImplementedError

    def _on_handshake(self, node: int, event: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise self._curve.refused(node, self._addresses[node])  # type: ignore[union-attr]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._protocol_failures[node] = 0
            return ""
        self._protocol_failures[node] = self._protocol_failures.get(node, 0) + 1  # a wrong server key
        if self._protocol_failures[node] < 2:
            return ""
        self._protocol_failures[node] = 0
        tried = self._key_index.get(node, 0) + 1
        self._key_index[node] = tried
        self._drop(node)
        if tried % len(self._curve.server_keys[node]) == 0:  # type: ignore[union-attr]
            return self._curve.failed(node, self._addresses[node])  # type: ignore[union-attr]
        return RETRY_NEXT_KEY


class Links(_KeyRotation):
    """Blocking links: `send` and `poll` on zmq sockets."""

    def __init__(self, addresses: dict[int, str], max_frame_bytes: int, curve: Curve | None = None) -> None:
        self._addresses = addresses  # shared with the Route: a leader hint may add a member
        self._max_frame_bytes = max_frame_bytes
        self._curve = curve
        self._monitors: dict[int, zmq.Socket] = {}  # curve: each DEALER's handshake events
        self._protocol_failures: dict[int, int] = {}
        self._key_index: dict[int, int] = {}  # curve: which of a node's listed keys we try (rotation)
        self._ctx = zmq.Context()
        self._sockets: dict[int, zmq.Socket] = {}
        self._node_of_socket: dict[zmq.Socket, int] = {}
        self._poller = zmq.Poller()
        self._connected_once: set[int] = set()  # nodes a request has reached over the current socket
        self._endpoint: dict[int, str] = {}  # the address each socket connects to
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for monitor in self._monitors.values():
            monitor.close(linger=0)
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def open(self, nodes: Iterable[int]) -> None:
        for node in nodes:
            self._socket(node)

    def _socket(self, node: int) -> zmq.Socket:
        sock = self._sockets.get(node)
        if sock is not None and self._endpoint[node] != self._addresses[node]:
            # A fresh socket, not disconnect + connect: zmq drops the old pipe asynchronously,
            # and a request sent meanwhile could still leave by it.
            self._drop(node)
            sock = None
        if sock is None:
            if self._closed:
                raise _closed()
            sock = self._ctx.socket(zmq.DEALER)
            if self._curve is not None:
                self._monitors[node] = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
            _configure(sock, self._addresses[node], self._curve, node, self._key_index.get(node, 0))
            self._endpoint[node] = self._addresses[node]
            self._sockets[node] = sock
            self._node_of_socket[sock] = node
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _check_handshakes(self, node: int) -> str:
        """Curve: a refused key is a clear error at once, not a timeout (the refusal is silent otherwise).
        A node whose key is not the one we tried (a rotation under way) is tried with its next listed
        key; when none works, '' is not returned but why, so the call moves on to another node."""
        monitor = self._monitors.get(node)
        while monitor is not None and monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            problem = self._on_handshake(node, event)
            if problem:
                return problem
        return ""

    def _drop(self, node: int) -> None:
        sock = self._sockets.pop(node, None)
        if sock is not None:
            self._poller.unregister(sock)
            del self._node_of_socket[sock]
            sock.close(linger=0)
        monitor = self._monitors.pop(node, None)
        if monitor is not None:
            monitor.close(linger=0)
        self._connected_once.discard(node)

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
                if self._curve is not None:  # watch the handshake in short steps: a refusal is final
                    problem = self._check_handshakes(node)
                    if problem == RETRY_NEXT_KEY:
                        sock = self._socket(node)
                        continue
                    if problem:
                        return problem
                    if wait_ms > 0 and not sock.poll(min(20, max(1, int(wait_ms))), zmq.POLLOUT):
                        continue
                if wait_ms <= 0 or not sock.poll(max(1, int(wait_ms)), zmq.POLLOUT):
                    return CANNOT_CONNECT + self._addresses[node]

    def poll(self, until: float) -> Replies:
        """Replies that arrive before `until` (returns at the first batch)."""
        timeout_ms = max(0, int((until - time.monotonic()) * 1000 + 0.999))
        out: Replies = []
        for sock, _ in self._poller.poll(timeout_ms):
            node = self._node_of_socket[sock]
            frames = 0
            while True:
                # After a lone first reply, ZMQ_EVENTS says whether another waits at half the cost
                # of a recv failing with Again (pyzmq builds an exception); past it, reading on
                # until Again is cheaper than asking before each frame.
                if frames == 1 and not sock.get(_EVENTS) & _POLLIN:
                    break
                frames += 1
                try:
                    payload = sock.recv(_NOBLOCK)
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


class AsyncLinks(_KeyRotation):
    """asyncio links: one reader task per socket routes replies to the calls' inboxes."""

    def __init__(self, addresses: dict[int, str], max_frame_bytes: int, curve: Curve | None = None) -> None:
        self._curve = curve
        self._monitors: dict[int, tuple[zmq.asyncio.Socket, zmq.Socket]] = {}  # curve: (monitor, its sync view)
        self._protocol_failures: dict[int, int] = {}
        self._addresses = addresses
        self._max_frame_bytes = max_frame_bytes
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[int, zmq.asyncio.Socket] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._expected: dict[int, Inbox] = {}  # req_id -> the inbox of the call that sent it
        self._connected_once: set[int] = set()
        self._endpoint: dict[int, str] = {}  # the address each socket connects to
        self._key_index: dict[int, int] = {}  # curve: which of a node's listed keys we try now
        self._reader_of: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    def _check_handshakes(self, node: int) -> str:
        """Curve: a refused key raises NotAuthorized at once. A node whose key is not the one we
        tried (twice in a row: a rotation under way) is tried with its next listed key, as the
        blocking client does; when none works, why, so the call moves on to another node."""
        pair = self._monitors.get(node)
        while pair is not None and pair[1].poll(0):
            event = recv_monitor_message(pair[1])["event"]
            problem = self._on_handshake(node, event)
            if problem:
                return problem
        return ""

    def _drop(self, node: int) -> None:
        """Close the node's socket (and its reader and monitor): the next send makes a fresh one."""
        sock = self._sockets.pop(node, None)
        reader = self._reader_of.pop(node, None)
        if reader is not None:
            reader.cancel()
        pair = self._monitors.pop(node, None)
        if pair is not None:
            pair[0].close(linger=0)
        if sock is not None:
            sock.close(linger=0)
        self._connected_once.discard(node)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for monitor, _ in self._monitors.values():
            monitor.close(linger=0)
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
        if sock is not None and self._endpoint[node] != self._addresses[node]:
            self._drop(node)  # a fresh socket at the new address (disconnect is asynchronous)
            sock = None
        if sock is None:
            if self._closed:
                raise _closed()
            sock = self._ctx.socket(zmq.DEALER)
            if self._curve is not None:  # a sync view of the monitor: polled without awaiting
                monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
                self._monitors[node] = (monitor, zmq.Socket.shadow(monitor.underlying))
            _configure(sock, self._addresses[node], self._curve, node, self._key_index.get(node, 0))
            self._endpoint[node] = self._addresses[node]
            self._sockets[node] = sock
            task = asyncio.get_running_loop().create_task(self._read(node, sock))
            self._readers.append(task)
            self._reader_of[node] = task
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
                if self._curve is not None:  # watch the handshake in short steps: a refusal is final
                    problem = self._check_handshakes(node)
                    if problem == RETRY_NEXT_KEY:
                        sock = self._socket(node)
                        continue
                    if problem:
                        return problem
                    if wait_ms > 0 and not await sock.poll(min(20, max(1, int(wait_ms))), zmq.POLLOUT):
                        continue
                if wait_ms <= 0 or not await sock.poll(max(1, int(wait_ms)), zmq.POLLOUT):
                    return CANNOT_CONNECT + self._addresses[node]
