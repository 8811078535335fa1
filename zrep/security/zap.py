"""ZAP (ZeroMQ's authentication protocol, RFC 27) answered in the caller's own poll loop, and CURVE socket setup.

Job: `ZapHandler` binds `inproc://zeromq.zap.01` in a context and answers
each CURVE handshake's request with 200 (the User-Id is the client's z85
public key) or 400, as `authorize(domain, key)` decides; `curve_server`
and `curve_client` set up sockets.
Invariants
- Fail closed: `curve_server` sets ZAP_DOMAIN and ZAP_ENFORCE_DOMAIN, so a
  server whose handler is missing refuses every key instead of admitting
  any (libzmq's default admits any key when no handler is bound).
- Bind the handler before any CURVE socket of its context; one per context.
- Only CURVE requests are admitted; an exception in `authorize` answers 500.
- `handle` never blocks: it answers what is pending and returns, so a node
  polls the handler's socket beside its others, without a thread (a thread
  would sit beside the snapshot writer's os.fork).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
DEFAULT_HANDSHAKE_MS = 5_000  # a silent TCP peer is closed after this (libzmq's default is 30 s)

Authorize = Callable[[str, bytes], bool]  # (domain, z85 public key) -> admit?


@dataclass(slots=True)
class ZapCounts:
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    refused_keys: dict[bytes, int] = field(default_factory=dict)  # z85 key -> refusals (for one log line each)


class ZapHandler:
    def __init__(self, ctx: zmq.Context, authorize: Authorize,
                 on_refuse: Callable[[str, bytes, str], None] | None = None) -> None:
        self._authorize = authorize
        self._on_refuse = on_refuse
        self.counts = ZapCounts()
        self.socket: zmq.Socket = ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)

    def handle(self) -> int:
        """Answer every pending ZAP request; how many were answered."""
        n = 0
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            self.socket.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # [routing id, b"", version, request id, domain, address, identity, mechanism, *credentials]
        if len(frames) < 8 or frames[1] != b"" or frames[2] != b"1.0":
            self.counts.errors += 1
            return [frames[0], b"", b"1.0", frames[3] if len(frames) > 3 else b"", b"500", b"malformed request", b"", b""]
        route, request_id, domain, mechanism = frames[0], frames[3], frames[4].decode("utf-8", "replace"), frames[7]
        head = [route, b"", b"1.0", request_id]
        try:
            if mechanism != b"CURVE" or len(frames) != 9 or len(frames[8]) != 32:
                return self._refuse(head, domain, b"", "not a CURVE handshake")
            key = z85.encode(frames[8])
            if not self._authorize(domain, key):
                return self._refuse(head, domain, key, "key not listed")
        except Exception as e:  # never admit on an error: answer 500
            self.counts.errors += 1
            return [*head, b"500", f"internal error: {type(e).__name__}".encode(), b"", b""]
        self.counts.accepted += 1
        return [*head, b"200", b"OK", key, b""]

    def _refuse(self, head: list[bytes], domain: str, key: bytes, why: str) -> list[bytes]:
        self.counts.refused += 1
        if key:
            self.counts.refused_keys[key] = self.counts.refused_keys.get(key, 0) + 1
        if self._on_refuse is not None:
            self._on_refuse(domain, key, why)
        return [*head, b"400", why.encode(), b"", b""]

    def close(self) -> None:
        self.socket.close(linger=0)


def curve_server(sock: zmq.Socket, secret: bytes, domain: str, handshake_ms: int = DEFAULT_HANDSHAKE_MS) -> None:
    """Make `sock` a CURVE server that asks ZAP (domain `domain`) about every client, failing closed."""
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no handler bound: refuse everyone, never admit anyone
    sock.setsockopt(zmq.HANDSHAKE_IVL, handshake_ms)


def curve_client(sock: zmq.Socket, public: bytes, secret: bytes, server_public: bytes,
                 handshake_ms: int = DEFAULT_HANDSHAKE_MS) -> None:
    """Make `sock` a CURVE client of the server whose public key is `server_public`."""
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public
    sock.setsockopt(zmq.HANDSHAKE_IVL, handshake_ms)
