"""What `zrep admin inspect DIR` reads from a stopped node's data directory (no click here).

Job: from DIR/wal (read with zrep.storage's readers, never locked or repaired)
and DIR/store.snap, say what a forced recovery needs to know: the rank
(last epoch and index: the bully election's freshness), the commit hint, the
epoch and vote, and the latest configuration (from the log, else the
snapshot), whether it is committed as far as this node knows.
Invariants: reads only; a node may run on DIR meanwhile, and the answer is
then a moment's picture. A data directory written before identities has no
incarnation of its own: it is reported as 0 (every member of a static
configuration is incarnation 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zrep.core.membership import Config, decode_config, is_config
from zrep.errors import CorruptLogError, DecodeError, StorageError
from zrep.storage.identity import read_identity
from zrep.storage.inspect import not_a_wal, verdict
from zrep.storage.wal import read_log, replay_buffer
from zrep.store.snapshot import decode_snapshot

WAL_NAME = "wal"  # as zrep.node.start: DATA_DIR/node-N/wal
SNAPSHOT_NAME = "store.snap"


class NotADataDir(Exception):
    """DIR holds no WAL a node could have written: the message says what was found."""


def config_row(config: Config) -> dict[str, Any]:
    return {"cluster_id": f"{config.cluster_id:x}",
            "members": [{"id": m.id, "incarnation": f"{m.incarnation:x}" if m.incarnation else "",
                         "role": "voter" if m.voter else "learner", "rpc": m.rpc, "pub": m.pub}
                        for m in config.members]}


def inspect_dir(directory: str | Path) -> dict[str, Any]:
    """The rank, commit and latest configuration found in a node's data directory."""
    root = Path(directory)
    wal = root / WAL_NAME
    if not wal.is_file():
        raise NotADataDir(f"{root} has no {WAL_NAME} file; a node's data directory is DATA_DIR/node-N")
    buf = read_log(wal)
    problem = not_a_wal(buf)
    if problem:
        raise NotADataDir(f"{wal} is not a zrep WAL ({problem})")
    end = verdict(buf, str(wal))
    out: dict[str, Any] = {"dir": str(root), "wal_end": end["end"], "wal_verdict": end["text"]}
    if end["end"] == "corrupt":
        return out  # the node refuses to start from it: `zrep log inspect` shows the records
    replay, _ = replay_buffer(buf, str(wal))
    last = replay.first_index - 1 + len(replay.entries)
    last_epoch = replay.entries[-1].epoch if replay.entries else replay.prev_epoch
    try:
        ident = read_identity(root)
    except StorageError as e:
        ident, out["identity_error"] = None, str(e)
    out.update(incarnation=ident.incarnation if ident else 0, mode=ident.mode if ident else "",
               first_index=replay.first_index, last_index=last, last_epoch=last_epoch,
               rank=[last_epoch, last], commit=replay.commit, epoch=replay.hard_state.epoch,
               vote=replay.hard_state.vote)
    config, source, index = None, "", 0
    for entry in reversed(replay.entries):
        if is_config(entry.data):
            try:
                config, source, index = decode_config(entry.data), "wal", entry.index
            except DecodeError as e:
                out["config_error"] = f"entry {entry.index}: {e}"
            break
    snap_path = root / SNAPSHOT_NAME
    if snap_path.is_file():
        try:
            snap = decode_snapshot(snap_path.read_bytes())
            out["snapshot_index"] = snap.index
            if config is None and snap.store.config_entry:
                config, source, index = decode_config(snap.store.config_entry), "snapshot", snap.index
        except (DecodeError, CorruptLogError, OSError) as e:
            out["snapshot_error"] = f"{snap_path}: {e}"
    out["config"] = config_row(config) if config is not None else None
    out["config_source"] = source or "none (the static configuration of the cluster file)"
    out["config_index"] = index
    out["config_committed"] = config is None or index <= max(replay.commit, out.get("snapshot_index", 0))
    return out


def inspect_lines(info: dict[str, Any]) -> list[str]:
    """The human-readable form of inspect_dir's answer."""
    lines = [f"data dir   {info['dir']}", f"wal        {info['wal_verdict']}"]
    if info["wal_end"] == "corrupt":
        return lines + ["the node refuses to start from this log; zrep log inspect DIR/wal shows every record"]
    lines += [f"rank       epoch {info['last_epoch']}, index {info['last_index']} (the freshest survivor ranks highest)",
              f"commit     {info['commit']} (a hint: entries above it may be committed too)",
              f"epoch      {info['epoch']}, vote {info['vote']}",
              (f"identity   incarnation {info['incarnation']:x}, started with --{info['mode']}" if info["incarnation"]
               else "identity   none (written before identities: upgraded in place on its next start)")]
    if "snapshot_index" in info:
        lines.append(f"snapshot   up to index {info['snapshot_index']}")
    for key in ("snapshot_error", "config_error", "identity_error"):
        if key in info:
            lines.append(f"warning    {info[key]}")
    config = info["config"]
    if config is None:
        lines.append(f"config     {info['config_source']}")
        return lines
    state = "committed" if info["config_committed"] else "not known to be committed"
    lines.append(f"config     cluster {config['cluster_id']}, from the {info['config_source']} at index "
                 f"{info['config_index']} ({state})")
    for m in config["members"]:
        lines.append(f"  node {m['id']:<4} {m['role']:<8} incarnation {m['incarnation'] or '-':<8} "
                     f"rpc {m['rpc'] or '-'}  pub {m['pub'] or '-'}")
    return lines
