"""CURVE for the node's sockets: the ZAP handler, keyed links, judging frames by their key, reloads.

Job: the curve-mode half of zrep.node.transport.Transport (a mixin it
inherits): bind the ZAP handler before any CURVE socket and answer it in the
loop; make the ROUTER and PUB CURVE servers and every peer DEALER and SUB a
CURVE client of that peer's listed key; judge every ROUTER frame by the key
its connection authenticated with (ZAP's User-Id), never by a routing id or
a src field; check a principal's requests against its grants (FORBIDDEN
otherwise) and filter its `mailboxes` answers; take new keys and grants on
SIGHUP; relink, with backoff, to a peer that refused our key.
Invariants: a node key may send only peer messages under its own id; a
principal's key only client requests, each within its grants; a key not
listed gets nothing; a principal's client ids are prefixed with its name.
Nothing here runs unless security.mode is curve.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from zrep.config import ClusterConfig, source_endpoint
from zrep.core.messages import Message
from zrep.errors import ConfigError
from zrep.security.keys import KeyFileError, KeyPair, check_z85, fingerprint, load_secret
from zrep.security.policy import MAILBOX_OPS, Node, Policy, Principal
from zrep.security.settings import SecuritySettings
from zrep.security.zap import ZapHandler, curve_client, curve_server
from zrep.wire.client_messages import ClientBatch, ClientRequest, Code, error_reply
from zrep.wire.codec import request_id_of

if TYPE_CHECKING:
    from zrep.node.transport import ClientIn, Counters

RELINK_FIRST_S = 0.5  # first wait before relinking to a peer that refused our key
RELINK_MAX_S = 10.0
RPC_DOMAIN = "zrep-rpc"  # ZAP domain of the ROUTER: node keys and principals' keys
PUB_DOMAIN = "zrep-pub"  # ZAP domain of the PUB: node keys only
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class CurveLinks:
    """The curve-mode state and methods of a Transport (which provides the sockets and counters)."""

    secure = False  # curve mode (set per instance by Transport.__init__)
    notes: list[str] = []  # lines for the node's log; replaced per instance, never appended to here
    policy: Policy | None = None
    node_id: int
    counters: Counters
    max_frame_bytes: int
    last_heard: dict[int, float]
    _keys: KeyPair
    _zap: ZapHandler | None
    _dealers: dict[int, zmq.Socket]
    _subs: dict[zmq.Socket, int]
    _endpoints: dict[int, tuple[str, str]]
    _mailbox_asks: dict[tuple[bytes, int], Principal]
    _relink_at: dict[int, float]
    _relink_backoff: dict[int, float]
    _node_server_keys: dict[int, bytes]
    _file_security: SecuritySettings
    _config_keys: dict[int, tuple[bytes, ...]]
    _handshake_ms: int
    _zmtp: dict[str, Any]

    def _open_zap(self, cfg: ClusterConfig, node_id: int) -> None:
        """Curve: the node's keys, and the ZAP handler bound before any CURVE socket (fail closed)."""
        sec = cfg.security
        self._keys = load_secret(sec.keys_dir / f"node-{node_id}.key_secret") if sec.keys_dir else None
        if self._keys is None or self._keys.public not in sec.node_keys.get(node_id, ()):
            raise ConfigError(f"node {node_id}: its secret key's public half is not listed in public_keys of node "
                              f"{node_id}; list {fingerprint(self._keys.public) if self._keys else '?'}... there, "
                              "or start the node with the secret of a listed key")
        def authorize(domain: str, key: bytes) -> bool:  # reads self.policy: a reload applies at once
            policy = self.policy
            assert policy is not None
            if domain == PUB_DOMAIN:
                return isinstance(policy.identify(key), Node)  # heartbeats go to nodes only
            return domain == RPC_DOMAIN and policy.identify(key) is not None

        def refused(domain: str, key: bytes, why: str) -> None:
            self.counters.zap_refused += 1

        self._node_server_keys = {p: ks[0] for p, ks in sec.node_keys.items() if ks}
        self._file_security = sec
        self._config_keys = {}
        self._zap = ZapHandler(self._ctx, authorize, refused)
        self._sockets.append(self._zap.socket)
        self._handshake_ms = sec.handshake_ms

    def reload_security(self, fresh: SecuritySettings) -> str:
        """Take new keys and grants (SIGHUP). A key no longer listed is refused at its next frame;
        a peer whose current key changed gets new links (its old ones fail their handshake).
        ConfigError, and nothing changes, if the new settings cannot replace the old."""
        if fresh.mode != ("curve" if self.secure else "none"):
            raise ConfigError("security.mode cannot change on a reload; stop every node, then start them again")
        if not self.secure:
            return "security.mode is none: nothing to reload"
        own = fresh.node_keys.get(self.node_id, ())
        if self._keys.public not in own:
            raise ConfigError(f"node {self.node_id}'s own key {fingerprint(self._keys.public)}... is not listed "
                              "any more; list it, or restart the node with a key that is")
        old_keys, self._file_security = self._node_server_keys, fresh
        self._rebuild_trust()
        renewed = sorted(p for p in self._dealers if self._node_server_keys.get(p) != old_keys.get(p))
        for peer in renewed:
            self._renew_links(peer)
        return (f"{len(self.policy.principals)} principals, node keys of {len(self._node_server_keys)} nodes"
                + (f"; new links to nodes {renewed}" if renewed else ""))

    def trust_config(self, config: Any) -> list[int]:
        """Curve: also trust the node keys the replicated configuration lists (a member added with
        `zrep admin add --key`): the cluster committed it, by the vote of nodes the file trusts,
        on the request of a principal with the admin grant. Returns the peers whose current key
        changed (their links are renewed)."""
        keys: dict[int, tuple[bytes, ...]] = {}
        for m in config.members:
            good = []
            for k in m.keys:
                try:
                    good.append(check_z85(k, f"node {m.id}'s key in the configuration"))
                except KeyFileError:
                    self.counters.config_bad_keys += 1  # listed by an admin, refused here: it is not a key
            if good and m.id != self.node_id:
                keys[m.id] = tuple(good)
        if keys == self._config_keys:
            return []
        old = dict(self._node_server_keys)
        self._config_keys = keys
        self._rebuild_trust()
        renewed = sorted(p for p in self._dealers if self._node_server_keys.get(p) != old.get(p))
        for peer in renewed:
            self._renew_links(peer)
        return renewed

    def _rebuild_trust(self) -> None:
        """The key table: the cluster file's node keys and principals, plus the configuration's
        node keys for nodes the file does not list. For a node the file lists, the file alone
        decides (a rotation or a revocation is done there, with SIGHUP, and must not be undone
        by an older key the configuration still carries)."""
        table = {p: tuple(ks) for p, ks in self._file_security.node_keys.items()}
        for p, ks in self._config_keys.items():
            table.setdefault(p, ks)
        self.policy = Policy(table, self._file_security.principals)
        self._node_server_keys = {p: ks[0] for p, ks in table.items() if ks}

    def _link_secure(self, peer_id: int, rpc: str, pub: str) -> None:
        """Curve: a DEALER and a SUB of its own to a member outside the cluster file, by its key."""
        self._endpoints[peer_id] = (source_endpoint(self._host, rpc), source_endpoint(self._host, pub))
        dealer = self._new_dealer()
        self._secure_client(dealer, None, peer_id)
        dealer.connect(self._endpoints[peer_id][0])
        self._dealers[peer_id] = dealer
        self._watch_dealer(peer_id, dealer)
        sub = self._new_sub()
        self._secure_client(sub, None, peer_id)
        sub.connect(self._endpoints[peer_id][1])
        self._subs[sub] = peer_id
        self._poller.register(sub, zmq.POLLIN)
        self.peer_ids = tuple(sorted(set(self.peer_ids) | {peer_id}))

    def _renew_links(self, peer: int) -> None:
        """Curve: a peer's key changed; close its DEALER and SUB, connect new ones with the new key."""
        dealer = self._dealers[peer]
        endpoint, sub_endpoint = self._endpoints[peer]
        self._unwatch_dealer(peer)
        self._sockets.remove(dealer)
        dealer.close(linger=0)
        fresh = self._new_dealer()
        self._secure_client(fresh, None, peer)
        fresh.connect(endpoint)
        self._dealers[peer] = fresh
        self._watch_dealer(peer, fresh)
        old_sub = next(s for s, p in self._subs.items() if p == peer)
        self._poller.unregister(old_sub)
        self._sockets.remove(old_sub)
        del self._subs[old_sub]
        old_sub.close(linger=0)
        sub = self._new_sub()
        self._secure_client(sub, None, peer)
        sub.connect(sub_endpoint)
        self._subs[sub] = peer
        self._poller.register(sub, zmq.POLLIN)

    def _secure_server(self, sock: zmq.Socket, domain: str) -> None:
        if self.secure:
            curve_server(sock, self._keys.secret, domain, self._handshake_ms)

    def _secure_client(self, sock: zmq.Socket, cfg: ClusterConfig | None, peer_id: int) -> None:
        if self.secure:
            server_key = self._node_server_keys[peer_id]  # the first listed is the peer's current key
            curve_client(sock, self._keys.public, self._keys.secret, server_key, self._handshake_ms)

    def _refused_by(self, peer_id: int) -> None:
        """Curve: the peer's ZAP refused our key, and libzmq will not retry that link; we do, with backoff."""
        self.counters.refused_by_peers += 1
        backoff = min(RELINK_MAX_S, self._relink_backoff.get(peer_id, RELINK_FIRST_S / 2) * 2)
        self._relink_backoff[peer_id] = backoff
        self._relink_at[peer_id] = time.monotonic() + backoff
        self.notes.append(f"node {peer_id} refused our key {fingerprint(self._keys.public)}...: is it listed for "
                          f"node {self.node_id} in node {peer_id}'s cluster file (then SIGHUP it)? "
                          f"retrying in {backoff:.1f} s")

    def _relink_due(self) -> None:
        now = time.monotonic()
        for peer_id, at in list(self._relink_at.items()):
            if now >= at:
                del self._relink_at[peer_id]
                self._renew_links(peer_id)

    def take_notes(self) -> list[str]:
        """Lines for the node's log (a peer refusing our key), once each."""
        out, self.notes = self.notes, []
        return out

    def _drain_router_secure(self, budget: int, peer: list[Message], clients: list[ClientIn], now: float) -> None:
        """Curve: every frame carries the key its connection authenticated with (ZAP's User-Id);
        that key, never a routing id or a src field, says who sent it."""
        router, limit, policy = self._router, self.max_frame_bytes, self.policy
        assert policy is not None
        taken = 0
        while taken < budget:
            if taken == 1 and not router.get(_EVENTS) & _POLLIN:  # as in Transport._drain_router
                return
            taken += 1
            try:
                frames = [router.recv(_NOBLOCK, copy=False)]
            except zmq.Again:
                return
            while router.get(_RCVMORE):
                frames.append(router.recv(_NOBLOCK, copy=False))
            try:
                key = frames[-1].get("User-Id").encode()
            except zmq.ZMQError:  # no User-Id: cannot happen behind ZAP; refuse rather than trust
                key = b""
            parts = [f.bytes for f in frames]
            ident, who = parts[0], policy.identify(key)
            if isinstance(who, Node):
                msg = self._peer_frame(who.id, parts, limit)
                if msg is not None:
                    peer.append(msg)
                    self.last_heard[who.id] = now
                continue
            if who is None:
                self.counters.key_unknown += 1
                self._forbid(ident, request_id_of(parts[-1], limit) if len(parts) == 2 else 0,
                             f"key {fingerprint(key) if key else '?'}... is not (or no longer) listed in the cluster file")
                continue
            if len(parts) != 2:
                self._refuse(ident, 0, Code.BAD_REQUEST, f"expected one frame after the routing id, got {len(parts) - 1}")
                continue
            req = self._client_frame(ident, parts[1], limit)
            if req is None:
                continue
            items = [req] if type(req) is ClientRequest else list(req.requests)
            batched = type(req) is ClientBatch
            taken += len(items) - 1
            for item in items:
                if type(item) is not ClientRequest:
                    self._refuse(ident, item.req_id, Code.BAD_REQUEST, item.message, batched=True)
                elif self._allowed(ident, item, who, batched):
                    clients.append((ident, item, batched))

    def _allowed(self, ident: bytes, req: ClientRequest, who: Principal, batched: bool) -> bool:
        """Curve: check a principal's request against its grants; answer FORBIDDEN if it may not."""
        assert self.policy is not None
        op, args = str(req.op), req.args
        mailbox = args.get("to") if op == "send" else args.get("mailbox") if op in MAILBOX_OPS else None
        why = self.policy.refusal(who, op, mailbox)
        if why is not None:
            self.counters.client_forbidden += 1
            self._forbid(ident, req.req_id, why, batched)
            return False
        if "client" in args:  # a principal's exactly-once answers are its own: no other can read or poison them
            args["client"] = f"{who.name}/{args['client']}"
        if op == "mailboxes":
            if len(self._mailbox_asks) > 10_000:  # asks answered with an error are never popped
                self._mailbox_asks.clear()
            self._mailbox_asks[(ident, req.req_id)] = who
        return True

    def _forbid(self, ident: bytes, req_id: int, why: str, batched: bool = False) -> None:
        self.reply(ident, error_reply(req_id, Code.FORBIDDEN, why[:1000]), batched)

    def _visible(self, ident: bytes, req_id: int, result: dict[str, Any]) -> dict[str, Any]:
        """Curve: a `mailboxes` answer lists only what the asking principal may read or send to."""
        who = self._mailbox_asks.pop((ident, req_id), None)
        if who is None or "mailboxes" not in result or self.policy is None:
            return result
        policy = self.policy
        return {**result, "mailboxes": [m for m in result["mailboxes"] if policy.visible(who, m[0])]}

