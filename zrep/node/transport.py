"""`Transport`: the ZeroMQ sockets of one node, one poller, frames in and out.

Sockets (DESIGN sections 4 and 6):

| socket | direction | peer/client traffic                                             |
|--------|-----------|-----------------------------------------------------------------|
| ROUTER | bind_rpc  | peers' DEALERs (routing id `node-<id>`) and clients' DEALERs     |
| PUB    | bind_pub  | this node's heartbeats (the only message with dst 0)            |
| DEALER | one/peer  | routing id `node-<self>`, connected to the peer's ROUTER         |
| SUB    | one       | subscribed to everything, connected to every peer's PUB          |

A ROUTER frame is `[routing id, payload]`; the payload is one codec frame.
Anything else (missing or extra parts) is answered BAD_REQUEST (clients) or
dropped and counted (peers).

Invariants:
  * Nothing sent ever blocks: every send is NOBLOCK, and a full queue or a
    peer that is not connected drops the message (counted). The protocol
    retransmits; a blocked event loop would stop ticks and fsyncs instead.
  * A peer message is believed only if it arrives with the routing id of the
    peer named in its `src` (ROUTER), or, on the SUB side where the sender
    cannot be identified, if it is a Heartbeat from a known peer. Nothing is
    trusted blindly; every refusal is counted, never raised.
  * Outgoing peer connections leave from this node's own advertised IP
    (`tcp://SRC:0;DST:PORT`; without the `:0` libzmq 4.3.5 connects but never
    delivers), so a firewall rule can cut one pair of loopback addresses.
  * A malformed client frame gets an error reply at once, with the request id
    when it can be read (`codec.request_id_of`); it never reaches the node.
    A ClientBatch's good requests reach the node, each marked as batched;
    each bad one (a BadRequest) is answered BAD_REQUEST with its own req_id.
  * Replies to batched requests are collected per client and sent by
    `flush()` as ClientReplies frames (split under the frame limit); the node
    flushes at the end of every loop turn, so none waits longer than that.
    Replies to single requests leave at once as ClientReply frames.

Socket options, and why:
  * LINGER 0: closing never waits for unsent messages (a stopping or failing
    node must stop now; the protocol does not rely on them).
  * IMMEDIATE on DEALERs: messages are queued only on completed connections,
    so nothing piles up for a dead or unreachable peer (a send fails, counted).
  * ZMTP heartbeats on DEALERs and SUB (IVL = election timeout / 2, TIMEOUT =
    TTL = 2 election timeouts): a connection stalled by a partition or a
    SIGSTOPped peer is torn down, which discards the messages queued on it.
    Without them those messages arrive seconds late after the heal. Both are
    fine for the protocol (every message carries its epoch and is judged by
    it); the heartbeats only bound how much stale traffic can pile up. They
    run in libzmq's I/O thread, so a busy Python loop does not trip them.
  * HWM (messages, not bytes): DEALER SNDHWM 1000 per peer, ROUTER RCVHWM and
    SNDHWM 1000 per connection. A leader keeps at most Timing.max_inflight (64)
    appends in flight per follower, so protocol traffic never meets the HWM
    in normal operation; clients may pipeline hundreds of requests (a batch
    of up to 1024 is one message each way, so batching clients rarely meet
    the HWM; a dropped ClientReplies frame counts each reply in it). Past the
    HWM messages are dropped, never blocked on. PUB SNDHWM and SUB RCVHWM are
    100: a stale heartbeat is worthless, so only a few queue for a slow or
    paused subscriber.
  * MAXMSGSIZE: ROUTER max_frame_bytes + 2 + 64 KiB: a frame a little over
    the limit (a common client mistake) is read and answered TOO_LARGE by the
    codec's check; a grossly oversized one makes libzmq drop the connection
    before it is buffered, so a flood of huge frames cannot exhaust memory
    (worst case per connection: RCVHWM x MAXMSGSIZE, drained every loop).
    SUB: 64 KiB, since only small heartbeats travel there.
  * ROUTER_MANDATORY off: a reply to a client that has gone is dropped by
    libzmq, never raised. ROUTER_HANDOVER on: a restarted peer's new
    connection takes over its routing id at once instead of being refused
    while the old one is still being torn down.
  * A socket monitor on each peer DEALER (EVENT_DISCONNECTED only): when a
    peer's process dies its kernel closes the TCP connection at once, libzmq
    reports it, and `disconnects()` hands the node the peer's id, a hint the
    core uses to start a pre-vote without waiting out the election timeout
    (Replica.peer_disconnected). Only a hint: a flapping link or a restart
    gives the same event, and the ZMTP keepalive above gives it late for a
    paused peer. A connect that fails (the peer still down) is not an event.
    After this node's own stall (a SIGSTOP, a turn longer than the keepalive
    interval: `poll` returns that long after it last did) its keepalive timers
    fire before its I/O thread reads what waited, closing healthy connections:
    disconnects within one keepalive interval of such a stall are counted
    (`hints_after_stall`) but not handed on.
  * CONNECT_TIMEOUT 2 election timeouts and RECONNECT_IVL 100 ms up to 1 s: a
    connect into a partition (dropped SYNs) is retried rather than hanging for
    TCP's two minutes; a restarted peer is reconnected within a second.

With security.mode = "curve" the sockets are CURVE sockets and every frame is
judged by the key its connection authenticated with: that half lives in
zrep.node.curve (CurveLinks, which Transport inherits).

Membership (issue 15): the cluster file's nodes are seeds, linked from the
start and kept for the node's life. `follow(config)` links every member of the
configuration in force that is not linked yet (its Member rpc/pub), and
unlinks a member that left it (and is no seed) after UNLINK_AFTER_S, so the
messages of its last turns still leave. A message for a node with no link is
dropped and counted (`send_unknown`). In plain mode a ROUTER frame whose
routing id is `node-<id>` is a peer's even if that id is not linked yet (a
new member's first ack; the core judges it); in curve mode a node is only
what its key says, so a member outside the cluster file is linked only once
the cluster file lists its key (SIGHUP reload).

Imports zmq and the codec; must not import the core's Replica, the WAL or the
store: this module moves frames, it does not judge protocol state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zrep.config import ClusterConfig, NodeConfig, source_endpoint
from zrep.core.messages import PEER_MESSAGE_TYPES, Heartbeat, Message
from zrep.errors import DecodeError
from zrep.node.curve import PUB_DOMAIN, RPC_DOMAIN, CurveLinks
from zrep.security.policy import Policy, Principal
from zrep.security.zap import ZapHandler
from zrep.wire.client_messages import (
    ClientBatch,
    ClientReply,
    ClientRequest,
    Code,
    check_ok_reply,
    error_reply,
    ok_reply,
)
from zrep.wire.codec import (
    FrameTooLarge,
    decode,
    encode,
    pack_reply,
    pack_reply_fields,
    replies_frames,
    request_id_of,
)

HWM_PEER = 1000
HWM_ROUTER = 1000
HWM_HEARTBEAT = 100
ROUTER_SLACK_BYTES = 64 << 10  # frames this far over the limit are still answered TOO_LARGE
SUB_MAX_BYTES = 64 << 10  # heartbeats are ~40 bytes
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000
UNLINK_AFTER_S = 5.0  # a member removed from the configuration is unlinked this long after
_PEER_PREFIX = b"node-"
_PEER_TYPES = frozenset(PEER_MESSAGE_TYPES)
# Plain ints: pyzmq's flag enums cost a Python-level Flag.__or__ per use, and
# send_multipart/recv_multipart go through them: 3x slower per frame.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
# The Cython send under pyzmq's Python-level Socket.send, which only adds routing_id
# and group handling (unused here): half the cost of each send, on every frame we send.
_send_frame = zmq.backend.Socket.send if issubclass(zmq.Socket, zmq.backend.Socket) else zmq.Socket.send

ClientIn = tuple[bytes, ClientRequest, bool]  # (routing id, request, it came in a ClientBatch)


def peer_identity(node_id: int) -> bytes:
    """The routing id a node's DEALERs present to its peers' ROUTERs."""
    return b"node-%d" % node_id


@dataclass(slots=True)
class Counters:
    """Frames refused or dropped, by cause (reported in a node's status)."""

    peer_undecodable: int = 0  # bad bytes from a peer's routing id
    peer_spoofed: int = 0  # decoded, but src does not match the routing id, or a client kind
    peer_bad_parts: int = 0
    peer_foreign_cluster: int = 0  # a peer message (or heartbeat) of another cluster id: dropped
    config_bad_keys: int = 0  # curve: a key in the configuration that is not a CURVE key: ignored
    sub_refused: int = 0  # SUB: bad bytes, not a Heartbeat, or not from a known peer
    client_bad: int = 0  # answered BAD_REQUEST
    client_too_large: int = 0  # answered TOO_LARGE
    send_dropped: int = 0  # peer message not sent: queue full or peer not connected
    send_unknown: int = 0  # peer message for a node neither a seed nor in the configuration: dropped
    reply_dropped: int = 0  # client reply not sent: its queue is full (each reply of a ClientReplies frame)
    client_forbidden: int = 0  # curve: a principal's request its grants refuse, or a client key sending peer kinds
    key_unknown: int = 0  # curve: a frame whose key is no longer listed (revoked by a reload)
    zap_refused: int = 0  # curve: handshakes refused (key not listed, or not CURVE)
    refused_by_peers: int = 0  # curve: a peer's ZAP refused our key (we relink with backoff)
    peer_disconnects: int = 0  # a peer DEALER's connection closed (the socket monitor's hints)
    hints_after_stall: int = 0  # ... of which just after our own stall: not handed on

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Transport(CurveLinks):
    """All sockets of node `node_id`. Single-threaded, like every zmq socket."""


    def __init__(self, cfg: ClusterConfig, node_id: int) -> None:
        me = cfg.node(node_id)
        self.node_id = node_id
        self.rpc = me.rpc
        self._host = me.host
        self._cfg = cfg
        self._seeds = frozenset(p.id for p in cfg.peers_of(node_id))
        # Every peer message goes out as [cluster id (8 bytes), payload]: a node of another cluster
        # (old members returning after force-new-cluster) is dropped and counted. 0 while forming.
        self.cluster_id = 0
        self._cluster_frame = bytes(8)
        self._unlink_at: dict[int, float] = {}  # member that left the configuration -> when to unlink it
        self.max_frame_bytes = cfg.max_frame_bytes
        self.counters = Counters()
        self._peer_by_ident = {peer_identity(p.id): p.id for p in cfg.peers_of(node_id)}
        self.peer_ids = tuple(sorted(self._peer_by_ident.values()))
        self.last_heard: dict[int, float] = {}  # peer -> time.monotonic() of its last valid frame
        self._batched: dict[bytes, list[bytes]] = {}  # routing id -> packed replies that flush() sends
        self._monitors: dict[zmq.Socket, int] = {}  # monitor of a peer DEALER -> that peer
        self._disconnects: list[int] = []  # peers whose connection closed since disconnects() was last asked
        self._stall_s = max(1, cfg.election_timeout_ms // 2) / 1000  # the keepalive interval (HEARTBEAT_IVL)
        self._polled_at = time.monotonic()  # when poll() last returned
        self._distrust_until = 0.0  # disconnects before this follow our own stall
        self._ctx = zmq.Context(io_threads=1)
        self._sockets: list[zmq.Socket] = []
        self.secure = cfg.security.curve
        self.policy: Policy | None = cfg.security.policy() if self.secure else None
        self._zap: ZapHandler | None = None
        self._subs: dict[zmq.Socket, int] = {}  # curve: one SUB per peer, so a heartbeat's sender is known
        self._relink_at: dict[int, float] = {}  # curve: peer -> when to relink after it refused our key
        self._relink_backoff: dict[int, float] = {}
        self.notes: list[str] = []
        self._mailbox_asks: dict[tuple[bytes, int], Principal] = {}  # curve: `mailboxes` answers to filter
        try:
            if self.secure:
                self._open_zap(cfg, node_id)
            self._open(cfg, me)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- setup

    def _socket(self, kind: int, **opts: Any) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        self._sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)  # IPv6 endpoints in the config work; IPv4 ones are unaffected
        for name, value in opts.items():
            sock.setsockopt(getattr(zmq, name), value)
        return sock

    def _open(self, cfg: ClusterConfig, me: NodeConfig) -> None:
        self._router = self._socket(
            zmq.ROUTER,
            RCVHWM=HWM_ROUTER,
            SNDHWM=HWM_ROUTER,
            MAXMSGSIZE=cfg.max_frame_bytes + 2 + ROUTER_SLACK_BYTES,
            ROUTER_MANDATORY=0,
            # Curve: peers are known by their keys, not by a routing id anyone could claim, so
            # no connection may take over another's id.
            ROUTER_HANDOVER=0 if self.secure else 1,
        )
        self._secure_server(self._router, RPC_DOMAIN)
        self._router.bind(me.bind_rpc)
        self._pub = self._socket(zmq.PUB, SNDHWM=HWM_HEARTBEAT)
        self._secure_server(self._pub, PUB_DOMAIN)
        self._pub.bind(me.bind_pub)
        timeout_ms = 2 * cfg.election_timeout_ms
        self._zmtp = dict(
            HEARTBEAT_IVL=max(1, cfg.election_timeout_ms // 2),
            HEARTBEAT_TIMEOUT=timeout_ms,
            HEARTBEAT_TTL=timeout_ms,
            CONNECT_TIMEOUT=timeout_ms,
            RECONNECT_IVL=RECONNECT_IVL_MS,
            RECONNECT_IVL_MAX=RECONNECT_IVL_MAX_MS,
        )
        self._sub = self._new_sub()
        self._dealers: dict[int, zmq.Socket] = {}
        self._endpoints: dict[int, tuple[str, str]] = {}  # peer -> (its rpc, its pub), as we connect to them
        for peer in cfg.peers_of(me.id):
            dealer = self._new_dealer()
            if not self.secure:  # curve: the key says who we are; a routing id could be claimed by anyone
                dealer.setsockopt(zmq.ROUTING_ID, peer_identity(me.id))
            self._secure_client(dealer, cfg, peer.id)
            self._endpoints[peer.id] = (source_endpoint(me.host, peer.rpc), source_endpoint(me.host, peer.pub))
            dealer.connect(self._endpoints[peer.id][0])
            self._dealers[peer.id] = dealer
            if self.secure:
                sub = self._new_sub()
                self._secure_client(sub, cfg, peer.id)
                sub.connect(self._endpoints[peer.id][1])
                self._subs[sub] = peer.id
            else:
                self._sub.connect(source_endpoint(me.host, peer.pub))
        self._poller = zmq.Poller()
        if self._zap is not None:
            self._poller.register(self._zap.socket, zmq.POLLIN)
        self._poller.register(self._router, zmq.POLLIN)
        self._poller.register(self._sub, zmq.POLLIN)
        for sub in self._subs:
            self._poller.register(sub, zmq.POLLIN)
        for peer_id, dealer in self._dealers.items():
            self._watch_dealer(peer_id, dealer)

    # ---------------------------------------------------------------- membership

    def follow(self, config: Any) -> list[int]:
        """Link the members of `config` (a zrep.core.membership.Config) not linked yet; schedule
        the unlinking of those that left it (seeds stay). The ids newly linked."""
        if config.cluster_id != self.cluster_id:
            self.cluster_id = config.cluster_id
            self._cluster_frame = config.cluster_id.to_bytes(8, "big")
        members = {m.id: m for m in config.members if m.id != self.node_id}
        if self.secure:
            self.trust_config(config)
        linked = []
        for peer_id, m in members.items():
            self._unlink_at.pop(peer_id, None)
            if peer_id in self._dealers or not (m.rpc and m.pub):
                continue
            if self.secure:
                if peer_id not in self._node_server_keys:
                    continue  # no key for it, in the file or the configuration: it cannot be reached
                self._link_secure(peer_id, m.rpc, m.pub)
            else:
                self._link(peer_id, m.rpc, m.pub)
            linked.append(peer_id)
        later = time.monotonic() + UNLINK_AFTER_S
        for peer_id in self._dealers:
            if peer_id not in members and peer_id not in self._seeds and config.members:
                self._unlink_at.setdefault(peer_id, later)
        if linked:
            self.notes.append(f"linked to new member(s) {linked} of the configuration")
        return linked

    def _link(self, peer_id: int, rpc: str, pub: str) -> None:
        """Plain mode: a DEALER to `rpc` and the SUB to `pub` of a member outside the cluster file."""
        dealer = self._new_dealer()
        dealer.setsockopt(zmq.ROUTING_ID, peer_identity(self.node_id))
        self._endpoints[peer_id] = (source_endpoint(self._host, rpc), source_endpoint(self._host, pub))
        dealer.connect(self._endpoints[peer_id][0])
        self._dealers[peer_id] = dealer
        self._sub.connect(self._endpoints[peer_id][1])
        self._peer_by_ident[peer_identity(peer_id)] = peer_id
        self.peer_ids = tuple(sorted(set(self.peer_ids) | {peer_id}))
        self._watch_dealer(peer_id, dealer)

    def _unlink_due(self, now: float) -> None:
        for peer_id, at in list(self._unlink_at.items()):
            if now < at:
                continue
            del self._unlink_at[peer_id]
            dealer = self._dealers.pop(peer_id, None)
            if dealer is None:
                continue
            self._unwatch_dealer(peer_id)
            self._sockets.remove(dealer)
            dealer.close(linger=0)
            rpc_pub = self._endpoints.pop(peer_id, None)
            own_sub = next((sub for sub, p in self._subs.items() if p == peer_id), None)
            if own_sub is not None:  # curve: its SUB of its own
                self._poller.unregister(own_sub)
                self._sockets.remove(own_sub)
                del self._subs[own_sub]
                own_sub.close(linger=0)
            elif rpc_pub is not None:
                try:
                    self._sub.disconnect(rpc_pub[1])
                except zmq.ZMQError:
                    pass  # never connected (or already gone): nothing to undo
            self.peer_ids = tuple(p for p in self.peer_ids if p != peer_id)
            self.last_heard.pop(peer_id, None)
            self.notes.append(f"unlinked node {peer_id}: it left the configuration")

    def _new_dealer(self) -> zmq.Socket:
        """A DEALER to one peer's ROUTER (not connected yet)."""
        return self._socket(zmq.DEALER, SNDHWM=HWM_PEER, RCVHWM=10, IMMEDIATE=1, **self._zmtp)

    def _new_sub(self) -> zmq.Socket:
        """A SUB for heartbeats, subscribed to everything (not connected yet)."""
        sub = self._socket(zmq.SUB, RCVHWM=HWM_HEARTBEAT, MAXMSGSIZE=SUB_MAX_BYTES, **self._zmtp)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        return sub

    def _watch_dealer(self, peer_id: int, dealer: zmq.Socket) -> None:
        """A socket monitor on a peer DEALER: its closed connections are failover hints; in curve
        mode its handshakes too (a peer that refused our key ends the link for good: we relink)."""
        events = zmq.EVENT_DISCONNECTED
        if self.secure:
            events |= zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
        monitor = dealer.get_monitor_socket(events)
        monitor.setsockopt(zmq.LINGER, 0)
        self._sockets.append(monitor)
        self._monitors[monitor] = peer_id
        self._poller.register(monitor, zmq.POLLIN)

    def _unwatch_dealer(self, peer_id: int) -> None:
        for monitor, peer in list(self._monitors.items()):
            if peer == peer_id:
                self._poller.unregister(monitor)
                self._sockets.remove(monitor)
                del self._monitors[monitor]
                monitor.close(linger=0)

    def close(self) -> None:
        """Close every socket now (LINGER 0) and the context. Idempotent."""
        self._monitors = {}
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        self._ctx.term()

    # ---------------------------------------------------------------- receiving

    def poll(self, timeout_ms: int) -> list[zmq.Socket]:
        """Wait up to `timeout_ms` for input; the sockets that have some."""
        ready = [sock for sock, _ in self._poller.poll(timeout_ms)]
        now = time.monotonic()
        if now - self._polled_at > self._stall_s:
            self._distrust_until = now + self._stall_s
        self._polled_at = now
        return ready

    def drain(self, ready: list[zmq.Socket], budget: int) -> tuple[list[Message], list[ClientIn]]:
        """Read up to `budget` messages from each ready socket, without blocking
        (a ClientBatch counts as its requests, and is read whole).

        Returns the peer messages and client requests that passed every check;
        bad client frames are answered here. The budget keeps a flood from
        starving the node's ticks: what is left is read on the next turn.
        """
        peer: list[Message] = []
        clients: list[ClientIn] = []
        now = time.monotonic()
        if self._zap is not None:
            self._zap.handle()  # handshakes first: a new peer or client waits on them
            if self._relink_at:
                self._relink_due()
        if self._unlink_at:
            self._unlink_due(now)
        for sock in ready:
            if sock is self._router:
                if self.secure:
                    self._drain_router_secure(budget, peer, clients, now)
                else:
                    self._drain_router(budget, peer, clients, now)
            elif sock is self._sub:
                self._drain_sub(budget, peer, now)
            elif sock in self._subs:
                self._drain_sub(budget, peer, now, sock, self._subs[sock])
            elif sock in self._monitors:
                self._drain_monitor(sock, self._monitors[sock])
        return peer, clients

    def _drain_monitor(self, monitor: zmq.Socket, peer_id: int) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, _NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused_by(peer_id)
                continue
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._relink_backoff.pop(peer_id, None)
                continue
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            self.counters.peer_disconnects += 1
            if time.monotonic() < self._distrust_until:
                self.counters.hints_after_stall += 1  # our keepalive may have timed out, not the peer
            else:
                self._disconnects.append(peer_id)

    def disconnects(self) -> list[int]:
        """The peers whose connection closed since the last call, in order (hints, not proof)."""
        out, self._disconnects = self._disconnects, []
        return out

    def _drain_router(self, budget: int, peer: list[Message], clients: list[ClientIn], now: float) -> None:
        router, limit = self._router, self.max_frame_bytes
        recv, more = router.recv, router.get
        by_ident, heard = self._peer_by_ident, self.last_heard
        taken = 0
        while taken < budget:
            # After a lone first frame (each hop of a send at 1 in flight), ZMQ_EVENTS says whether
            # another waits at half the cost of a recv that fails with Again (pyzmq builds an
            # exception for it). Past it more frames are likely: reading on until Again is cheaper
            # than asking before each one.
            if taken == 1 and not more(_EVENTS) & _POLLIN:
                return
            taken += 1
            try:
                parts = [recv(_NOBLOCK)]
            except zmq.Again:
                return
            while more(_RCVMORE):  # the rest of a multipart message is already here
                parts.append(recv(_NOBLOCK))
            ident = parts[0]
            src = by_ident.get(ident)
            if src is None and ident[:5] == _PEER_PREFIX:
                src = _peer_of(ident)  # a member we have no link to yet (a new one): the core judges it
            if src is not None:
                msg = self._peer_frame(src, parts, limit)
                if msg is not None:
                    peer.append(msg)
                    heard[src] = now
                continue
            if len(parts) != 2:
                self._refuse(ident, 0, Code.BAD_REQUEST, f"expected one frame after the routing id, got {len(parts) - 1}")
                continue
            req = self._client_frame(ident, parts[1], limit)
            if type(req) is ClientRequest:
                clients.append((ident, req, False))
            elif req is not None:
                taken += len(req.requests) - 1
                self._batch(ident, req, clients)

    def _batch(self, ident: bytes, batch: ClientBatch, clients: list[ClientIn]) -> None:
        for req in batch.requests:
            if type(req) is ClientRequest:
                clients.append((ident, req, True))
            else:  # a BadRequest: answered alone, its neighbours run
                self._refuse(ident, req.req_id, Code.BAD_REQUEST, req.message, batched=True)

    def _foreign(self, cluster: bytes) -> bool:
        """Of another cluster: both ids known (not forming) and different."""
        theirs = int.from_bytes(cluster, "big") if len(cluster) == 8 else -1
        if theirs == -1 or (theirs and self.cluster_id and theirs != self.cluster_id):
            self.counters.peer_foreign_cluster += 1
            return True
        return False

    def _peer_frame(self, src: int, parts: list[bytes], limit: int) -> Message | None:
        if len(parts) != 3:
            self.counters.peer_bad_parts += 1
            return None
        if self._foreign(parts[1]):
            return None
        try:
            msg = decode(parts[2], limit)
        except DecodeError:
            self.counters.peer_undecodable += 1
            return None
        if type(msg) not in _PEER_TYPES or msg.src != src:
            self.counters.peer_spoofed += 1  # never trust the src field over the connection
            return None
        return msg

    def _client_frame(self, ident: bytes, payload: bytes, limit: int) -> ClientRequest | ClientBatch | None:
        try:
            req = decode(payload, limit)
        except FrameTooLarge as e:
            self._refuse(ident, request_id_of(payload, limit), Code.TOO_LARGE, str(e))
            return None
        except DecodeError as e:
            self._refuse(ident, request_id_of(payload, limit), Code.BAD_REQUEST, str(e))
            return None
        if type(req) is not ClientRequest and type(req) is not ClientBatch:
            if self.secure and type(req) in _PEER_TYPES:  # a client key never reaches the protocol core
                self.counters.client_forbidden += 1
                self._forbid(ident, 0, f"a client key may not send {type(req).__name__}: peer messages come "
                             "only from the nodes' keys")
                return None
            self._refuse(ident, 0, Code.BAD_REQUEST,
                         f"a client may only send ClientRequest or ClientBatch, not {type(req).__name__}")
            return None
        return req  # type: ignore[return-value]

    def _refuse(self, ident: bytes, req_id: int, code: str, why: str, batched: bool = False) -> None:
        if code == Code.TOO_LARGE:
            self.counters.client_too_large += 1
        else:
            self.counters.client_bad += 1
        self.reply(ident, error_reply(req_id, code, why[:1000]), batched)

    def _drain_sub(self, budget: int, peer: list[Message], now: float, sub: zmq.Socket | None = None,
                   sender: int | None = None) -> None:
        # Curve: one SUB per peer, authenticated by the peer's key, so the sender is known.
        known = self._peer_by_ident.values() if sender is None else (sender,)
        sock = sub or self._sub
        recv, more, heard = sock.recv, sock.get, self.last_heard
        for _ in range(budget):
            try:
                cluster = recv(_NOBLOCK)
            except zmq.Again:
                return
            if not more(_RCVMORE):
                self.counters.sub_refused += 1  # a heartbeat is [cluster id, payload]
                continue
            payload = recv(_NOBLOCK)
            while more(_RCVMORE):
                recv(_NOBLOCK)  # (more parts: refused below by the part count)
                cluster = b""
            if self._foreign(cluster):
                continue
            try:
                msg = decode(payload, SUB_MAX_BYTES)
            except DecodeError:
                self.counters.sub_refused += 1
                continue
            # The publisher cannot be identified on SUB: accept only what a peer may publish.
            if type(msg) is not Heartbeat or msg.src not in known or msg.dst != 0:
                self.counters.sub_refused += 1
                continue
            peer.append(msg)
            heard[msg.src] = now

    # ---------------------------------------------------------------- sending

    def send(self, msg: Message, data: bytes) -> bool:
        """Send an encoded peer message: heartbeats (dst 0) on PUB, others to their
        peer's DEALER. False (counted) when dropped. `data` is `encode(msg)`,
        passed in so the caller decides what to do with an unencodable message."""
        sock = self._pub if msg.dst == 0 else self._dealers.get(msg.dst)
        if sock is None:
            self.counters.send_unknown += 1  # neither a seed nor a member we could link
            return False
        try:
            _send_frame(sock, self._cluster_frame, _NOBLOCK_MORE)  # all or nothing, as one message
            _send_frame(sock, data, _NOBLOCK)
        except zmq.Again:  # full queue or (IMMEDIATE) no live connection: the protocol retransmits
            self.counters.send_dropped += 1
            return False
        return True

    def reply(self, ident: bytes, reply: ClientReply, batched: bool = False) -> bool:
        """Answer a client through the ROUTER; a vanished client is silently dropped.
        A reply to a batched request waits for `flush()` (True: it was queued)."""
        if batched:
            try:
                packed = pack_reply(reply, self.max_frame_bytes)
            except ValueError as e:
                packed = pack_reply(_too_large(reply, e), self.max_frame_bytes)
            self._batched.setdefault(ident, []).append(packed)
            return True
        try:
            data = encode(reply, self.max_frame_bytes)
        except ValueError as e:
            data = encode(_too_large(reply, e), self.max_frame_bytes)
        return self._send_reply(ident, data, 1)

    def reply_ok(self, ident: bytes, req_id: int, result: dict[str, Any], batched: bool = False) -> bool:
        """reply(ident, ok_reply(req_id, result), batched); a batched one is checked and
        packed without making the ClientReply (most answers a node sends). ValueError, as
        ok_reply raises it, for a result the wire schema refuses."""
        if self.secure and self._mailbox_asks:
            result = self._visible(ident, req_id, result)
        if not batched:
            return self.reply(ident, ok_reply(req_id, result))
        check_ok_reply(req_id, result)
        try:
            packed = pack_reply_fields(req_id, True, Code.OK, "", result, self.max_frame_bytes)
        except ValueError as e:
            packed = pack_reply(_too_large_reply(req_id, e), self.max_frame_bytes)
        self._batched.setdefault(ident, []).append(packed)
        return True

    def flush(self) -> None:
        """Send the replies to batched requests collected since the last flush,
        as ClientReplies frames: few per client, each under the frame limit."""
        if not self._batched:
            return
        batched, self._batched = self._batched, {}
        limit = self.max_frame_bytes
        for ident, packed in batched.items():
            for data, n in replies_frames(packed, limit):
                self._send_reply(ident, data, n)

    def _send_reply(self, ident: bytes, data: bytes, replies: int) -> bool:
        try:
            # The routing id, then the frame: a ROUTER delivers or drops (unknown
            # client, full queue) the message as a whole.
            _send_frame(self._router, ident, _NOBLOCK_MORE)
            _send_frame(self._router, data, _NOBLOCK)
        except zmq.Again:
            self.counters.reply_dropped += replies
            return False
        return True

    # ---------------------------------------------------------------- status

    def heard_ms_ago(self) -> dict[int, int | None]:
        """Per peer: milliseconds since its last valid frame, None if never heard."""
        now = time.monotonic()
        return {p: (int((now - self.last_heard[p]) * 1000) if p in self.last_heard else None) for p in self.peer_ids}


def _peer_of(ident: bytes) -> int | None:
    """The id in a `node-<id>` routing id; None if it is not one."""
    digits = ident[len(_PEER_PREFIX):]
    return int(digits) if digits.isdigit() and 0 < len(digits) < 19 and int(digits) > 0 else None


def _too_large(reply: ClientReply, e: ValueError) -> ClientReply:
    return _too_large_reply(reply.req_id, e)


def _too_large_reply(req_id: int, e: ValueError) -> ClientReply:
    return error_reply(req_id, Code.TOO_LARGE, f"the answer does not fit in one frame ({e}); "
                       "ask for less, for example a smaller read limit"[:1000])
