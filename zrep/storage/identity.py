"""A data directory's identity: the incarnation that dies with the disk (issue 15).

Job: when a node creates its data directory it writes `identity` (JSON:
{"version", "incarnation", "mode"}) before anything else; every later start
reads it back. `incarnation` is a random nonzero 62-bit number (secrets), so a
wiped or replaced disk comes back as a different voter key (id, incarnation)
and can never vote as the disk it replaced. `mode` is how the directory was
started: "init" (a founding member: the TOML's nodes form the first,
provisional configuration) or "join" (an observer that waits to be added).

Invariants:
  * Written once, atomically and durably: a temporary file, fsynced, renamed,
    then the directory fsynced. A crash leaves either no identity or a whole one.
  * Never taken from the cluster file, never rewritten: copying a data
    directory copies its incarnation, which the docs forbid.
  * A file that exists but cannot be read is a StorageError, never silently
    replaced by a new identity (that would turn a voter into a stranger).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from zrep.errors import StorageError
from zrep.storage.wal import _ensure_dir, sync_data, sync_dir

IDENTITY_NAME = "identity"
IDENTITY_VERSION = 1
MODES = ("init", "join")
INCARNATION_BITS = 62  # fits a msgpack int and a JSON number everywhere


@dataclass(frozen=True, slots=True)
class Identity:
    incarnation: int
    mode: str  # "init" or "join"


def new_incarnation() -> int:
    """A random nonzero incarnation (0 means "any" in a provisional configuration)."""
    while True:
        inc = secrets.randbits(INCARNATION_BITS)
        if inc:
            return inc


def identity_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / IDENTITY_NAME


def read_identity(directory: str | os.PathLike[str]) -> Identity | None:
    """The directory's identity; None if it has none (fresh, or written before identities)."""
    path = identity_path(directory)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e}") from None
    try:
        doc = json.loads(raw)
        inc, mode = doc["incarnation"], doc["mode"]
        if type(inc) is not int or not 0 < inc < 1 << INCARNATION_BITS or mode not in MODES:
            raise ValueError(f"incarnation {inc!r}, mode {mode!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{path} is damaged ({e}); do not edit it: if this disk's data is lost, wipe the "
                           "data directory and start the node with --join") from None
    return Identity(inc, mode)


def create_identity(directory: str | os.PathLike[str], mode: str) -> Identity:
    """Give a directory that has none its identity (creating the directory if needed), durably."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    ident = Identity(new_incarnation(), mode)
    path = identity_path(directory)
    tmp = path.with_name(f".{IDENTITY_NAME}.tmp-{os.getpid()}")
    data = json.dumps({"version": IDENTITY_VERSION, "incarnation": ident.incarnation, "mode": mode}).encode()
    try:
        _ensure_dir(str(path.parent))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            sync_data(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_dir(str(path.parent))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e}") from None
    return ident


def is_fresh(directory: str | os.PathLike[str]) -> bool:
    """Nothing a node wrote is there: no identity, no WAL, no snapshot (a start needs --init or --join)."""
    d = Path(directory)
    return not any((d / name).exists() for name in (IDENTITY_NAME, "wal", "store.snap"))
