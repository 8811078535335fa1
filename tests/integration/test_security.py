"""CURVE on every socket of a real cluster: keys say who is who, grants say what they may do.

Issue 16's proofs with real processes: a client without a key, an unknown key
and raw bytes get nothing and change nothing; a listed key works; a client key
forging peer messages (with src=2 and with routing id node-2) changes no epoch,
log or store; a read-only principal cannot send; status needs admin; a
mailboxes listing is filtered.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from harness import LocalCluster, wait_until
from zrep.aio import Client as AioClient
from zrep.client import Client, NotAuthorized, Rejected
from zrep.config import write_config
from zrep.core.messages import Append, Election, Entry, Heartbeat
from zrep.security.keys import new_keypair
from zrep.security.zap import curve_client
from zrep.wire.codec import encode


def _add_principal(c: LocalCluster, name: str, **grants: object) -> Path:
    """A new principal in the cluster file (nodes restarted to read it); its secret key file."""
    _, secret, _ = new_keypair(name, c.dir / "keys")
    doc_text = c.config_path.read_text()
    grants_toml = "".join(f"{k} = {_toml(v)}\n" for k, v in grants.items())
    c.config_path.write_text(doc_text + f'\n[[principals]]\nname = "{name}"\npublic_keys = ["{name}.key"]\n'
                             + grants_toml)
    return secret


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "[" + ", ".join(f'"{x}"' for x in v) + "]"  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("secure"), secure=True, start=False)
    reader = _add_principal(c, "reader", read=["orders.*"])
    writer = _add_principal(c, "orders-app", send=["orders.*"], read=["orders.*"])
    c.cfg = write_config(__import__("zrep.config", fromlist=["load_config"]).load_config(c.config_path),
                         c.config_path)
    c.start()
    try:
        c.wait_for_leader(20)
        yield c, reader, writer
    finally:
        c.close()


def test_a_listed_key_sends_and_reads(secure):
    c, _, writer = secure
    with Client(c.config_path, key=writer, timeout_s=10) as client:
        r = client.send("orders.eu", b"first", sender="app")
        assert client.read("orders.eu").messages[-1].body == b"first" and r.offset >= 0


def test_no_key_and_an_unknown_key_fail_at_once_with_the_fix(secure, tmp_path):
    c, _, _ = secure
    with pytest.raises(NotAuthorized, match="requires a client key"):
        Client(c.config_path)
    _, stranger, _ = new_keypair("stranger", tmp_path)
    started = time.monotonic()
    with Client(c.config_path, key=stranger, timeout_s=10) as client:
        with pytest.raises(NotAuthorized, match="refused key .*not listed in the cluster file"):
            client.send("orders.eu", b"nope")
    assert time.monotonic() - started < 3.0  # a clear error, not a 10 s timeout


def test_a_read_only_principal_cannot_send_and_sees_only_its_mailboxes(secure):
    c, reader, writer = secure
    with Client(c.config_path, key=writer, timeout_s=10) as w:
        w.send("orders.us", b"x")
    with Client(c.config_path, key=c.client_key, timeout_s=10) as admin:
        admin.send("billing.eu", b"secret invoice")
    with Client(c.config_path, key=reader, timeout_s=10) as r:
        with pytest.raises(Rejected, match='principal "reader" may not send mailbox "orders.eu"') as e:
            r.send("orders.eu", b"forged")
        assert e.value.code == "FORBIDDEN"
        assert r.read("orders.us").messages
        with pytest.raises(Rejected, match="may not read"):
            r.read("billing.eu")
        names = {m.name for m in r.mailboxes()}
        assert "billing.eu" not in names and "orders.us" in names
        with pytest.raises(Rejected, match="not an admin"):
            r.status()


def test_a_client_key_forging_peer_messages_changes_nothing(secure):
    c, _, writer = secure
    leader = c.wait_for_leader(20)
    before = {i: c.status(i) for i in c.ids}
    node_key = c.cfg.security.node_keys[leader][0]
    pair = __import__("zrep.security.keys", fromlist=["load_secret"]).load_secret(writer)
    ctx = zmq.Context()
    try:
        for routing_id in (None, b"node-2"):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            if routing_id:
                s.setsockopt(zmq.ROUTING_ID, routing_id)
            curve_client(s, pair.public, pair.secret, node_key)
            s.connect(c.rpc(leader))
            epoch = before[leader]["epoch"] + 5
            for msg in (Election(2, leader, epoch, 99, 99, True),
                        Append(2, leader, epoch, 0, 0, (Entry(epoch, 1, b"evil"),), 1, 1),
                        Heartbeat(2, 0, epoch, 2, 2, 99, 99, 99)):
                s.send(encode(msg))
            time.sleep(0.3)  # let the node read them (nothing is expected back)
            s.close()
    finally:
        ctx.destroy(linger=0)
    with Client(c.config_path, key=writer, timeout_s=10) as client:
        client.send("orders.after", b"still writing")
    after = {i: c.status(i) for i in c.ids}
    assert all(after[i]["epoch"] == before[i]["epoch"] for i in c.ids)
    assert after[leader]["counters"]["client_forbidden"] >= 6  # 3 forged kinds x 2 routing ids, each refused


def test_raw_bytes_on_a_secure_port_get_nothing(secure):
    c, _, _ = secure
    leader = c.wait_for_leader(20)
    host, port = c.rpc(leader).removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"\xff" * 64 + b"GET / HTTP/1.0\r\n\r\n")
        raw.settimeout(3)
        try:
            got = raw.recv(4096)
        except (socket.timeout, ConnectionResetError):
            got = b""
    assert b"OK" not in got
    wait_until("the node still serves", lambda: c.status(leader)["epoch"] >= 1, 10)
    with Client(c.config_path, key=c.client_key, timeout_s=10) as client:
        client.send("after.raw", b"still serving")


def test_a_node_key_claiming_another_nodes_src_is_dropped(secure):
    c, _, _ = secure
    leader = c.wait_for_leader(20)
    liar = next(i for i in c.ids if i != leader)
    victim = next(i for i in c.ids if i not in (leader, liar))
    before = c.status(leader)
    pair = __import__("zrep.security.keys", fromlist=["load_secret"]).load_secret(c.dir / "keys" / f"node-{liar}.key_secret")
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        curve_client(s, pair.public, pair.secret, c.cfg.security.node_keys[leader][0])
        s.connect(c.rpc(leader))
        s.send_multipart([bytes(8), encode(Election(victim, leader, before["epoch"] + 3, 99, 99, True))])
        wait_until("the forged frame counted", lambda: c.status(leader)["counters"]["peer_spoofed"]
                   > before["counters"]["peer_spoofed"], 10)
        s.close()
    finally:
        ctx.destroy(linger=0)
    assert c.status(leader)["epoch"] == before["epoch"]


def test_client_keys_rotate_and_revoke_with_sighup_while_writes_go_on(tmp_path):
    import signal
    import threading

    c = LocalCluster(tmp_path / "rotate", secure=True, start=False)
    try:
        key_a = _add_principal(c, "app", send=["*"], read=["*"])
        new_keypair("app-b", c.dir / "keys")
        key_b = c.dir / "keys" / "app-b.key_secret"
        c.start()
        c.wait_for_leader(20)
        failures: list[str] = []
        sent = [0]
        stop = threading.Event()

        def writer() -> None:
            with Client(c.config_path, key=key_a, timeout_s=10) as client:
                while not stop.is_set() and sent[0] < 5000:
                    try:
                        client.send("rotating", b"m%d" % sent[0])
                        sent[0] += 1
                    except Exception as e:  # any failure is the test's finding
                        failures.append(repr(e))
                        return

        def reload(text_from: str, text_to: str, reloads: int) -> None:
            c.config_path.write_text(c.config_path.read_text().replace(text_from, text_to))
            c.signal_nodes(c.ids, signal.SIGHUP)
            wait_until("every node reloaded", lambda: all(c.node_log(i).count("reload: ") >= reloads
                                                          for i in c.ids), 15)

        t = threading.Thread(target=writer)
        t.start()
        wait_until("writes with key A", lambda: sent[0] >= 20, 15)
        reload('public_keys = ["app.key"]', 'public_keys = ["app.key", "app-b.key"]', 1)  # add B beside A
        with Client(c.config_path, key=key_b, timeout_s=10) as b:
            b.send("rotating", b"with key B")
        before = sent[0]
        wait_until("A still writes after the reload", lambda: sent[0] >= before + 20, 15)
        stop.set()
        t.join(30)
        assert failures == [] and sent[0] > 40
        reload('public_keys = ["app.key", "app-b.key"]', 'public_keys = ["app-b.key"]', 2)  # revoke A
        with pytest.raises(NotAuthorized, match="refused key"):
            with Client(c.config_path, key=key_a, timeout_s=5) as a:
                a.send("rotating", b"revoked")
        with Client(c.config_path, key=key_b, timeout_s=10) as b:
            b.send("rotating", b"B still works")
            c.config_path.write_text(c.config_path.read_text() + "\n[[principals]]\nname = 'Bad Name'\n")
            c.signal_nodes(c.ids, signal.SIGHUP)
            wait_until("a bad file is refused and the old grants kept",
                       lambda: all("reload: kept the previous keys and grants" in c.node_log(i) for i in c.ids), 15)
            b.send("rotating", b"B after a bad reload")
        assert c.unexpected_exits() == []
    finally:
        c.close()


def test_a_node_key_rotates_one_node_at_a_time_with_quorum_held(tmp_path):
    import shutil
    import signal

    c = LocalCluster(tmp_path / "node-rotate", secure=True)
    try:
        n = c.wait_for_leader(20)  # rotate the leader's key: it hands leadership over first
        with Client(c.config_path, key=c.client_key, timeout_s=15) as client:
            leader = client.admin("transfer", 0).leader
        assert leader != n
        keys = c.dir / "keys"
        old_public = c.cfg.security.node_keys[n][0].decode()
        _, new_secret, new_pair = new_keypair(f"node-{n}-next", keys)
        text = c.config_path.read_text()
        assert text.count(f'"{old_public}"') == 1
        # 1. The new key first for node n, everywhere; the old one still listed. Peers relink to it.
        c.config_path.write_text(text.replace(f'"{old_public}"', f'"{new_pair.public.decode()}", "{old_public}"'))
        c.signal_nodes(c.ids, signal.SIGHUP)
        wait_until("every node reloaded", lambda: all("reload: " in c.node_log(i) for i in c.ids), 15)
        # Clients try a node's listed keys in turn: node n still runs with its old key, listed second.
        async def aio_status() -> list[Any]:
            async with AioClient(c.config_path, key=c.client_key, timeout_s=15) as a:
                return await a.status(timeout_s=5)

        rows = {s.id: s for s in asyncio.run(aio_status())}
        assert rows[n].up, f"the asyncio client did not reach node {n} by its second key: {rows[n]}"
        with Client(c.config_path, key=c.client_key, timeout_s=15) as client:
            assert {s.id: s for s in client.status(timeout_s=5)}[n].up
            for i in range(20):  # the other two hold a quorum while node n is unreachable by its old key
                client.send("node-rotation", b"during %d" % i)
            # 2. Node n restarts with its new secret: every link works again.
            c.kill(n, signal.SIGTERM)
            shutil.copy(new_secret, keys / f"node-{n}.key_secret")
            c.start(n)
            c.reload_config()  # the test's own helpers learn node n's new key too
            for i in range(20):
                client.send("node-rotation", b"after %d" % i)
        commit = c.status(leader)["commit"]
        wait_until("node n caught up with its new key", lambda: c.status(n)["applied"] >= commit, 20)
        assert c.unexpected_exits() == []
    finally:
        c.close()


def test_two_principals_with_one_client_id_never_share_exactly_once_answers(secure):
    c, _, writer = secure
    with Client(c.config_path, key=writer, timeout_s=10, client_id="shared-id") as app:
        first = app.send("orders.shared", b"from orders-app")
    with Client(c.config_path, key=c.client_key, timeout_s=10, client_id="shared-id") as admin:
        second = admin.send("orders.shared", b"from local-admin")  # same client id, same seq 1
    with Client(c.config_path, key=c.client_key, timeout_s=10) as admin:
        bodies = [m.body for m in admin.read("orders.shared").messages]
    # Had the ids been shared, the second send would have got the first one's kept answer and applied nothing.
    assert bodies == [b"from orders-app", b"from local-admin"] and second.offset == first.offset + 1


def test_a_node_refused_by_its_peers_relinks_once_they_list_its_key(tmp_path):
    """The node's new key reaches its peers' files late: they refuse it (libzmq would never retry
    that link); once they reload, it relinks by itself, and its acks count again."""
    import shutil
    import signal

    c = LocalCluster(tmp_path / "relink", secure=True)
    try:
        leader = c.wait_for_leader(20)
        n, m = [i for i in c.ids if i != leader]
        keys = c.dir / "keys"
        old_public = c.cfg.security.node_keys[n][0].decode()
        _, new_secret, new_pair = new_keypair(f"node-{n}-next", keys)
        text = c.config_path.read_text()
        c.config_path.write_text(text.replace(f'"{old_public}"', f'"{new_pair.public.decode()}", "{old_public}"'))
        c.kill(n, signal.SIGTERM)
        shutil.copy(new_secret, keys / f"node-{n}.key_secret")
        c.start(n)  # its peers have not reloaded: they refuse its new key
        wait_until("node n says it was refused", lambda: "refused our key" in c.node_log(n), 15)
        c.signal_nodes([leader, m], signal.SIGHUP)
        wait_until("the peers reloaded", lambda: all("reload: " in c.node_log(i) for i in (leader, m)), 15)
        c.reload_config()
        c.kill(m, signal.SIGKILL)  # from now on a write needs node n's ack
        with Client(c.config_path, key=c.client_key, timeout_s=30) as client:
            client.send("relinked", b"acked by the leader and node n")
        assert c.status(n)["counters"]["refused_by_peers"] >= 1
    finally:
        c.close()


def test_the_asyncio_client_is_told_at_once_too(secure, tmp_path):
    import asyncio

    from zrep.aio import Client as AioClient

    c, _, writer = secure
    _, stranger, _ = new_keypair("async-stranger", tmp_path)

    async def main() -> float:
        async with AioClient(c.config_path, key=writer, timeout_s=10) as ok:
            await ok.send("orders.async", b"keyed")
        started = time.monotonic()
        async with AioClient(c.config_path, key=stranger, timeout_s=10) as bad:
            with pytest.raises(NotAuthorized, match="refused key"):
                await bad.send("orders.async", b"nope")
        return time.monotonic() - started

    assert asyncio.run(main()) < 3.0
