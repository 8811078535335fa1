"""`BackgroundWriter`: a steady write load on its own thread, against a local cluster.

Job: send "PREFIX0", "PREFIX1", ... to one mailbox through the client library, one
at a time, until stopped; record every acknowledged body, every error (a write that
may be lost: callers show them) and every write's latency. Used by the membership
benchmark (the longest write during leadership transfers) and the membership tests
(every acknowledged write survives a change).

Invariants:
  * One client, one thread; `stop()` joins it (bounded) and closes the client.
  * `acked`, `errors` and `latencies` only grow while it runs.
"""

from __future__ import annotations

import threading
import time

from zrep.client import Client, ClientError
from zrep.local.cluster import LocalCluster, wait_until


class BackgroundWriter:
    def __init__(self, c: LocalCluster, mailbox: str, prefix: str = "m", pause_s: float = 0.0) -> None:
        self.mailbox, self.prefix, self.pause_s = mailbox, prefix, pause_s
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.latencies: list[float] = []  # seconds, acknowledged or not
        self._stop = threading.Event()
        self._client = Client(c.config_path, timeout_s=10)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            body = f"{self.prefix}{i}"
            t = time.perf_counter()
            try:
                self._client.send(self.mailbox, body)
            except ClientError as e:
                self.errors.append(f"{body}: {e}")
            else:
                self.acked.append(body)
            self.latencies.append(time.perf_counter() - t)
            i += 1
            if self.pause_s:
                time.sleep(self.pause_s)

    def wait_for_more(self, n: int, timeout: float = 10) -> None:
        target = len(self.acked) + n
        wait_until(f"{n} more acknowledged writes", lambda: len(self.acked) >= target or None, timeout)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(15)
        self._client.close()
        return self.acked
