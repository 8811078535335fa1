"""Network partitions between node addresses with nftables, and the sandbox
they run in.

Job: cut traffic between pairs of node addresses (127.0.0.1, .2, ...) on
loopback, in any shape: a set of directed (from node, to node) pairs whose
packets are dropped. One nftables table (`inet zrep_chaos`) holds every rule;
a heal flushes its chain, `remove` deletes the table, `cleanup_table` deletes
a table left behind by a run that died. Every change is one `nft -f`
transaction, so a partition never appears half applied.

The sandbox: when we are root and have `unshare`, `ip` and `nft`, the chaos
tool runs itself in a private network and PID namespace
(`unshare --net --pid --fork --kill-child`) with `lo` brought up: the
cluster, its clients and these rules live there and vanish with it, and the
host's firewall is never touched. Without a private namespace (--no-netns,
or one we were not given) the table is still removed in a `finally`, on
signals, and by `zrep chaos --cleanup`.

Invariants:
  * Rules only ever name addresses in 127.0.0.0/8 (checked before any rule
    is written): traffic stays on loopback.
  * Nothing but the table `inet zrep_chaos` is created, changed or deleted.
  * A packet dropped, not rejected: a cut pair's connects time out and
    established connections stall, as across a real partition (FAULTS.md).

Imports nothing from zrep: it is plumbing around `nft` and `unshare`.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

TABLE = "zrep_chaos"
FAMILY = "inet"
CHAIN = "input"
NETNS_ENV = "ZREP_CHAOS_NETNS"  # set in the re-executed tool: "we made this namespace"
NFT_TIMEOUT_S = 10.0

Pair = tuple[int, int]  # (from node, to node): packets from the first to the second are dropped


class NetFaultError(RuntimeError):
    """nft failed, or a rule would leave loopback."""


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def missing_tools(tools: Iterable[str]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def partitions_unavailable(hosts: Mapping[int, str]) -> str:
    """Why partitions cannot run here ('' when they can)."""
    if not is_root():
        return "partitions need root (nftables)"
    missing = missing_tools(["nft"])
    if missing:
        return "partitions need nft (apt-get install -y nftables)"
    addrs = list(hosts.values())
    if len(set(addrs)) != len(addrs):
        return "partitions need one address per node (the cluster file shares one)"
    for a in addrs:
        if not _loopback_v4(a):
            return f"partitions only cut loopback IPv4 addresses, and a node is on {a}"
    return ""


def sandbox_unavailable() -> str:
    """Why we cannot make a private network namespace ('' when we can)."""
    if not is_root():
        return "not root"
    missing = missing_tools(["unshare", "ip", "nft"])
    return f"missing {', '.join(missing)}" if missing else ""


def in_private_netns() -> bool:
    """True in a namespace we made (the env mark) or any network namespace other than init's."""
    if os.environ.get(NETNS_ENV) == "1":
        return True
    try:
        return os.stat("/proc/self/ns/net").st_ino != os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False  # cannot tell: assume the host's, the careful answer


def sandbox_command(argv: Sequence[str]) -> list[str]:
    """`argv` run in a fresh network + PID namespace with `lo` up.

    --kill-child: if the outer `unshare` dies, the tool inside gets SIGTERM
    (and cleans up); when the tool, PID 1 inside, exits, the kernel kills
    every node left in the namespace.
    """
    script = 'ip link set lo up && exec "$0" "$@"'
    return ["unshare", "--net", "--pid", "--fork", "--kill-child=SIGTERM", "--", "sh", "-c", script, *argv]


def _loopback_v4(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


def _nft(script: str) -> None:
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetFaultError(f"nft did not run: {e}") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise NetFaultError(f"nft failed ({first})")


def cleanup_table() -> bool:
    """Delete the table if it exists (a leftover of a run that died); True if one was there."""
    if not is_root() or missing_tools(["nft"]):
        return False
    proc = subprocess.run(["nft", "list", "table", FAMILY, TABLE], capture_output=True, text=True,
                          timeout=NFT_TIMEOUT_S)
    if proc.returncode != 0:
        return False
    _nft(f"delete table {FAMILY} {TABLE}\n")
    return True


class NetFaults:
    """The partition rules of one cluster. `cut(pairs)` replaces the current cut; `heal()` removes it."""

    def __init__(self, hosts: Mapping[int, str]) -> None:
        for node, addr in hosts.items():
            if not _loopback_v4(addr):
                raise NetFaultError(f"node {node} is on {addr}: rules only ever name 127.0.0.0/8 addresses")
        self.hosts = dict(hosts)
        self.cut_pairs: frozenset[Pair] = frozenset()
        self.installed = False

    def _head(self) -> str:
        return (f"add table {FAMILY} {TABLE}\n"
                f"add chain {FAMILY} {TABLE} {CHAIN} {{ type filter hook input priority -10 ; policy accept ; }}\n"
                f"flush chain {FAMILY} {TABLE} {CHAIN}\n")

    def cut(self, pairs: Iterable[Pair]) -> None:
        """Drop every packet from a to b for each (a, b); one transaction, replacing the previous cut."""
        pairs = frozenset(pairs)
        rules = []
        for a, b in sorted(pairs):
            if a == b or a not in self.hosts or b not in self.hosts:
                raise NetFaultError(f"cannot cut {a} -> {b}: not two distinct nodes of {sorted(self.hosts)}")
            rules.append(f"add rule {FAMILY} {TABLE} {CHAIN} ip saddr {self.hosts[a]} ip daddr {self.hosts[b]} drop\n")
        self.installed = True  # before nft runs: a half-failed call still gets removed
        _nft(self._head() + "".join(rules))
        self.cut_pairs = pairs

    def heal(self) -> None:
        if self.installed:
            _nft(self._head())
        self.cut_pairs = frozenset()

    def remove(self) -> None:
        """Delete the table (idempotent)."""
        if self.installed:
            self.installed = False
            self.cut_pairs = frozenset()
            cleanup_table()
