"""The chaos workload: client threads sending to, reading from and deleting
in a handful of mailboxes for the whole run, every op in the history.

Job: each worker is one history process (0, 1, ...) with its own zrep
Client, doing one operation at a time: `send` (a body unique in the run),
`read` (linearizable) and `stale_read` from an offset K near the end of what
it knows, and now and then a `delete` of one or two acknowledged offsets.
A `send_many` call (a few bodies in ClientBatch frames) is one send op per
body in the history, each by its own process "W.k" (worker W, body k): they
are concurrent, and the history allows one op at a time per process.

Outcomes, and why (zrep.chaos.history):
  ok    the cluster answered it.
  fail  it certainly did not happen: `Unavailable` from the client library
        (no node accepted it), a `Rejected` first attempt (the store refused
        it, nothing applied), or any read that got no answer (reads change
        nothing).
  info  a write whose outcome is unknown: `OutcomeUnknown` (including
        `ClientExpired`) on any attempt, or any other error once an attempt
        may have reached a node.
A write that ends in `OutcomeUnknown` is retried (a few times, while the run
goes on) by calling the same write again on the same Client: the library
reuses its (client id, seq), so the retry is applied at most once in all,
and stays one op in the history. A retry stops at the first other answer:
after it the library no longer treats the next call as a retry.

Invariants:
  * Every invoke gets exactly one completion, also when the worker dies of
    an unexpected exception (then `info` for a write, `fail` for a read).
  * Every loop is bounded: the stop event ends it, every call has the
    client's timeout, retries are counted.
  * Only this module's threads touch their Clients (ZeroMQ sockets).

Imports the client library and the history writer; never the node.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zrep.chaos.history import Handle, HistoryWriter
from zrep.client import Client, ClientExpired, OutcomeUnknown, Rejected, Unavailable
from zrep.config import ClusterConfig, source_endpoint

WEIGHTS = {"send": 50, "send_many": 10, "read": 20, "stale_read": 14, "delete": 6}
MANY = (2, 8)  # bodies per send_many op
WRITE_RETRIES = 3  # attempts of one write whose outcome stays unknown
READ_LIMIT = 1000
READ_BACK = 20  # reads start at most this far before the highest offset a worker knows
ERROR_CHARS = 200


@dataclass(frozen=True)
class WorkloadSettings:
    clients: int
    mailboxes: tuple[str, ...]
    seed: int
    tag: str  # makes bodies and client ids unique to this run
    timeout_s: float = 5.0  # one client call, retries through failover included
    attempt_timeout_s: float = 0.5  # the client library's default
    key: str | None = None  # the clients' secret key file, for a cluster with security.mode = curve


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged send, for failover times and the recovery check."""

    invoke_ns: int
    ok_ns: int
    epoch: int
    process: int


