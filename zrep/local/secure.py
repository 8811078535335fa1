"""`zrep cluster up --secure`: a copy of a local cluster file with CURVE on, and its keys.

Job: beside the cluster's data (DATA_DIR/keys), make a keypair for each node
and for the principal `local-admin` (every grant, admin) unless they exist,
and write DATA_DIR/cluster-secure.toml: the same nodes and data, with
`[security] mode = "curve"`. Run again, it reuses the keys, so the cluster
restarts with the same identities.
Invariants: never overwrites a key; a file that already has a [security]
table is used as it is (its own keys decide).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zrep.config import ClusterConfig, load_config, write_config
from zrep.security.keys import load_public, new_keypair
from zrep.security.policy import Principal
from zrep.security.settings import SecuritySettings

LOCAL_ADMIN = "local-admin"


def secure_copy(cfg: ClusterConfig, path: Path | None = None, keys_dir: Path | None = None) -> tuple[ClusterConfig, Path]:
    """The secure twin of `cfg`, written to `path` (default DATA_DIR/cluster-secure.toml) with its
    keys in `keys_dir` (default DATA_DIR/keys), and the client key that may do everything."""
    keys_dir = keys_dir if keys_dir is not None else cfg.data_dir / "keys"
    node_keys = {n.id: (_keypair(keys_dir, f"node-{n.id}"),) for n in cfg.nodes}
    admin = _keypair(keys_dir, LOCAL_ADMIN)
    security = SecuritySettings("curve", keys_dir, node_keys=node_keys,
                                principals=(Principal(LOCAL_ADMIN, (admin,), ("*",), ("*",), ("*",), True),))
    path = path if path is not None else cfg.data_dir / "cluster-secure.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_config(dataclasses.replace(cfg, security=security), path)
    return load_config(path), keys_dir / f"{LOCAL_ADMIN}.key_secret"


def _keypair(keys_dir: Path, name: str) -> bytes:
    public = keys_dir / f"{name}.key"
    if public.exists():
        return load_public(public)
    return new_keypair(name, keys_dir)[2].public
