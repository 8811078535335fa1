"""zrep.security.zap with real CURVE sockets on loopback: the handler runs in the caller's loop, no thread."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zrep.local.cluster import free_ports
from zrep.security.zap import ZapHandler, curve_client, curve_server


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _server(ctx, zap: ZapHandler | None, secret: bytes, port: int) -> zmq.Socket:
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    curve_server(s, secret, "zrep-rpc", handshake_ms=2000)
    s.bind(f"tcp://127.0.0.1:{port}")
    return s


def _client(ctx, server_public: bytes, port: int, keypair=None) -> tuple[zmq.Socket, zmq.Socket]:
    public, secret = keypair or zmq.curve_keypair()
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    curve_client(d, public, secret, server_public, handshake_ms=2000)
    monitor = d.get_monitor_socket()
    d.connect(f"tcp://127.0.0.1:{port}")
    return d, monitor


def _pump(zap: ZapHandler | None, server: zmq.Socket, monitor: zmq.Socket, seconds: float, want: set[int]):
    """One loop polling the server, the ZAP handler and the client's monitor, as a node's loop does."""
    poller = zmq.Poller()
    poller.register(server, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    if zap is not None:
        poller.register(zap.socket, zmq.POLLIN)
    events, frames = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = dict(poller.poll(50))
        if zap is not None and zap.socket in ready:
            zap.handle()
        if monitor in ready:
            events.append(recv_monitor_message(monitor)["event"])
            if want & set(events):
                break
        if server in ready:
            route, payload = server.recv_multipart(copy=False)
            frames.append((payload.bytes, payload.get("User-Id")))
            break
    return events, frames


def test_a_listed_key_gets_through_with_its_key_as_user_id(ctx):
    assert threading.active_count() >= 1
    threads_before = threading.active_count()
    server_pub, server_sec = zmq.curve_keypair()
    client = zmq.curve_keypair()
    zap = ZapHandler(ctx, lambda domain, key: domain == "zrep-rpc" and key == client[0])
    [port] = free_ports("127.0.0.1", 1, set())
    server = _server(ctx, zap, server_sec, port)
    dealer, monitor = _client(ctx, server_pub, port, client)
    dealer.send(b"hello")
    events, frames = _pump(zap, server, monitor, 10, set())
    assert frames == [(b"hello", client[0].decode())]
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED in events
    assert zap.counts.accepted == 1 and zap.counts.refused == 0
    assert threading.active_count() == threads_before  # no authenticator thread


def test_an_unknown_key_is_refused_and_the_client_can_tell_at_once(ctx):
    server_pub, server_sec = zmq.curve_keypair()
    refused = []
    zap = ZapHandler(ctx, lambda domain, key: False, on_refuse=lambda d, k, why: refused.append((d, k, why)))
    [port] = free_ports("127.0.0.1", 1, set())
    server = _server(ctx, zap, server_sec, port)
    dealer, monitor = _client(ctx, server_pub, port)
    dealer.send(b"let me in")
    started = time.monotonic()
    events, frames = _pump(zap, server, monitor, 10, {zmq.EVENT_HANDSHAKE_FAILED_AUTH})
    assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in events and frames == []
    assert time.monotonic() - started < 1.0  # a clear answer at once, not a timeout
    assert refused and refused[0][0] == "zrep-rpc" and refused[0][2] == "key not listed"


def test_without_a_handler_a_curve_server_refuses_everyone(ctx):
    """libzmq admits any key when no ZAP handler is bound; curve_server makes it fail closed."""
    server_pub, server_sec = zmq.curve_keypair()
    [port] = free_ports("127.0.0.1", 1, set())
    server = _server(ctx, None, server_sec, port)
    dealer, monitor = _client(ctx, server_pub, port)
    dealer.send(b"anyone?")
    events, frames = _pump(None, server, monitor, 1.5, {zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                                                     zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL})
    assert frames == []
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events


def test_a_plain_client_gets_nothing_from_a_curve_server(ctx):
    server_pub, server_sec = zmq.curve_keypair()
    zap = ZapHandler(ctx, lambda domain, key: True)
    [port] = free_ports("127.0.0.1", 1, set())
    server = _server(ctx, zap, server_sec, port)
    plain = ctx.socket(zmq.DEALER)
    plain.linger = 0
    plain.connect(f"tcp://127.0.0.1:{port}")
    plain.send(b"no curve")
    monitor = plain.get_monitor_socket()
    _, frames = _pump(zap, server, monitor, 1.0, set())
    assert frames == [] and zap.counts.accepted == 0


def test_an_error_in_the_decision_refuses_the_key(ctx):
    server_pub, server_sec = zmq.curve_keypair()

    def broken(domain: str, key: bytes) -> bool:
        raise RuntimeError("policy table half loaded")

    zap = ZapHandler(ctx, broken)
    [port] = free_ports("127.0.0.1", 1, set())
    server = _server(ctx, zap, server_sec, port)
    dealer, monitor = _client(ctx, server_pub, port)
    dealer.send(b"x")
    events, frames = _pump(zap, server, monitor, 10, {zmq.EVENT_HANDSHAKE_FAILED_AUTH})
    assert frames == [] and zmq.EVENT_HANDSHAKE_FAILED_AUTH in events and zap.counts.errors >= 1
