"""`MembershipOperator` (bin/chaos --membership): an operator changing the cluster while the
nemesis kills, pauses and partitions it, through the same client calls `zrep admin` makes.

One change after another, each to completion, on its own thread beside the nemesis:
  transfer   hand leadership over to a follower (transfer-leader ID)
  cycle      demote a follower to a learner, then promote it again once caught up
  replace    SIGKILL a follower, wipe its data directory, restart it (LocalCluster starts a
             fresh directory of a node it started before with --join: a new incarnation, an
             observer), then `zrep admin replace`'s steps: remove it, add it back as a
             learner, promote it once caught up
A change refused or unanswered because of the faults (no leader, not caught up, outcome
unknown) is noted and retried within the action's bound, never counted as a failure: only
the history checks and the final convergence judge the run.

Invariants:
  * The operator and the nemesis never handle the same node at once: the operator takes
    only a running, unpaused follower the nemesis has not taken down, and holds
    `Nemesis.lock` from the kill to the restart (the nemesis starts nodes under it too).
  * Every action finishes (or gives up) within ACTION_BOUND_S, and the last one before the
    deadline finishes before the run heals: a run never ends with a node removed and not
    added back.
  * Wiping is the only disk loss it causes, one node at a time, never the leader.
"""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from collections import Counter
from typing import Any

from zrep.chaos.nemesis import Nemesis
from zrep.client import Client, ClientError
from zrep.local.cluster import LocalCluster

ACTION_BOUND_S = 60.0
GAP_S = (1.0, 4.0)  # between two changes
WEIGHTS = {"transfer": 3, "cycle": 2, "replace": 3}


class MembershipOperator:
    def __init__(self, cluster: LocalCluster, nemesis: Nemesis, rng: random.Random, stop: threading.Event,
                 key: str | None = None) -> None:
        self.c = cluster
        self.nemesis = nemesis
        self.rng = rng
        self.stop = stop
        self.key = key
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.errors: list[str] = []
        self.thread: threading.Thread | None = None

    def start(self, until: float) -> None:
        self.thread = threading.Thread(target=self._run, args=(until,), name="chaos-membership", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(ACTION_BOUND_S + 30)

    def _run(self, until: float) -> None:
        try:
            with Client(self.c.config_path, timeout_s=5, key=self.key) as client:
                while not self.stop.is_set() and time.monotonic() < until - 2:
                    if self.stop.wait(self.rng.uniform(*GAP_S)):
                        return
                    kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                    getattr(self, f"_{kind}")(client, time.monotonic() + ACTION_BOUND_S)
        except Exception as e:  # noqa: BLE001 - reported; the run still heals and checks
            self.errors.append(f"membership: {type(e).__name__}: {e}")

    # ------------------------------------------------------------ actions

    def _ask(self, client: Client, op: str, node: int, deadline: float, **kw: Any) -> bool:
        """One change, asked again while the faults refuse it; True once it is in effect."""
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                client.admin(op, node, **kw)
                return True
            except ClientError as e:
                self.refusals[f"{op}: {type(e).__name__}"] += 1
            self.stop.wait(0.5)
        return False

    def _follower(self, client: Client) -> tuple[int, int] | None:
        """(leader, a running unpaused follower the nemesis has not taken), or None."""
        try:
            view = client.members()
        except ClientError:
            return None
        busy = self.nemesis.down | set(self.c.paused)
        ok = [m.id for m in view.members if m.role == "voter" and m.id != view.leader and m.id not in busy
              and self.c.running(m.id)]
        return (view.leader, self.rng.choice(ok)) if ok and view.leader else None

    def _transfer(self, client: Client, deadline: float) -> None:
        pick = self._follower(client)
        if pick is None:
            return
        if self._ask(client, "transfer", pick[1], deadline):
            self.counts["transfer"] += 1
            self.nemesis.note("membership", [pick[1]], f"leadership handed from node {pick[0]} to {pick[1]}")

    def _cycle(self, client: Client, deadline: float) -> None:
        pick = self._follower(client)
        if pick is None or not self._ask(client, "demote", pick[1], deadline):
            return
        self.nemesis.note("membership", [pick[1]], f"node {pick[1]} demoted to a learner")
        if self._ask(client, "promote", pick[1], deadline + ACTION_BOUND_S):
            self.counts["cycle"] += 1
            self.nemesis.note("membership", [pick[1]], f"node {pick[1]} promoted again")
        else:
            self.errors.append(f"membership: node {pick[1]} stayed a learner")

    def _replace(self, client: Client, deadline: float) -> None:
        pick = self._follower(client)
        if pick is None:
            return
        node = pick[1]
        with self.nemesis.lock:
            if not self.c.running(node) or node in self.nemesis.down or node in self.c.paused:
                return
            self.c.kill(node, signal.SIGKILL)
            shutil.rmtree(self.c.cfg.node_data_dir(node), ignore_errors=True)
            self.c.start(node)  # a fresh directory of a node started before: --join
        self.nemesis.note("membership", [node], f"node {node} killed, its disk wiped, restarted with --join")
        spec = self.c.cfg.node(node)
        done = (self._ask(client, "remove", node, deadline)
                and self._ask(client, "add", node, deadline, rpc=spec.rpc, pub=spec.pub,
                              keys=list(spec.public_keys) if getattr(spec, "public_keys", None) else ())
                and self._ask(client, "promote", node, deadline + ACTION_BOUND_S))
        if done:
            self.counts["replace"] += 1
            self.nemesis.note("membership", [node], f"node {node} replaced: a voter again under its new disk")
        else:
            self.errors.append(f"membership: the replacement of node {node} did not finish in time")
