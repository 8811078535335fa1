"""Offline recovery from a lost majority: `force_new_cluster` turns one stopped node's data
directory into a one-voter cluster (etcd's --force-new-cluster, hashicorp's RecoverCluster),
and `rank_of` says which survivor to pick.

Invariants:
  * The whole log is kept: zrep's commit record is a hint, so entries above it may be
    acknowledged writes (dropping them, as etcd does, could lose them).
  * The new configuration is appended as an entry of a new epoch, above every epoch this
    disk has seen or joined, naming only this node under its own incarnation, with a new
    cluster id; the hard state joins that epoch before the entry (both fsynced), so on
    start the node elects itself (a quorum of one) and its no-op commits the whole log.
  * What may be lost is said in words by the caller: writes acknowledged by a majority
    that did not include this node; never a write sent with --ack all (every voter had it).
Run only on a stopped node (the WAL's lock refuses a running one).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from zrep.core.membership import (
    CONFIG_MARK,
    Config,
    Member,
    decode_config,
    encode_config,
)
from zrep.core.messages import Entry, HardState
from zrep.errors import DecodeError
from zrep.storage.snapshot_files import SNAPSHOT_NAME
from zrep.storage.wal import Wal
from zrep.store.snapshot import decode_snapshot


@dataclass(frozen=True, slots=True)
class Rank:
    """A stopped node's log position: the survivor with the highest rank holds every entry
    any survivor holds (the election's freshness order)."""

    last_epoch: int
    last_index: int
    commit: int
    epoch: int


def rank_of(wal_path: str | os.PathLike[str]) -> Rank:
    wal, replay = Wal.open(wal_path)
    wal.close()
    last_epoch = replay.entries[-1].epoch if replay.entries else replay.prev_epoch
    last_index = replay.first_index - 1 + len(replay.entries)
    return Rank(last_epoch, last_index, replay.commit, replay.hard_state.epoch)


def latest_config(entries: list[Entry], base: Config | None) -> Config | None:
    """The last configuration entry among `entries`, else `base` (the snapshot's)."""
    for e in reversed(entries):
        if e.data[:1] == CONFIG_MARK:
            return decode_config(e.data)
    return base


def force_new_cluster(wal_path: str | os.PathLike[str], node_id: int, incarnation: int,
                      base: Config | None) -> tuple[Config, int]:
    """Append a one-voter configuration at a new epoch to the (stopped) node's WAL.
    Returns the new configuration and its index. `base`: the snapshot's configuration."""
    wal, replay = Wal.open(wal_path)
    with wal:
        last_epoch = replay.entries[-1].epoch if replay.entries else replay.prev_epoch
        last_index = replay.first_index - 1 + len(replay.entries)
        old = latest_config(replay.entries, base)
        me = old.member(node_id) if old is not None else None
        member = Member(node_id, incarnation, True, me.rpc if me else "", me.pub if me else "",
                        me.keys if me else ())
        config = Config(secrets.randbits(62) + 1, (member,))
        epoch = max(replay.hard_state.epoch, last_epoch) + 1
        wal.set_hard_state(HardState(epoch, node_id))
        wal.append_entries([Entry(epoch, last_index + 1, encode_config(config))])
        wal.sync()
    return config, last_index + 1


def snapshot_base(directory: Path) -> Config | None:
    """The configuration in a data directory's snapshot file, if any (the base below its log)."""
    path = directory / SNAPSHOT_NAME
    if not path.is_file():
        return None
    try:
        store = decode_snapshot(path.read_bytes()).store
    except DecodeError:
        return None
    return decode_config(store.config_entry) if store.config_entry else None
