"""What the client calls return: receipts, reads, mailbox counts, node status.

Job: immutable result records, and building them from a node's answer.
Invariants: fields are only ever added (scripts parse their `--json` form);
nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from zrep.wire.client_messages import ClientReply, Message


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where a sent message landed, and which replicas have it on disk."""

    mailbox: str
    offset: int
    index: int  # log index of the entry
    epoch: int  # epoch of that entry
    durable_on: list[int]  # node ids that fsynced it when the answer left
    all_durable: bool | None  # ack="all": every member has it; None for ack="majority"
    node: int  # the node that answered


@dataclass(frozen=True, slots=True)
class ReadResult:
    messages: list[Message]
    applied: int  # the answering node's applied index (how fresh a stale read is)
    node: int


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    count: int  # live messages
    bytes: int | None = None  # their body bytes (None from a node that does not say)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's answer to `status`, or `up=False` with the reason it is down."""

    id: int
    address: str
    up: bool
    role: str | None = None
    epoch: int | None = None
    leader: int | None = None  # 0: none known
    last_index: int | None = None
    commit: int | None = None
    applied: int | None = None
    last_heard_ms: int | None = None  # since a peer that answered last heard from it (None: no one says)
    error: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # the node's full answer


def heard_by_peers(results: Iterable[dict[str, Any]]) -> dict[int, int]:
    """Node id -> the freshest `heard_ms_ago` any answering node reports for it.

    It says how long a down node has been silent, and flags an up node its
    peers cannot hear (a partition) although this client can.
    """
    heard: dict[int, int] = {}
    for result in results:
        for peer in result.get("peers", ()):
            if not isinstance(peer, dict):
                continue
            pid, ms = peer.get("id"), peer.get("heard_ms_ago")
            if type(pid) is int and type(ms) is int:
                heard[pid] = min(ms, heard.get(pid, ms))
    return heard


def node_status(node: int, address: str, reply: ClientReply, heard_ms: int | None) -> NodeStatus:
    r = reply.result
    if not reply.ok:
        return NodeStatus(node, address, True, last_heard_ms=heard_ms, error=f"{reply.code}: {reply.message}", raw=r)
    role = r.get("role_name", r.get("role"))
    return NodeStatus(
        id=node,
        address=address,
        up=True,
        role=str(role) if role is not None else None,
        epoch=r.get("epoch"),
        leader=r.get("leader"),
        last_index=r.get("last_index"),
        commit=r.get("commit"),
        applied=r.get("store_applied", r.get("applied")),
        last_heard_ms=heard_ms,
        raw=r,
    )


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member of the configuration, as the answering node sees it."""

    id: int
    role: str  # "voter" or "learner"
    incarnation: str  # hex; "" while not known (a learner not heard from yet, or a forming cluster)
    rpc: str  # "" when the configuration does not say (the cluster file's address is used)
    pub: str
    state: str | None = None  # the leader's view: "leader", "live", "silent"; "self" on a follower
    lag: int | None = None  # entries behind the leader's log (the leader's view only)
    lost_state: bool = False  # it answers under another incarnation: its disk was wiped; replace it


@dataclass(frozen=True, slots=True)
class Membership:
    """The configuration a node uses, and whether it has committed (`zrep admin members`)."""

    cluster_id: str
    forming: bool  # the cluster is being formed: every seed is needed
    config_index: int  # the log index of the configuration in force (0: the initial one)
    committed: bool  # that configuration has committed (False: a change is pending)
    committed_voters: list[int]
    leader: int  # 0: none known
    members: list[MemberInfo]
    node: int  # the node that answered (the leader, unless none could be asked)
    index: int = 0  # for a change: the log index of its configuration entry

    @property
    def voters(self) -> list[int]:
        return [m.id for m in self.members if m.role == "voter"]

    @property
    def learners(self) -> list[int]:
        return [m.id for m in self.members if m.role != "voter"]

    def member(self, node_id: int) -> MemberInfo | None:
        return next((m for m in self.members if m.id == node_id), None)


def membership_of(node: int, r: dict[str, Any]) -> Membership:
    """A `members` (or change) answer as a Membership."""
    rows = [MemberInfo(id=int(m["id"]), role=str(m.get("role", "voter")), incarnation=str(m.get("incarnation", "")),
                       rpc=str(m.get("rpc", "")), pub=str(m.get("pub", "")), state=m.get("state"), lag=m.get("lag"),
                       lost_state=bool(m.get("lost_state", False)))
            for m in r.get("members", ()) if isinstance(m, dict) and type(m.get("id")) is int]
    return Membership(cluster_id=str(r.get("cluster_id", "")), forming=bool(r.get("forming", False)),
                      config_index=int(r.get("config_index", 0)), committed=bool(r.get("committed", False)),
                      committed_voters=[int(v) for v in r.get("committed_voters", ())],
                      leader=int(r.get("leader") or 0), members=rows, node=node, index=int(r.get("index", 0)))
