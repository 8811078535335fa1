"""The cluster file's security part: `[security]`, `[[principals]]` and each node's `public_keys`.

Job: turn those tables (already read from TOML) into `SecuritySettings`,
or fail with one ConfigError line naming the key and the fix. A key is
given as a file name in `keys_dir` (a zcert `.key`) or inline as its 40 z85
characters.
Invariants: mode "none" (the default) needs nothing else and ignores no
key silently; mode "curve" needs a public key for every node; a key names
one identity (Policy); secrets are never read here, only public keys.

    [security]
    mode = "curve"                  # or "none" (the default): anyone who reaches the ports can write
    keys_dir = "keys"               # relative to the cluster file's folder
    handshake_timeout_ms = 5000     # a silent TCP connection is closed after this

    [[nodes]]
    public_keys = ["node-1.key"]    # first = current; a second one during a rotation

    [[principals]]
    name = "orders-app"
    public_keys = ["orders-app.key"]
    send = ["orders.*"]             # mailbox globs (fnmatchcase), as `mailboxes` patterns
    read = ["orders.*"]
    delete = []
    admin = false                   # status, events and `zrep admin` commands
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zrep.errors import ConfigError
from zrep.security.keys import KeyFileError, check_z85, load_public
from zrep.security.policy import Policy, Principal
from zrep.security.zap import DEFAULT_HANDSHAKE_MS

MODES = ("none", "curve")
SECURITY_KEYS = ("mode", "keys_dir", "handshake_timeout_ms")
PRINCIPAL_KEYS = ("name", "public_keys", "send", "read", "delete", "admin")


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    mode: str = "none"
    keys_dir: Path | None = field(default=None, compare=False)  # where key files are looked up, not what they say
    handshake_ms: int = DEFAULT_HANDSHAKE_MS
    node_keys: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)
    principals: tuple[Principal, ...] = ()
    key_files: Mapping[bytes, str] = field(default_factory=dict, compare=False)  # key -> where it came from

    @property
    def curve(self) -> bool:
        return self.mode == "curve"

    def policy(self) -> Policy:
        return Policy(self.node_keys, self.principals)


def parse_security(security: Mapping[str, Any] | None, principals: Sequence[Mapping[str, Any]] | None,
                   nodes: Sequence[Mapping[str, Any]], base: Path, file: str) -> SecuritySettings:
    """The settings of one cluster file; `base` is the file's folder."""
    sec = dict(security or {})
    _known(sec, SECURITY_KEYS, "security", file)
    mode = sec.get("mode", "none")
    if mode not in MODES:
        raise ConfigError(f"{file}: security.mode: {mode!r} is not one of {', '.join(MODES)}")
    handshake = sec.get("handshake_timeout_ms", DEFAULT_HANDSHAKE_MS)
    if type(handshake) is not int or not 100 <= handshake <= 60_000:
        raise ConfigError(f"{file}: security.handshake_timeout_ms: use an int from 100 to 60000 (ms)")
    keys_dir = (base / sec.get("keys_dir", "keys")).resolve()
    sources: dict[bytes, str] = {}

    def keys_of(raw: Any, where: str) -> tuple[bytes, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
            raise ConfigError(f"{file}: {where}.public_keys: a list of key file names or z85 keys")
        out = []
        for ref in raw:
            try:
                inline = len(ref) == 40 and not (keys_dir / ref).exists()
                key = check_z85(ref, where) if inline else load_public(keys_dir / ref)
            except KeyFileError as e:
                raise ConfigError(f"{file}: {where}.public_keys: {e}") from None
            sources[key] = f"{where} (inline key)" if inline else str(keys_dir / ref)
            out.append(key)
        return tuple(out)

    node_keys = {}
    for n in nodes:
        nid = n.get("id")
        keys = keys_of(n.get("public_keys"), f"node {nid}")
        if mode == "curve" and not keys:
            raise ConfigError(f"{file}: node {nid} has no public_keys, and security.mode is curve; "
                              f"make one with: zrep keys new node-{nid} --dir {keys_dir}")
        node_keys[nid] = keys
    parsed = []
    for i, p in enumerate(principals or ()):
        where = f"principals[{i}]"
        _known(p, PRINCIPAL_KEYS, where, file)
        name = p.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{file}: {where}.name: required, a string")
        grants = {g: _globs(p.get(g, []), f"{where}.{g}", file) for g in ("send", "read", "delete")}
        admin = p.get("admin", False)
        if type(admin) is not bool:
            raise ConfigError(f"{file}: {where}.admin: true or false")
        keys = keys_of(p.get("public_keys"), f"principal {name!r}")
        if not keys:
            raise ConfigError(f"{file}: principal {name!r} has no public_keys; make one with: zrep keys new {name}")
        parsed.append(Principal(name, keys, admin=admin, **grants))
    settings = SecuritySettings(mode, keys_dir, handshake, node_keys, tuple(parsed), sources)
    try:
        settings.policy()  # one key, one identity; principal names valid and unique
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    return settings


def _globs(raw: Any, where: str, file: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(g, str) and g for g in raw):
        raise ConfigError(f"{file}: {where}: a list of mailbox globs such as [\"orders.*\"]")
    return tuple(raw)


def _known(table: Mapping[str, Any], known: tuple[str, ...], where: str, file: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{file}: {where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
