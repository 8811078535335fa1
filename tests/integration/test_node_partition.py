"""A real network partition between loopback addresses (FAULTS.md recipe).

The test re-runs this file as a script inside private network and PID
namespaces (`unshare --net --pid --fork --kill-child`): the nftables table
and every node process vanish with the namespace, whatever happens, and
nothing touches the host's firewall. It needs root, unshare, ip and nft
(`apt-get install -y nftables iproute2`); without them it is skipped.

Scenario: three nodes on 127.0.0.1/.2/.3, the client on 127.0.0.100. The
leader is cut off from both peers (both directions). The majority elects a
new leader within 3 s and keeps taking writes; the old leader steps down
(check-quorum) and acknowledges nothing while cut off; after the heal every
node converges and every acknowledged write is there exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import REPO, LocalCluster, wait_until  # noqa: E402

from zrep.wire.client_messages import Code  # noqa: E402

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
TOOLS = ("unshare", "ip", "nft")
TABLE = "zrep_part"


def _sandbox_ready() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and all(shutil.which(t) for t in TOOLS)


@pytest.mark.slow
@pytest.mark.skipif(not _sandbox_ready(), reason="needs root, unshare, ip and nft (apt-get install -y nftables)")
def test_a_partitioned_leader_is_replaced_and_acknowledges_nothing(tmp_path: Path) -> None:
    script = f"ip link set lo up && exec {sys.executable} {__file__} {tmp_path}"
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", script],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    assert "scenario passed" in proc.stdout


# ------------------------------------------------------------------ inside the namespace


def nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True)


def cut(a: str, others: list[str]) -> None:
    nft("add", "table", "inet", TABLE)
    nft("add", "chain", "inet", TABLE, "input", "{ type filter hook input priority -10 ; policy accept ; }")
    for b in others:
        nft("add", "rule", "inet", TABLE, "input", "ip", "saddr", a, "ip", "daddr", b, "drop")
        nft("add", "rule", "inet", TABLE, "input", "ip", "saddr", b, "ip", "daddr", a, "drop")


def heal() -> None:
    nft("delete", "table", "inet", TABLE)


def scenario(tmp: Path) -> None:
    with LocalCluster(tmp, hosts=HOSTS, client_host="127.0.0.100") as c:
        try:
            run(c)
        except BaseException:
            print(c.log_tails())
            raise


def run(c: LocalCluster) -> None:
    old = c.wait_for_leader(15)
    acked: dict[bytes, tuple[str, int]] = {}

    def send(seq: int, first: int | None = None) -> None:
        body = f"p-{seq}".encode()
        r = c.send("p", seq, "box", body, first=first)
        acked[body] = (r["mailbox"], r["offset"])

    for seq in range(1, 11):
        send(seq)
    others = [i for i in c.ids if i != old]
    cut(HOSTS[old - 1], [HOSTS[i - 1] for i in others])
    cut_at = time.monotonic()
    new = c.wait_for_leader(10, nodes=others, not_=old)
    took = time.monotonic() - cut_at
    assert took < 3.0, f"new leader after {took:.2f}s"
    for seq in range(11, 31):
        send(seq, first=new)

    def stepped_down() -> bool:
        st = c.statuses([old]).get(old)
        return st is not None and st["role_name"] != "leader"

    wait_until(f"cut-off leader {old} to step down", stepped_down, 10)
    # A write at the cut-off node must not be acknowledged: it has no majority.
    args = {"client": "minority", "seq": 1, "low": 1, "ack": "majority", "sender": "", "to": "box",
            "body": b"never-acked"}
    reply = c.try_request(old, "send", args, timeout=2.0)
    assert reply is None or reply.code in (Code.NO_LEADER, Code.TIMEOUT, Code.NOT_LEADER), reply
    heal()
    c.wait_converged(20)
    send(31, first=old)  # the old leader serves again, through the new one
    c.wait_converged(20)
    for node in c.ids:
        rows = c.read("box", node=node)
        counts = Counter(body for _, _, body, _ in rows)
        assert max(counts.values()) == 1, f"node {node}: a message applied twice"
        at = {offset: body for offset, _, body, _ in rows}
        for body, (_, offset) in acked.items():
            assert at.get(offset) == body, f"node {node}: acknowledged {body!r} not at offset {offset}"
    print(f"scenario passed: new leader {new} {took:.2f}s after the cut")


if __name__ == "__main__":
    scenario(Path(sys.argv[1]))
