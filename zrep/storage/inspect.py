"""What `zrep log inspect PATH [--json]` shows: a WAL record by record, and its verdict.

One line per record (offset, type, index, epoch, size, and for an entry its
command decoded: op, mailbox, sender, client, seq, a preview of the body), then
a last line: clean end, torn tail (what a start would cut) or corruption (the
node will refuse to start). Past a corrupt stretch the listing resumes at the
next valid record, so an operator sees what is left. The verdict is the one
`Wal.open` would reach (same replay, same rules), but the file is only read:
never locked, cut or flushed. Exit status: 0 clean or torn, 1 corrupt; a
file that cannot be a WAL at all (`not_a_wal`) is refused before any row.

Reads files only through zrep.storage.wal; the command itself is zrep.cli.log.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from zrep.core.messages import Entry, HardState
from zrep.errors import CorruptLogError, DecodeError
from zrep.storage.wal import replay_buffer
from zrep.storage.wal_format import (
    HEADER,
    HEADER_SIZE,
    MAX_BODY,
    Commit,
    Scan,
    SnapshotMark,
    StopKind,
    Truncate,
    find_valid_record,
    record_type,
    zeros_from,
)
from zrep.store.commands import DeleteCommand, decode_command

PREVIEW_BYTES = 24


def _preview(data: bytes) -> str:
    text = repr(data[:PREVIEW_BYTES])
    return text + ("..." if len(data) > PREVIEW_BYTES else "")


def _entry_row(r: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {"index": r.index, "epoch": r.epoch}
    if not r.data:
        return row | {"op": "noop", "detail": "no-op (a new leader's first entry)"}
    try:
        cmd = decode_command(r.data)
    except DecodeError:  # not a command (the store answers BAD_COMMAND to it): the raw bytes
        return row | {"detail": f"{len(r.data)}B {_preview(r.data)}"}
    who = {"client": cmd.client, "seq": cmd.seq}
    if isinstance(cmd, DeleteCommand):
        offsets = ",".join(map(str, cmd.offsets))
        return row | {"op": "delete", "mailbox": cmd.mailbox, "offsets": list(cmd.offsets), **who,
                      "detail": f"delete {cmd.mailbox} offsets {offsets} (client {cmd.client} seq {cmd.seq})"}
    body, encoding = _body(cmd.body)
    return row | {"op": "send", "mailbox": cmd.to, "sender": cmd.sender, **who, "body": body, "encoding": encoding,
                  "detail": f"send to {cmd.to} from {cmd.sender or '-'} (client {cmd.client} seq {cmd.seq}) "
                            f"{len(cmd.body)}B {_preview(cmd.body)}"}


def _body(data: bytes) -> tuple[str, str]:
    """The body for JSON: text when it is UTF-8, else base64 (as `zrep client read --json`)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def not_a_wal(buf: bytes) -> str:
    """Why `buf` cannot be a zrep WAL, or '' if it may be one (an empty file is an empty WAL).

    A WAL is records back to back from byte 0, then zeros. If no valid record is found
    anywhere, and the first 8 bytes are no record header whose record a crash
    could have cut short (a length of 2..MAX_BODY running past the end), the
    file is something else (README.md, a snapshot, a config file).
    """
    if zeros_from(buf, 0) or find_valid_record(buf, 0) is not None:
        return ""  # (all zeros: a new WAL's preallocated space)
    if len(buf) >= HEADER_SIZE:
        length = HEADER.unpack_from(buf, 0)[0]
        if 2 <= length <= MAX_BODY and HEADER_SIZE + length > len(buf):
            return ""  # a first record cut short by a crash: a torn WAL
    return f"no valid WAL record anywhere in its {len(buf)} bytes"


def _truncate_row(r: Truncate) -> dict[str, Any]:
    return {"index": r.from_index, "epoch": None, "detail": f"drop entries >= {r.from_index}"}


def _hard_state_row(r: HardState) -> dict[str, Any]:
    return {"index": None, "epoch": r.epoch, "detail": f"vote={r.vote}"}


def _commit_row(r: Commit) -> dict[str, Any]:
    return {"index": r.index, "epoch": None, "detail": "commit hint"}


def _snapshot_row(r: SnapshotMark) -> dict[str, Any]:
    return {"index": r.first_index, "epoch": r.epoch_of_prev, "detail": "log starts here (epoch is the previous entry's)"}


# index, epoch and a detail string for each record type.
_ROW: dict[type, Callable[[Any], dict[str, Any]]] = {
    Entry: _entry_row,
    Truncate: _truncate_row,
    HardState: _hard_state_row,
    Commit: _commit_row,
    SnapshotMark: _snapshot_row,
}


def rows(buf: bytes) -> Iterator[dict[str, Any]]:
    """Every record, plus one row per bad stretch skipped to reach the next valid record."""
    start = 0
    while True:
        scan = Scan(buf, start)
        for offset, record in scan:
            size = HEADER_SIZE + HEADER.unpack_from(buf, offset)[0]
            row = {"offset": offset, "type": record_type(record).name, "size": size}
            row.update(_ROW[type(record)](record))
            yield row
        stop = scan.stop
        if stop is None or stop.kind is not StopKind.CORRUPT or stop.next_valid is None:
            return
        yield {"offset": stop.offset, "type": "BAD", "size": stop.next_valid - stop.offset, "detail": stop.reason}
        start = stop.next_valid


def verdict(buf: bytes, path: str) -> dict[str, Any]:
    try:
        replay, keep = replay_buffer(buf, path)
    except CorruptLogError as exc:
        return {
            "end": "corrupt",
            "offset": exc.offset,
            "reason": exc.reason,
            "text": f"corruption at byte {exc.offset}: {exc.reason} (node will refuse to start)",
        }
    if replay.torn_bytes:
        return {
            "end": "torn",
            "offset": keep,
            "torn_bytes": replay.torn_bytes,
            "text": f"torn tail at byte {keep}: {replay.torn_bytes} bytes (would be cut on start)",
        }
    last = replay.first_index - 1 + len(replay.entries)
    return {
        "end": "clean",
        "offset": keep,
        "text": (
            f"clean end at byte {keep}: entries {replay.first_index}..{last}, commit {replay.commit}, "
            f"epoch {replay.hard_state.epoch}, vote {replay.hard_state.vote}"
            + (f"; compacted: entries before {replay.first_index} live only in the node's snapshot "
               "(store.snap), which a start requires" if replay.first_index > 1 else "")
        ),
    }


def text_row(row: dict[str, Any]) -> str:
    def num(v: int | None) -> str:
        return "-" if v is None else str(v)

    return (
        f"{row['offset']:>10}  {row['type']:<13} index={num(row.get('index')):<8} "
        f"epoch={num(row.get('epoch')):<6} size={row['size']:<7} {row['detail']}"
    )
