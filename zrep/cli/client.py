"""`zrep client ...`: send, read, delete, mailboxes, watch and status against a running cluster.

The Client is made on first use, so `--help` and bad arguments never load the config.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import click

from zrep.cli import (
    EXIT_CODES_HELP,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_UNAVAILABLE,
    CliError,
    _echo_json,
    config_option,
    json_option,
)
from zrep.client import (
    Client,
    Message,
    NodeStatus,
    OutcomeUnknown,
    ReadResult,
    Receipt,
    Unavailable,
)
from zrep.config import ClusterConfig, load_config
from zrep.wire.client_messages import MAX_READ_LIMIT

# ---------------------------------------------------------------- zrep client


@click.group(epilog=EXIT_CODES_HELP)
@config_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="SECONDS",
              help="Seconds a command may take, retries through failovers included.")
@click.pass_context
def client(ctx: click.Context, config_path: str, timeout_s: float) -> None:
    """Talk to a running cluster: send, read, delete, list, watch, status."""
    ctx.obj = _ClientFactory(config_path, timeout_s)
    ctx.call_on_close(ctx.obj.close)


class _ClientFactory:
    """Makes the Client on first use, so `--help` and bad arguments never load the config."""

    def __init__(self, config_path: str, timeout_s: float) -> None:
        self.config_path = config_path
        self.timeout_s = timeout_s
        self._client: Client | None = None

    def config(self) -> ClusterConfig:
        return load_config(self.config_path)  # ConfigError: exit 2 with the file, key and fix

    def get(self) -> Client:
        if self._client is None:
            self._client = Client(self.config(), timeout_s=self.timeout_s)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _client_of(ctx: click.Context) -> Client:
    return ctx.find_object(_ClientFactory).get()


def _read_text(text: str) -> bytes:
    if text == "-":
        return sys.stdin.buffer.read()  # bytes as they are: a body need not be text
    return text.encode("utf-8")


@client.command()
@click.option("--to", "mailbox", required=True, help="Mailbox to append to.")
@click.option("--from", "sender", default="", help="Sender name stored with the message.")
@click.option("--ack", type=click.Choice(["majority", "all"]), default="majority", show_default=True,
              help="Wait until a majority, or every member, has it on disk.")
@click.option("--lines", is_flag=True, help="With TEXT '-': each line of stdin is a message of its own, "
              "all sent pipelined in batches.")
@click.argument("text")
@json_option
@click.pass_context
def send(ctx: click.Context, mailbox: str, sender: str, ack: str, lines: bool, text: str, as_json: bool) -> None:
    """Send TEXT (or stdin, with -) to a mailbox; print where it landed."""
    if lines:
        _send_lines(ctx, mailbox, sender, ack, text, as_json)
        return
    body = _read_text(text)
    with _one_shot_write(mailbox):
        receipt = _client_of(ctx).send(mailbox, body, sender=sender, ack=ack)
    if as_json:
        _echo_json(asdict(receipt))
        return
    for line in receipt_lines(receipt, len(_client_of(ctx).config.nodes)):
        click.echo(line)


def _send_lines(ctx: click.Context, mailbox: str, sender: str, ack: str, text: str, as_json: bool) -> None:
    if text != "-":
        raise click.UsageError("--lines sends the lines of stdin: give TEXT as -")
    bodies = sys.stdin.buffer.read().splitlines()
    with _one_shot_write(mailbox):
        receipts = _client_of(ctx).send_many(mailbox, bodies, sender=sender, ack=ack)
    if as_json:
        _echo_json([asdict(r) for r in receipts])
    elif receipts:
        offsets = [r.offset for r in receipts]
        click.echo(f"sent {len(receipts)} messages to {mailbox} at offsets {min(offsets)}..{max(offsets)} "
                   f"(log index {min(r.index for r in receipts)}..{max(r.index for r in receipts)})")
    else:
        click.echo("nothing to send: stdin was empty")


def _first_clause(error: Exception) -> str:
    return str(error).split(";")[0]


@contextmanager
def _one_shot_write(mailbox: str) -> Iterator[None]:
    """OutcomeUnknown with advice for a command: the library's (call again on the same
    Client) does not apply, since the next command is a new client."""
    try:
        yield
    except OutcomeUnknown as e:
        raise CliError(f"{_first_clause(e)}; the write may or may not have been applied: check with "
                       f"'zrep client read {mailbox}' before trying again", EXIT_OUTCOME_UNKNOWN) from None


def receipt_lines(r: Receipt, members: int) -> list[str]:
    lines = [f"sent to {r.mailbox} at offset {r.offset} (log index {r.index}, epoch {r.epoch}, via node {r.node})"]
    if r.durable_on:
        nodes = ", ".join(map(str, r.durable_on))
        whole = " (all)" if len(r.durable_on) == members else f" ({len(r.durable_on)} of {members})"
        lines.append(f"on disk on nodes {nodes}{whole}")
    else:  # a follower relays the answer without the leader's list of replicas
        lines.append(f"on disk on a majority (node {r.node} answered without listing which nodes)")
    if r.all_durable is False:
        lines.append("not yet on every node's disk: the ack=all wait timed out (the write is committed)")
    return lines


def _message_json(m: Message) -> dict[str, Any]:
    try:
        body, encoding = m.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(m.body).decode("ascii"), "base64"
    return {"offset": m.offset, "sender": m.sender, "index": m.index, "body": body, "encoding": encoding}


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    """Control characters as escapes, so one message is one line."""
    return _CONTROL.sub(lambda c: repr(c.group())[1:-1], text)


def message_line(m: Message) -> str:
    body = _printable(m.body.decode("utf-8", errors="backslashreplace"))
    return f"{m.offset}\t{_printable(m.sender) or '-'}\t{body}"


_after_option = click.option("--after", type=click.IntRange(min=-1), default=-1, show_default=True,
                             help="Only messages with a larger offset (-1: from the start).")


@client.command()
@click.argument("mailbox")
@_after_option
@click.option("--limit", type=click.IntRange(1, MAX_READ_LIMIT), default=100, show_default=True,
              help="At most this many messages.")
@click.option("--stale", is_flag=True, help="Read any node's local copy (faster, may lag; says how much).")
@json_option
@click.pass_context
def read(ctx: click.Context, mailbox: str, after: int, limit: int, stale: bool, as_json: bool) -> None:
    """Print the messages of MAILBOX (offset, sender, body), oldest first."""
    result = _client_of(ctx).read(mailbox, after=after, limit=limit, stale=stale)
    if as_json:
        _echo_json(read_json(mailbox, result))
        return
    for m in result.messages:
        click.echo(message_line(m))
    if stale:
        click.echo(f"(stale read from node {result.node}, applied up to log index {result.applied})", err=True)


def read_json(mailbox: str, result: ReadResult) -> dict[str, Any]:
    return {"mailbox": mailbox, "messages": [_message_json(m) for m in result.messages],
            "applied": result.applied, "node": result.node}


@client.command()
@click.argument("mailbox")
@click.argument("offsets", nargs=-1, required=True, type=click.IntRange(min=0))
@json_option
@click.pass_context
def delete(ctx: click.Context, mailbox: str, offsets: tuple[int, ...], as_json: bool) -> None:
    """Delete messages of MAILBOX by offset: all of them, or none if one is missing."""
    if len(set(offsets)) != len(offsets):
        raise click.BadParameter("each offset may appear once", param_hint="OFFSETS")
    with _one_shot_write(mailbox):
        deleted = _client_of(ctx).delete(mailbox, list(offsets))
    if as_json:
        _echo_json({"mailbox": mailbox, "deleted": deleted})
    else:
        click.echo(f"deleted from {mailbox}: offsets {', '.join(map(str, deleted))}")


@client.command()
@click.argument("pattern", default="*")
@json_option
@click.pass_context
def mailboxes(ctx: click.Context, pattern: str, as_json: bool) -> None:
    """List mailboxes whose name matches PATTERN (a glob), with their message counts."""
    boxes = _client_of(ctx).mailboxes(pattern)
    if as_json:
        _echo_json([{"name": b.name, "count": b.count} for b in boxes])
        return
    for line in _table(["mailbox", "messages"], [[b.name, b.count] for b in boxes]):
        click.echo(line)


@client.command()
@click.argument("mailbox")
@_after_option
@click.option("--stale", is_flag=True, help="Poll any node's local copy instead of the leader.")
@json_option
@click.pass_context
def watch(ctx: click.Context, mailbox: str, after: int, stale: bool, as_json: bool) -> None:
    """Print new messages of MAILBOX as they are committed, until Ctrl-C."""
    last = after
    try:
        for m in _client_of(ctx).watch(mailbox, after=after, stale=stale):
            click.echo(json.dumps(_message_json(m), ensure_ascii=False) if as_json else message_line(m))
            last = m.offset
    except KeyboardInterrupt:
        return  # the way to stop a watch: exit 0
    except Unavailable as e:
        raise CliError(f"{_first_clause(e)}; resume with 'zrep client watch {mailbox} --after {last}'",
                       EXIT_UNAVAILABLE) from None


STATUS_COLUMNS = ["id", "address", "state", "role", "epoch", "leader", "last index", "commit", "applied",
                  "last heard"]


def status_lines(rows: list[NodeStatus]) -> list[str]:
    """The status table, one row per node."""
    return _table(STATUS_COLUMNS, [_status_row(r) for r in rows])


def _status_row(r: NodeStatus) -> list[Any]:
    heard = "-" if r.last_heard_ms is None else _ago(r.last_heard_ms)
    if not r.up:
        return [r.id, r.address, "down", "-", "-", "-", "-", "-", "-", heard]
    leader = r.leader if r.leader else "none"
    return [r.id, r.address, "up", r.role or "?", r.epoch, leader, r.last_index, r.commit, r.applied, heard]


def _ago(ms: int) -> str:
    return f"{ms} ms ago" if ms < 10_000 else f"{ms / 1000:.0f} s ago"


def status_json(r: NodeStatus) -> dict[str, Any]:
    keys = ("id", "address", "up", "role", "epoch", "leader", "last_index", "commit", "applied", "last_heard_ms",
            "error")
    out = {k: getattr(r, k) for k in keys}
    out["pid"] = r.raw.get("pid")  # the node's process id on its own machine
    # Where its log starts now, and its snapshots: taken, compactions, shipped or received.
    for k in ("log_first_index", "snapshot_index", "compactions", "snapshot_shipping"):
        out[k] = r.raw.get(k)
    return out


@client.command()
@click.option("--wait", "wait_s", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              metavar="SECONDS",
              help="Seconds to wait for each node's answer before calling it down.")
@json_option
@click.pass_context
def status(ctx: click.Context, wait_s: float, as_json: bool) -> None:
    """Ask every node at once; one row per node ('last heard': by its peers)."""
    rows = _client_of(ctx).status(timeout_s=wait_s)
    if as_json:
        _echo_json([status_json(r) for r in rows])
    else:
        for line in status_lines(rows):
            click.echo(line)
    if not any(r.up for r in rows):
        raise CliError("no node answered; is the cluster running? start it with 'zrep cluster up'",
                       EXIT_UNAVAILABLE)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
