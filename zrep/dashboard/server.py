"""The dashboard's web server: the page and its one JSON endpoint, standard library only.

Job: serve `page.html` at / and the latest `ClusterWatch.state()` at
/api/state (the page fetches it every second). No build step, no CDN: the
page is one file with its CSS and JavaScript inline; the chart is SVG.

Invariants: read-only (GET); binds 127.0.0.1 unless told otherwise; a slow or
bad client costs one daemon thread for at most READ_TIMEOUT_S per read and
never touches the watcher's thread (it only reads the last published dict).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any

from zrep.dashboard.watch import ClusterWatch

READ_TIMEOUT_S = 5.0


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], watch: ClusterWatch) -> None:
        self.watch = watch
        self.page = files("zrep.dashboard").joinpath("page.html").read_bytes()
        super().__init__(address, _Handler)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True,
                             name="zrep-dashboard-http")
        t.start()
        return t


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    timeout = READ_TIMEOUT_S
    protocol_version = "HTTP/1.0"
    server_version = "zrep-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/api/state":
            self._send(200, "application/json", json.dumps(self.server.watch.state(), default=str).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: the dashboard is at /\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
