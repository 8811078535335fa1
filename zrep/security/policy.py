"""Who may do what: node keys, client principals and their mailbox grants. Pure; denies by default.

Job: map the key a connection authenticated with (ZAP's User-Id, the z85
public key) to a node or a principal, and decide each client operation.
Invariants
- A key names at most one identity (a node or a principal); the table
  refuses to build otherwise.
- Node keys may send peer messages and nothing is asked of them here; a
  principal may send only the client operations its grants allow:
  send -> `send` globs on the mailbox written to, delete -> `delete`,
  read / stale_read / watch -> `read`, mailboxes -> answered filtered to
  `read` and `send`, status and every admin command -> `admin` (the
  `admin` op: membership, `members` as well as every change, since it
  shows the cluster's addresses and keys).
- Globs are fnmatchcase, as `mailboxes` patterns; a mailbox name cannot hold
  glob characters, so a name never widens a grant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from zrep.errors import ConfigError

PRINCIPAL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAILBOX_OPS = {"send": "send", "delete": "delete", "read": "read", "stale_read": "read", "watch": "read"}
ADMIN_OPS = frozenset({"status", "events", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    keys: tuple[bytes, ...]
    send: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    admin: bool = False

    def globs(self, grant: str) -> tuple[str, ...]:
        return getattr(self, grant)


@dataclass(frozen=True, slots=True)
class Node:
    id: int


Identity = Node | Principal


class Policy:
    """The table of keys, built once per (re)load and then only read."""

    def __init__(self, node_keys: Mapping[int, Sequence[bytes]], principals: Iterable[Principal]) -> None:
        self._by_key: dict[bytes, Identity] = {}
        for node_id, keys in sorted(node_keys.items()):
            for k in keys:
                self._add(k, Node(node_id), f"node {node_id}")
        self.principals: dict[str, Principal] = {}
        for p in principals:
            if not PRINCIPAL_NAME.fullmatch(p.name):
                raise ConfigError(f"principal {p.name!r}: a name is 1-32 of a-z, 0-9 and '-', starting with a letter "
                                  "or digit")
            if p.name in self.principals:
                raise ConfigError(f"principal {p.name!r} is listed twice; merge its keys and grants into one")
            self.principals[p.name] = p
            for k in p.keys:
                self._add(k, p, f"principal {p.name!r}")

    def _add(self, key: bytes, who: Identity, label: str) -> None:
        other = self._by_key.get(key)
        if other is not None:
            raise ConfigError(f"key {key[:8].decode()}... is listed for {_label(other)} and for {label}: "
                              "one key names one identity")
        self._by_key[key] = who

    def identify(self, key: bytes | None) -> Identity | None:
        """The node or principal of an authenticated key; None for a key not (or no longer) listed."""
        return None if key is None else self._by_key.get(key)

    def node_keys(self) -> frozenset[bytes]:
        return frozenset(k for k, who in self._by_key.items() if isinstance(who, Node))

    def refusal(self, who: Principal, op: str, mailbox: str | None = None) -> str | None:
        """None if `who` may do `op` (on `mailbox`), else the FORBIDDEN message to answer."""
        grant = MAILBOX_OPS.get(op)
        if grant is not None:
            globs = who.globs(grant)
            if mailbox is not None and any(fnmatchcase(mailbox, g) for g in globs):
                return None
            allowed = ", ".join(globs) or "nothing"
            return f'principal "{who.name}" may not {op} mailbox "{mailbox}" ({grant}: {allowed})'
        if op == "mailboxes":
            return None  # answered, but filtered by visible()
        if op in ADMIN_OPS:
            return None if who.admin else f'principal "{who.name}" may not {op}: it is not an admin'
        return f'principal "{who.name}" may not {op}: unknown operation'

    def visible(self, who: Principal, mailbox: str) -> bool:
        """Whether `mailboxes` lists this mailbox to `who` (it may read or send to it)."""
        return any(fnmatchcase(mailbox, g) for g in (*who.read, *who.send))


def _label(who: Identity) -> str:
    return f"node {who.id}" if isinstance(who, Node) else f"principal {who.name!r}"
