"""Membership requests, as the leader judges them: `plan_change` turns an operator's request
(add a learner, promote, demote, remove, update an address) into the next configuration,
and `members_view` says what the cluster looks like.

The core (`Replica.change_config`) keeps the safety rules: one change pending at most, none
before the leader's own no-op committed, one voter key at a time. This module adds the
checks an operator expects of a live cluster, as etcd's strict reconfiguration check does:
  * a learner is promoted only when it is caught up (within `max_lag` entries of the
    leader's log, not receiving a snapshot) and was heard within an election timeout;
    the promotion names the incarnation its acks carry (a learner is added with
    incarnation 0, "whichever disk answers first");
  * a voter is added, demoted or removed only if the live voters of the new configuration
    (heard within an election timeout) still make a quorum of it; a dead voter may always
    be removed; `force` skips these liveness checks, never the core's rules.
Pure: no I/O, no clock (ticks come from the replica).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zrep.core.membership import Config, Member
from zrep.core.messages import Role
from zrep.core.replica import Replica

OPS = ("add", "promote", "demote", "remove", "update")
MAX_LEARNERS = 2
MAX_LAG = 64  # entries a learner may trail the leader's log by and still be promoted


class Refused(Exception):
    """The change is refused; the message says why and what to do, in one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _live(rep: Replica, peer: int) -> bool:
    if peer == rep.id:
        return True
    pr = rep.tracker.get(peer)
    return pr is not None and rep.now - pr.last_contact_tick < rep.timing.election_ticks


def _live_counting(rep: Replica, config: Config) -> int:
    n = 0
    for m in config.members:
        if not m.voter:
            continue
        if m.id == rep.id:
            n += config.counts(rep.id, rep.inc)
            continue
        pr = rep.tracker.get(m.id)
        n += pr is not None and _live(rep, m.id) and config.counts(m.id, pr.inc)
    return n


def plan_change(rep: Replica, request: dict[str, Any]) -> Config:
    """The configuration `request` asks for, judged against `rep`'s latest; raises Refused."""
    op, node = request.get("op"), request.get("id")
    force = bool(request.get("force"))
    cur = rep.config
    if op not in OPS:
        raise Refused("BAD_REQUEST", f"unknown membership operation {op!r}; use one of {', '.join(OPS)}")
    if type(node) is not int or not 1 <= node < 2**31:
        raise Refused("BAD_REQUEST", "the node id must be a positive integer")
    if rep.role != Role.LEADER:
        raise Refused("NOT_LEADER", "membership changes go to the leader")
    member = cur.member(node)
    if op == "add":
        if member is not None:
            raise Refused("BAD_REQUEST", f"node {node} is a member already; remove it first to add a new one")
        if len(cur.learners) >= MAX_LEARNERS:
            raise Refused("BAD_REQUEST", f"{MAX_LEARNERS} learners already; promote or remove one first")
        rpc, pub = request.get("rpc", ""), request.get("pub", "")
        keys = tuple(request.get("keys", ()))
        if not (type(rpc) is str and type(pub) is str and all(type(k) is str for k in keys)):
            raise Refused("BAD_REQUEST", "rpc, pub and keys must be strings")
        return cur.with_member(Member(node, 0, False, rpc, pub, keys))
    if member is None:
        raise Refused("BAD_REQUEST", f"node {node} is not a member; see zrep admin members")
    if op == "update":
        rpc, pub = request.get("rpc", member.rpc), request.get("pub", member.pub)
        if not (type(rpc) is str and type(pub) is str):
            raise Refused("BAD_REQUEST", "rpc and pub must be strings")
        return cur.with_member(replace(member, rpc=rpc, pub=pub))
    if op == "promote":
        if member.voter:
            raise Refused("BAD_REQUEST", f"node {node} is a voter already")
        pr = rep.tracker.get(node)
        if pr is None or not pr.inc:
            raise Refused("UNAVAILABLE", f"node {node} has not answered yet; start it with --join and retry")
        # `probing` is cleared only by a successful ack of ours from the incarnation `pr.inc`
        # names: a new leader starts every peer probing, with the incarnation its last message
        # carried (it may be a disk that died since), so that alone proves nothing.
        if pr.probing and not force:
            raise Refused("UNAVAILABLE", f"node {node} has not acknowledged this leader's log yet; retry shortly")
        if not force:
            if pr.snapshot or pr.match + MAX_LAG < rep.log.last_index or not _live(rep, node):
                raise Refused("UNAVAILABLE", f"node {node} is not caught up yet (has {pr.match} of "
                              f"{rep.log.last_index}); retry when it is")
        new = cur.with_member(replace(member, voter=True, incarnation=pr.inc))
    else:  # demote, remove
        if op == "demote" and not member.voter:
            raise Refused("BAD_REQUEST", f"node {node} is a learner already")
        new = cur.without(node) if op == "remove" else cur.with_member(replace(member, voter=False))
        if not new.voters:
            raise Refused("BAD_REQUEST", "the last voter cannot go; add and promote another first")
        if not force and member.voter and not _live(rep, node):
            return new  # a dead voter may always go: that is how a cluster heals
    # As etcd: the quorum must hold with the newcomer counted as down; except when growing a cluster of
    # one voter, which no second voter could ever join otherwise (etcd's isReadyToAddVotingMember too).
    newcomer = 1 if op == "promote" and len(cur.voters) > 1 else 0
    if not force and _live_counting(rep, new) - newcomer < new.quorum():
        raise Refused("UNAVAILABLE", "the live voters would not make a quorum of the new configuration; "
                      "bring nodes back first (or --force)")
    return new


def members_view(rep: Replica) -> dict[str, Any]:
    """The configuration this node uses, the committed one, and (on the leader) each member's lag."""
    cfg, committed = rep.config, rep.committed_config()
    rows = []
    for m in cfg.members:
        row: dict[str, Any] = {"id": m.id, "incarnation": f"{m.incarnation:x}" if m.incarnation else "",
                               "role": "voter" if m.voter else "learner", "rpc": m.rpc, "pub": m.pub}
        pr = rep.tracker.get(m.id) if rep.role == Role.LEADER else None
        if m.id == rep.id:
            row["state"], row["lag"] = ("leader" if rep.role == Role.LEADER else "self"), 0
            row["lost_state"] = not cfg.provisional and m.incarnation not in (0, rep.inc)
        elif pr is not None:
            row["lag"] = max(0, rep.log.last_index - pr.match)
            row["state"] = "live" if _live(rep, m.id) else "silent"
            row["lost_state"] = bool(pr.inc) and m.incarnation not in (0, pr.inc) and not cfg.provisional
        rows.append(row)
    return {
        "cluster_id": f"{cfg.cluster_id:x}",
        "forming": cfg.provisional,
        "config_index": rep.config_index,
        "committed": rep.config_index <= rep.commit,
        "committed_voters": list(committed.voters),
        "leader": rep.leader,
        "members": rows,
    }
