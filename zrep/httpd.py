"""A small, guarded, read-only HTTP server (standard library) for the node's metrics and the dashboard.

Job: `GuardedServer` serves GET requests of a `Handler` subclass in daemon
threads, from `serve_in_thread()`, and keeps bad clients cheap: at most
MAX_CONNECTIONS are served at once (the rest are closed at once, never
queued), every connection is cut REQUEST_DEADLINE_S after it was accepted
whatever it sends (slowloris), each read waits at most READ_TIMEOUT_S, and
http.server's own limits answer an over-long request line (414) or header
(431) and garbage (400). `parse_http` bind addresses come in as (host, port).

Invariants: nothing here is shared with a caller's thread but the handler
it registers; no lock taken here is one a caller waits on (the one lock
guards the open-connection table between this server's threads). No
request is logged. Imports only the standard library.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_CONNECTIONS = 32
REQUEST_DEADLINE_S = 10.0
READ_TIMEOUT_S = 5.0
POLL_S = 0.5  # how often the server looks for connections past their deadline


class GuardedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections and a deadline per connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        host = {"*": "0.0.0.0"}.get(address[0], address[0])
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: dict[Any, float] = {}
        self._open_lock = threading.Lock()
        self.refused_connections = 0
        self.cut_connections = 0
        super().__init__((host, address[1]), handler)

    def serve_in_thread(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": POLL_S}, name=name, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop serving (from another thread than serve_forever's) and close the socket."""
        self.shutdown()
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused_connections += 1
            self.shutdown_request(request)  # too many at once: close, never queue behind them
            return
        with self._open_lock:
            self._open[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except Exception:
            if self._forget(request):
                self._slots.release()
            raise

    def shutdown_request(self, request: Any) -> None:
        if self._forget(request):
            self._slots.release()
        super().shutdown_request(request)

    def _forget(self, request: Any) -> bool:
        with self._open_lock:
            return self._open.pop(request, None) is not None

    def service_actions(self) -> None:
        """Between accepts (every poll interval): cut connections older than the deadline."""
        now = time.monotonic()
        with self._open_lock:
            late = [s for s, t in self._open.items() if now - t > REQUEST_DEADLINE_S]
        for s in late:
            self.cut_connections += 1
            try:
                s.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns; it then closes
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    """One request per connection, a read timeout, no logging; `send` answers with a body."""

    timeout = READ_TIMEOUT_S
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # never write to the caller's stderr per request

    def send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
