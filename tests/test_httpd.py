"""zrep.httpd.GuardedServer against bad clients: garbage, huge headers, too many connections, slowloris."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

import zrep.httpd as httpd
from zrep.dashboard.server import DashboardServer


class _Hello(httpd.Handler):
    def do_GET(self) -> None:  # noqa: N802
        self.send(200, "text/plain", b"hello\n")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpd.GuardedServer]:
    monkeypatch.setattr(httpd, "REQUEST_DEADLINE_S", 1.0)
    monkeypatch.setattr(httpd, "POLL_S", 0.1)
    s = httpd.GuardedServer(("127.0.0.1", 0), _Hello)
    s.serve_in_thread("test-httpd")
    yield s
    s.close()


def _get(s: httpd.GuardedServer, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{s.server_address[1]}{path}", timeout=5) as r:
        return r.status, r.read()


def _raw(s: httpd.GuardedServer, data: bytes) -> bytes:
    with socket.create_connection(s.server_address, timeout=5) as c:
        try:
            c.sendall(data)
        except OSError:
            pass
        try:
            return c.recv(4096)
        except ConnectionResetError:
            return b""


def test_garbage_and_oversized_requests_get_an_error_and_the_server_goes_on(server: httpd.GuardedServer) -> None:
    assert b"400" in _raw(server, b"\x00\xff" * 300 + b"\r\n\r\n")
    assert b"414" in _raw(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert b"431" in _raw(server, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert b"431" in _raw(server, b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")
    assert b"501" in _raw(server, b"DELETE / HTTP/1.1\r\n\r\n")  # read-only: only GET
    assert _get(server) == (200, b"hello\n")


def test_connections_over_the_cap_are_closed_and_held_ones_cut_at_the_deadline(server: httpd.GuardedServer) -> None:
    held = []
    for _ in range(httpd.MAX_CONNECTIONS):
        c = socket.create_connection(server.server_address, timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")  # never finished
        held.append(c)
    try:
        deadline = time.monotonic() + 5
        while server.refused_connections == 0:  # the slots fill as the server accepts them
            assert time.monotonic() < deadline, "a connection over the cap was never refused"
            _raw(server, b"GET / HTTP/1.1\r\n\r\n")
        started = time.monotonic()
        deadline = started + 5
        while True:  # cut at the (shortened) deadline, then served again
            try:
                if _get(server) == (200, b"hello\n"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "held connections were never cut"
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while server.cut_connections < httpd.MAX_CONNECTIONS:  # every held one, each at its own deadline
            assert time.monotonic() < deadline, f"only {server.cut_connections} held connections were cut"
            time.sleep(0.05)
        for c in held:  # each was ended by the server: end of stream, or an error answer first
            c.settimeout(2)
            answer = c.recv(100)
            assert answer == b"" or answer.startswith(b"HTTP/1.0 4"), answer
    finally:
        for c in held:
            c.close()


def test_the_dashboard_serves_its_page_and_state_and_nothing_else() -> None:
    class Source:
        def state(self) -> dict:
            return {"t": 1.0, "nodes": [], "leader": None}

    s = DashboardServer(("127.0.0.1", 0), Source())
    s.serve_in_thread("test-dashboard")
    try:
        code, page = _get(s, "/")
        assert code == 200 and b"<svg id=\"chart\"" in page and b"/api/state" in page
        assert b"http://" not in page.replace(b"http://www.w3.org/2000/svg", b"")  # no CDN, nothing fetched elsewhere
        assert _get(s, "/api/state") == (200, b'{"t": 1.0, "nodes": [], "leader": null}')
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(s, "/etc/passwd")
        assert e.value.code == 404
    finally:
        s.close()
