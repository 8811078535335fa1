"""`SimOperator`: the membership side of the simulator: an operator changing the cluster while
the faults run, the disks it may wipe, and the membership invariants (MEMBERSHIP section 3),
checked after every step.

The operator sends the requests `zrep admin` sends, through the same `Service.submit_admin`:
it replaces a node whose disk was wiped (remove, then add it back as a learner, then promote
it once caught up), removes or demotes a voter now and then and brings it back, hands
leadership over (transfer), and after the
heal restores every node as a voter under its current incarnation. A node that learns it was
removed stops; its disk is wiped (the operator reformats it) and it comes back with --join.

Wipes: any dead node's disk may be wiped at any time, as long as every configuration some
node holds keeps a quorum of voters whose named disk is intact (wiping a quorum's disks
loses committed entries, whatever the protocol does). The protocol must then wait, never
forget: the wiped node returns as an observer under a new incarnation.

Invariants checked here (the Checker keeps the rest):
  * a leader counts itself as a voter of its configuration when it is first seen leading
    (learners and observers never lead);
  * at most one configuration above a leader's commit index, and none of its own epoch
    before its no-op committed;
  * an index a leader commits is held durably, with the epoch it has, by a quorum of the
    voters of the leader's configuration, each under the incarnation it names (a wiped
    incarnation is judged by what its disk held when it was wiped);
  * a node's configuration is the last one in its log, or its base when none is;
  * an incarnation wiped before a configuration removed it never becomes a voter again.
Must not import os, time or zmq.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from zrep.core.membership import CONFIG_MARK, Config, decode_config
from zrep.core.messages import Role
from zrep.service.service import snapshot_config
from zrep.sim.checker import Violation
from zrep.store.snapshot import decode_snapshot

if TYPE_CHECKING:
    from zrep.sim.cluster import SimCluster, SimNode

ADMIN_ADDR = 999  # answers to the operator's requests come back to this address (above CLIENT_BASE)


class SimOperator:
    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.c = cluster
        self.rng = rng
        self.tokens = 0
        self.led: set[tuple[int, int]] = set()  # (node, epoch) leaderships already judged
        self.commit_seen: dict[tuple[int, int], int] = {}  # (leader, epoch) -> commit judged
        self.dead_disks: dict[tuple[int, int], dict[int, int]] = {}  # (node, incarnation) -> index -> epoch
        self.dead_snap: dict[tuple[int, int], int] = {}
        self.leader_config: dict[int, tuple[int, Config]] = {}  # leader -> the configuration it last used
        self.replacing: set[int] = set()  # ids whose wiped disk is being replaced
        self.gone: dict[tuple[int, int], int] = {}  # (id, incarnation) a configuration removed -> tick
        self.dead_at: dict[tuple[int, int], int] = {}  # wiped incarnation -> tick of the wipe

    # ------------------------------------------------------------ incarnations

    def new_incarnation(self) -> int:
        return self.rng.getrandbits(62) + 1

    def forget_disk(self, node: SimNode) -> None:
        """Remember what the dying incarnation's disk held (for the durability check), then wipe it."""
        replay = node.disk.replay()
        held = {e.index: e.epoch for e in replay.entries}
        key = (node.id, node.disk.incarnation)
        self.dead_disks[key] = held
        self.dead_at[key] = self.c.now
        self.dead_snap[key] = replay.first_index - 1
        node.disk.wipe()
        node.disk.incarnation = self.new_incarnation()
        node.disk.joined = True

    def _holds(self, node_id: int, inc: int, index: int, epoch: int, any_inc: bool) -> bool:
        node = self.c.nodes[node_id]
        if any_inc or node.disk.incarnation == inc:
            replay = node.disk.synced_view()
            if index <= replay[1]:
                return True  # below its log start: in its snapshot, committed there
            return replay[0].get(index) == epoch
        held = self.dead_disks.get((node_id, inc))
        if held is None:
            return False
        return index <= self.dead_snap[(node_id, inc)] or held.get(index) == epoch

    # ------------------------------------------------------------ wipes

    def may_wipe(self, target: SimNode) -> bool:
        """Wiping `target` leaves every configuration any node holds with a quorum of intact voters."""
        configs: list[Config] = []
        for n in self.c.nodes.values():  # a dead node's configuration counts too: it returns with it
            if n.service is not None:
                rep = n.service.replica
                configs += [rep.config, rep.committed_config()]
            else:
                configs += self._disk_configs(n)
        if not configs:
            return False
        for cfg in configs:
            if cfg.provisional or not cfg.voters:
                return False  # forming: every seed is needed; keep the disks until it formed
            intact = 0
            for m in cfg.members:
                if m.voter and m.id != target.id and self.c.nodes[m.id].disk.incarnation == m.incarnation:
                    intact += 1
            if intact < cfg.quorum():
                return False
        return True

    @staticmethod
    def _disk_configs(node: SimNode) -> list[Config]:
        """The latest and the committed configuration a dead node's disk would start with."""
        replay = node.disk.replay()
        found = [e for e in replay.entries if e.data[:1] == CONFIG_MARK]
        base = None
        if node.disk.snapshot is not None:
            snap = decode_snapshot(node.disk.snapshot)
            base = snapshot_config(snap.store)
        out = [decode_config(e.data) for e in found[-1:]]
        committed = [e for e in found if e.index <= replay.commit]
        out += [decode_config(e.data) for e in committed[-1:]]
        if base is not None:
            out.append(base)
        return out

    # ------------------------------------------------------------ the operator

    def tick(self, faults_on: bool) -> None:
        leader = self.c._leader()
        p = self.c.plan
        # A replacement under way goes step after step, as `zrep admin replace` does (remove, add,
        # promote at once, whether or not the new disk runs yet); other changes come now and then.
        rate = 1.0 if self.replacing else (p.admin_p if faults_on else 0.05)
        if leader is None or self.rng.random() >= rate:
            return
        rep = leader.service.replica
        cfg = rep.config
        if cfg.provisional:
            return  # (a change still pending is the core's to refuse: the operator does not wait)
        request = self._next_request(rep, cfg, faults_on)
        if request is None:
            return
        self.tokens += 1
        self.c._count(f"admin_{request['op']}")
        self.c._log(f"operator asks node {leader.id}: {request}")
        leader.service.submit_admin((self.c.admin_addr, self.tokens), request)

    def _next_request(self, rep: Any, cfg: Config, faults_on: bool) -> dict[str, Any] | None:
        nodes = self.c.nodes
        for m in cfg.members:  # a wiped member: replace it (remove first)
            if m.incarnation and nodes[m.id].disk.incarnation != m.incarnation:
                self.replacing.add(m.id)
                return {"op": "remove", "id": m.id}
        for i in cfg.learners:  # promote before adding: learners are capped
            if self.rng.random() < 0.7:
                if i in self.replacing and cfg.counts(i, nodes[i].disk.incarnation):
                    self.replacing.discard(i)
                return {"op": "promote", "id": i}
        for i in self.c.ids:  # a node outside the configuration: add it (a replacement's at once)
            if cfg.member(i) is None and (nodes[i].service is not None or i in self.replacing):
                return {"op": "add", "id": i}
        self.replacing = {i for i in self.replacing if not cfg.counts(i, nodes[i].disk.incarnation)}
        if not faults_on or self.rng.random() >= 0.3:
            return None
        if self.rng.random() < 0.4:  # hand leadership over (0: to the most caught-up voter)
            return {"op": "transfer", "id": self.rng.choice((0,) + tuple(v for v in cfg.voters if v != rep.id))}
        floor = 2 if len(self.c.ids) <= 3 else 3
        if len(cfg.voters) <= floor:
            return None
        victim = self.rng.choice(cfg.voters)
        return {"op": self.rng.choice(("remove", "demote")), "id": victim}

    def removed(self, node: SimNode) -> None:
        """`node` applied a configuration without it: it stops; the operator reformats its disk."""
        self.c._log(f"node {node.id} learns it was removed; it stops and its disk is reformatted")
        self.c._count("removed")
        self.c._stop(node)
        self.forget_disk(node)

    def settled(self) -> bool:
        """After the heal: every node a voter, under its current incarnation, in a committed configuration."""
        leader = self.c._leader()
        if leader is None:
            return False
        rep = leader.service.replica
        cfg = rep.config
        if rep.config_index > rep.commit or cfg.provisional:
            return False
        return all(cfg.counts(i, self.c.nodes[i].disk.incarnation) for i in self.c.ids)

    # ------------------------------------------------------------ invariants

    def check(self) -> None:
        for node in self.c._alive():
            rep = node.service.replica
            if node.disk.truncated:
                node.disk.truncated = False
                self._check_config_follows_log(node.id, rep)
            if rep.role != Role.LEADER:
                continue
            key = (node.id, rep.hs.epoch)
            if key not in self.led:
                self.led.add(key)
                self.commit_seen[key] = rep.commit  # what it knew as a follower was counted by others
                if not (rep.config.counts(rep.id, rep.inc) or rep.committed_config().counts(rep.id, rep.inc)):
                    raise Violation(f"tick {self.c.now}: node {node.id} leads epoch {rep.hs.epoch} but is a voter "
                                    f"of neither its configuration nor its committed one (learners and observers "
                                    f"never lead)")
            self._check_pending_configs(node.id, rep)
            self._check_no_incarnation_returns(node.id, rep)
            if rep.commit > self.commit_seen.get(key, 0):
                self.commit_seen[key] = rep.commit
                self._check_commit_durable(node.id, rep)

    def _check_pending_configs(self, node_id: int, rep: Any) -> None:
        # Judged against what any leader committed: a new leader learns the commit index only
        # when its own no-op commits, and may hold a configuration its predecessor committed.
        committed = max(rep.commit, self.c.checker._committed_upto)
        above = rep.log.find(committed + 1, rep.log.last_index, CONFIG_MARK)
        if len(above) > 1:
            raise Violation(f"tick {self.c.now}: leader {node_id} holds configurations at {above}, "
                            f"all above the committed index {committed}: one change at a time")
        if rep.commit < rep._epoch_start:
            own = [i for i in above if i > rep._epoch_start]
            if own:
                raise Violation(f"tick {self.c.now}: leader {node_id} appended configuration {own[0]} "
                                f"before its no-op {rep._epoch_start} committed")

    def _check_no_incarnation_returns(self, node_id: int, rep: Any) -> None:
        """An incarnation wiped before a configuration removed it never becomes a voter again:
        nothing it sent can be newer than its removal, so a promotion pinning it used the removed
        disk's leftover progress (zrep admin replace: wipe, remove, add, promote). A disk removed
        while it ran may answer after being added back, and die after (a failure, not this bug);
        a removed disk that was not wiped forgot nothing and may come back."""
        seen = self.leader_config.get(node_id)
        if seen is not None and seen[0] == rep.config_index:
            return
        self.leader_config[node_id] = (rep.config_index, rep.config)
        if seen is None or rep.config_index <= seen[0] or rep.log.epoch_at(rep.config_index) != rep.hs.epoch:
            return  # not a change this leader just made
        old, new = seen[1], rep.config
        named = {(m.id, m.incarnation) for m in new.members if m.incarnation}
        for key in {(m.id, m.incarnation) for m in old.members if m.incarnation} - named:
            self.gone.setdefault(key, self.c.now)
        late = self.c.plan.link.max_delay + 2  # its last messages may still be in flight
        back = sorted(k for k in new.voter_keys() - old.voter_keys()
                      if k in self.gone and k in self.dead_at and self.dead_at[k] + late < self.gone[k])
        if back:
            raise Violation(f"tick {self.c.now}: leader {node_id} made voter(s) {back} of configuration "
                            f"{rep.config_index}: wiped incarnations an earlier configuration removed")

    def _check_commit_durable(self, node_id: int, rep: Any) -> None:
        index = rep.commit
        epoch = rep.log.epoch_at(index)
        if epoch is None:
            return
        cfg = rep.config
        holders = [m.id for m in cfg.members
                   if m.voter and self._holds(m.id, m.incarnation, index, epoch, cfg.provisional)]
        if len(holders) < cfg.quorum():
            raise Violation(f"tick {self.c.now}: leader {node_id} committed {index} (epoch {epoch}) but only "
                            f"{holders} of the voters {list(cfg.voters)} hold it under their named incarnations")

    def _check_config_follows_log(self, node_id: int, rep: Any) -> None:
        found = rep.log.find(rep.log.first_index, rep.log.last_index, CONFIG_MARK)
        want = decode_config(rep.log.data_at(found[-1])) if found else rep.base_config
        if want != rep.config:
            raise Violation(f"tick {self.c.now}: node {node_id} uses a configuration that is not the last in "
                            f"its log after a truncation")
