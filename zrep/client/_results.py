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
