"""The dashboard's web server: the page and its one JSON endpoint, standard library only.

Job: serve `page.html` at / and the latest `ClusterWatch.state()` at
/api/state (the page fetches it every second). No build step, no CDN: the
page is one file with its CSS and JavaScript inline; the chart is SVG.

Invariants: read-only (GET); binds 127.0.0.1 unless told otherwise; bad or
slow clients stay cheap (zrep.httpd.GuardedServer) and never touch the
watcher's thread (a request only reads the last published dict).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any, Protocol

from zrep.httpd import GuardedServer, Handler


class StateSource(Protocol):
    def state(self) -> dict[str, Any]: ...


class DashboardServer(GuardedServer):
    def __init__(self, address: tuple[str, int], watch: StateSource) -> None:
        self.watch = watch
        self.page = files("zrep.dashboard").joinpath("page.html").read_bytes()
        super().__init__(address, _Handler)


class _Handler(Handler):
    server: DashboardServer
    server_version = "zrep-dashboard"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self.send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/api/state":
            self.send(200, "application/json", json.dumps(self.server.watch.state(), default=str).encode())
        else:
            self.send(404, "text/plain; charset=utf-8", b"not found: the dashboard is at /\n")