@dataclass
class Stats:
    """What the workload did so far; shared by the workers, read by progress and report."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)  # "send:ok", "read:fail", ...
    done: int = 0
    acks: list[Ack] = field(default_factory=list)
    known: dict[str, set[int]] = field(default_factory=dict)  # mailbox -> offsets acknowledged, not deleted
    top: dict[str, int] = field(default_factory=dict)  # mailbox -> highest offset seen + 1
    errors: list[str] = field(default_factory=list)  # unexpected exceptions (bugs of ours or the library)

    def count(self, f: str, outcome: str) -> None:
        with self.lock:
            self.outcomes[f"{f}:{outcome}"] += 1
            self.done += 1

    def error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(text)

    def acked(self, box: str, offset: int, ack: Ack) -> None:
        with self.lock:
            self.acks.append(ack)
            self.known.setdefault(box, set()).add(offset)
            self.top[box] = max(self.top.get(box, 0), offset + 1)

    def seen(self, box: str, offsets: list[int]) -> None:
        if offsets:
            with self.lock:
                self.top[box] = max(self.top.get(box, 0), max(offsets) + 1)

    def deleted(self, box: str, offsets: list[int]) -> None:
        with self.lock:
            self.known.get(box, set()).difference_update(offsets)

    def pick_offsets(self, box: str, rng: random.Random) -> list[int]:
        with self.lock:
            have = sorted(self.known.get(box, ()))
        if not have:
            return []
        return rng.sample(have, min(len(have), rng.choice((1, 1, 2))))

    def head(self, box: str) -> int:
        with self.lock:
            return self.top.get(box, 0)

    def first_ack_after(self, ns: int) -> Ack | None:
        """The first acknowledged send invoked at or after `ns`."""
        with self.lock:
            after = [a for a in self.acks if a.invoke_ns >= ns]
        return min(after, key=lambda a: a.ok_ns) if after else None


def client_config(cfg: ClusterConfig, client_host: str | None) -> ClusterConfig:
    """The cluster file as the clients see it: with a source address of their own, if given.

    With per-node addresses, a client connecting from the default source
    (127.0.0.1, node 1's) would be cut off with node 1 by every partition;
    `tcp://SRC:0;DST:PORT` keeps the clients outside all of them.
    """
    if not client_host:
        return cfg
    nodes = tuple(dataclasses.replace(n, rpc=source_endpoint(client_host, n.rpc)) for n in cfg.nodes)
    return dataclasses.replace(cfg, nodes=nodes)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:ERROR_CHARS]


class Worker(threading.Thread):
    """One history process: one op at a time until `stop` is set."""

    def __init__(self, process: int, settings: WorkloadSettings, cfg: ClusterConfig, history: HistoryWriter,
                 stats: Stats, stop: threading.Event) -> None:
        super().__init__(name=f"chaos-worker-{process}", daemon=True)
        self.process = process
        self.s = settings
        self.cfg = cfg
        self.history = history
        self.stats = stats
        self.stop = stop
        self.rng = random.Random(f"{settings.seed}-worker-{process}")
        self.sent = 0
        self.generation = 0
        self.client = self._new_client()
        self._ops: dict[str, Callable[[str], None]] = {
            "send": self._op_send, "send_many": self._op_send_many, "read": self._op_read,
            "stale_read": self._op_read_stale, "delete": self._op_delete}

    def _new_client(self) -> Client:
        self.generation += 1
        return Client(self.cfg, client_id=f"{self.s.tag}-p{self.process}-g{self.generation}",
                      timeout_s=self.s.timeout_s, attempt_timeout_s=self.s.attempt_timeout_s, key=self.s.key)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                f = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                self._ops[f](self.rng.choice(self.s.mailboxes))
        except Exception as e:  # recorded and reported: a worker that dies is a finding, not a hang
            self.stats.error(f"worker {self.process} stopped: {_error(e)}")
        finally:
            self.client.close()

    # ------------------------------------------------------------ writes

    def _run_write(self, handle: Handle, call: Callable[[], Any], ok: Callable[[Any], None]) -> None:
        """Run a write to one outcome: retry while it stays unknown; fail only when nothing was accepted."""
        maybe = False
        outcome, error = "info", "not attempted"
        try:
            for _ in range(WRITE_RETRIES):
                try:
                    result = call()
                except ClientExpired as e:  # the id is gone: retrying with it cannot tell
                    maybe, error = True, _error(e)
                    self.client.close()
                    self.client = self._new_client()
                    break
                except OutcomeUnknown as e:
                    maybe, error = True, _error(e)
                    if self.stop.is_set():
                        break
                    continue
                except (Unavailable, Rejected) as e:
                    outcome, error = ("info" if maybe else "fail"), _error(e)
                    break
                ok(result)
                return
        except Exception as e:  # a bug of ours or of the library: the write may still have happened
            self.stats.error(_error(e))
            outcome, error = "info", _error(e)
        self.history.complete(handle, outcome, None, error=error)
        self.stats.count(handle.f, outcome)

    def _op_send(self, box: str) -> None:
        self.sent += 1
        body = f"{self.s.tag}-{self.process}-{self.sent}"
        handle = self.history.invoke(self.process, "send", box, body)

        def ok(r: Any) -> None:
            now = time.monotonic_ns()
            self.history.complete(handle, "ok", body, offset=r.offset, index=r.index, epoch=r.epoch, node=r.node)
            self.stats.count("send", "ok")
            self.stats.acked(box, r.offset, Ack(handle.invoke_time, now, r.epoch, self.process))

        self._run_write(handle, lambda: self.client.send(box, body), ok)

    def _op_send_many(self, box: str) -> None:
        bodies = []
        for _ in range(self.rng.randint(*MANY)):
            self.sent += 1
            bodies.append(f"{self.s.tag}-{self.process}-{self.sent}")
        handles = [self.history.invoke(f"{self.process}.{k}", "send", box, b) for k, b in enumerate(bodies)]
        receipts: list[Any] = [None] * len(bodies)
        maybe, error = False, "not attempted"
        try:
            for _ in range(WRITE_RETRIES):
                try:
                    receipts = self.client.send_many(box, bodies)
                    error = ""
                    break
                except ClientExpired as e:  # the id is gone: retrying with it cannot tell
                    maybe, error = True, _error(e)
                    receipts = e.receipts or receipts
                    self.client.close()
                    self.client = self._new_client()
                    break
                except OutcomeUnknown as e:  # the same call again retries the unanswered ones
                    maybe, error = True, _error(e)
                    receipts = e.receipts or receipts
                    if self.stop.is_set():
                        break
                except (Unavailable, Rejected) as e:
                    error = _error(e)
                    receipts = e.receipts or receipts
                    break
        except Exception as e:  # a bug of ours or of the library: any of them may have happened
            self.stats.error(_error(e))
            maybe, error = True, _error(e)
        now = time.monotonic_ns()
        for handle, body, r in zip(handles, bodies, receipts):
            if r is not None:
                self.history.complete(handle, "ok", body, offset=r.offset, index=r.index, epoch=r.epoch, node=r.node)
                self.stats.acked(box, r.offset, Ack(handle.invoke_time, now, r.epoch, self.process))
                outcome = "ok"
            else:
                # Unanswered: it may have been applied unless no attempt ever may have reached a node.
                outcome = "info" if maybe or not error.startswith("Unavailable") else "fail"
                self.history.complete(handle, outcome, None, error=error or "no receipt")
            self.stats.count("send", outcome)

    def _op_delete(self, box: str) -> None:
        offsets = self.stats.pick_offsets(box, self.rng)
        if not offsets:
            return self._op_send(box)
        handle = self.history.invoke(self.process, "delete", box, offsets)

        def ok(deleted: Any) -> None:
            self.history.complete(handle, "ok", list(deleted))
            self.stats.count("delete", "ok")
            self.stats.deleted(box, list(deleted))

        self._run_write(handle, lambda: self.client.delete(box, offsets), ok)

    # ------------------------------------------------------------ reads

    def _op_read_stale(self, box: str) -> None:
        self._op_read(box, stale=True)

    def _op_read(self, box: str, stale: bool = False) -> None:
        f = "stale_read" if stale else "read"
        head = self.stats.head(box)
        start = 0 if self.rng.random() < 0.1 else max(0, head - self.rng.randint(0, READ_BACK))
        handle = self.history.invoke(self.process, f, box, {"from": start, "limit": READ_LIMIT})
        try:
            r = self.client.read(box, after=start - 1, limit=READ_LIMIT, stale=stale)
        except Exception as e:  # a read changes nothing: whatever went wrong, it did not happen
            if not isinstance(e, (Unavailable, Rejected, OutcomeUnknown)):
                self.stats.error(_error(e))
            self.history.complete(handle, "fail", None, error=_error(e))
            self.stats.count(f, "fail")
            return
        bodies = [m.body.decode("utf-8", "replace") for m in r.messages]
        offsets = [m.offset for m in r.messages]
        self.history.complete(handle, "ok", bodies, offsets=offsets, node=r.node, applied=r.applied)
        self.stats.count(f, "ok")
        self.stats.seen(box, offsets)


class Workload:
    """All the workers of one run."""

    def __init__(self, settings: WorkloadSettings, cfg: ClusterConfig, history: HistoryWriter,
                 client_host: str | None = None) -> None:
        self.settings = settings
        self.stats = Stats()
        self.stop_event = threading.Event()
        ccfg = client_config(cfg, client_host)
        self.workers = [Worker(p, settings, ccfg, history, self.stats, self.stop_event)
                        for p in range(settings.clients)]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout_s: float) -> list[int]:
        """Stop every worker after its current op; the processes still busy after `timeout_s`."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        return [w.process for w in self.workers if w.is_alive()]
