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
    CONFIG_ENV,
    CONFIG_KEY,
    DEFAULT_CONFIG,
    EXIT_CODES_HELP,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_UNAVAILABLE,
    KEY_ENV,
    KEY_KEY,
    TIMEOUT_ENV,
    TIMEOUT_KEY,
    CliError,
    _echo_json,
    json_option,
    late_options,
    option_value,
    verbose_option,
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
from zrep.client._calls import mailbox_name_problem
from zrep.config import ClusterConfig, load_config
from zrep.exit_codes import EXIT_ACK_NOT_MET
from zrep.wire.client_messages import MAX_READ_LIMIT

# ---------------------------------------------------------------- zrep client


@click.group(epilog=EXIT_CODES_HELP)
@click.option("--config", "config_path", envvar=CONFIG_ENV, default=DEFAULT_CONFIG, show_default=True,
              show_envvar=True, metavar="PATH", help="Cluster file (TOML).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0,
              envvar=TIMEOUT_ENV, show_envvar=True, show_default=True, metavar="SECONDS",
              help="Seconds a command may take, retries through failovers included.")
@click.option("--key", "key_path", envvar=KEY_ENV, default=None, show_envvar=True, metavar="FILE",
              help="This client's secret key (.key_secret), for a cluster with security.mode = curve.")
@verbose_option
@click.pass_context
def client(ctx: click.Context, config_path: str, timeout_s: float, key_path: str | None) -> None:
    """Talk to a running cluster: send, read, delete, list, watch, status.

    --config, --timeout and -v work before or after the command's name
    (`zrep client status --config F`); the environment gives their defaults
    (ZREP_CONFIG, ZREP_TIMEOUT).
    """
    ctx.obj = _ClientFactory(ctx, config_path, timeout_s, key_path)
    ctx.call_on_close(ctx.obj.close)


class _ClientFactory:
    """Makes the Client on first use, so `--help` and bad arguments never load the config.
    A --config or --timeout given after the command's name wins (zrep.cli.late_options)."""

    def __init__(self, ctx: click.Context, config_path: str, timeout_s: float, key_path: str | None = None) -> None:
        self._ctx = ctx
        self._key_path = key_path
        self._config_path = config_path
        self._timeout_s = timeout_s
        self._client: Client | None = None

    @property
    def config_path(self) -> str:
        return str(option_value(self._ctx, CONFIG_KEY, self._config_path))

    @property
    def timeout_s(self) -> float:
        return float(option_value(self._ctx, TIMEOUT_KEY, self._timeout_s))

    def config(self) -> ClusterConfig:
        return load_config(self.config_path)  # ConfigError: exit 2 with the file, key and fix

    def get(self) -> Client:
        if self._client is None:
            key = option_value(self._ctx, KEY_KEY, self._key_path)
            self._client = Client(self.config(), timeout_s=self.timeout_s, key=key)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _client_of(ctx: click.Context) -> Client:
    return ctx.find_object(_ClientFactory).get()


def _read_text(text: str) -> bytes:
    """TEXT, or stdin for '-' without one trailing newline (as `$(...)` and `git commit -F -` do):
    `echo hi | zrep client send --to a -` stores "hi". Empty stdin is refused."""
    if text != "-":
        return text.encode("utf-8")
    data = sys.stdin.buffer.read()  # bytes as they are: a body need not be text
    if not data:
        raise click.UsageError("stdin was empty: nothing to send (an empty message needs TEXT '')")
    return data[:-1] if data.endswith(b"\n") else data


def _mailbox_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        problem = mailbox_name_problem(value)
        if problem:
            raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


@client.command(epilog="With TEXT '-' the body is stdin without one trailing newline; empty stdin is refused.")
@click.option("--to", "mailbox", required=True, callback=_mailbox_name, help="Mailbox to append to.")
@click.option("--from", "sender", default="", help="Sender name stored with the message.")
@click.option("--ack", type=click.Choice(["majority", "all"]), default="majority", show_default=True,
              help="Wait until a majority, or every member, has it on disk (not met in time: exit 6).")
@click.option("--lines", is_flag=True, help="With TEXT '-': each line of stdin is a message of its own, "
              "all sent pipelined in batches.")
@click.argument("text")
@json_option
@late_options
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
    else:
        for line in receipt_lines(receipt, len(_client_of(ctx).config.nodes)):
            click.echo(line)
    _check_ack_all([receipt])


def _check_ack_all(receipts: list[Receipt]) -> None:
    """--ack all asked for every member's disk: say so, with its own exit code, when not met."""
    short = [r for r in receipts if r.all_durable is False]
    if short:
        where = f"offset {short[0].offset}" if len(receipts) == 1 else f"{len(short)} of {len(receipts)} messages"
        raise CliError(f"--ack all not met for {where}: the write is committed on a majority but not every member "
                       "had it on disk in time; check 'zrep client status' for a node down or behind",
                       EXIT_ACK_NOT_MET)


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
    _check_ack_all(receipts)


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


@client.command(epilog="A full page ends with a line on stderr (JSON: \"more\": true, \"next_after\") saying "
                      "how to read on; --all reads every page. An unknown mailbox prints nothing and says so on "
                      "stderr (JSON: \"exists\": false; null for a --stale read, which does not ask).")
@click.argument("mailbox", callback=_mailbox_name)
@_after_option
@click.option("--limit", type=click.IntRange(1, MAX_READ_LIMIT), default=100, show_default=True,
              help="At most this many messages (a page; with --all, per read).")
@click.option("--all", "read_all", is_flag=True, help="Read every page to the end.")
@click.option("--stale", is_flag=True, help="Read any node's local copy (faster, may lag; says how much).")
@json_option
@late_options
@click.pass_context
def read(ctx: click.Context, mailbox: str, after: int, limit: int, read_all: bool, stale: bool,
         as_json: bool) -> None:
    """Print the messages of MAILBOX (offset, sender, body), oldest first."""
    c = _client_of(ctx)
    messages: list[Message] = []
    while True:
        page, more = read_page(c, mailbox, after, limit, stale)
        if not as_json:
            for m in page.messages:
                click.echo(message_line(m))
        messages += page.messages
        after = page.messages[-1].offset if page.messages else after
        if not (read_all and more):
            break
    # `mailboxes` has no stale variant: a stale read (maybe from a node without quorum) does not ask
    exists: bool | None = True if messages else None if stale else mailbox_exists(c, mailbox)
    if as_json:
        out = read_json(mailbox, ReadResult(messages, page.applied, page.node))
        out.update(more=more, next_after=after, exists=exists)
        _echo_json(out)
        return
    if stale:
        click.echo(f"(stale read from node {page.node}, applied up to log index {page.applied})", err=True)
    if more:
        click.echo(f"(more after offset {after}: 'zrep client read {mailbox} --after {after}', or --all)", err=True)
    if exists is False:
        click.echo(f"(no mailbox named {mailbox!r}: nothing was ever sent to it)", err=True)


def read_page(c: Client, mailbox: str, after: int, limit: int, stale: bool) -> tuple[ReadResult, bool]:
    """One page and whether more follows it: one message more is asked for, to know for sure
    (at the largest limit a full page counts as 'more')."""
    if limit >= MAX_READ_LIMIT:
        page = c.read(mailbox, after=after, limit=limit, stale=stale)
        return page, len(page.messages) == limit
    page = c.read(mailbox, after=after, limit=limit + 1, stale=stale)
    more = len(page.messages) > limit
    return ReadResult(page.messages[:limit], page.applied, page.node), more


def mailbox_exists(c: Client, mailbox: str) -> bool:
    """Ever sent to (a mailbox whose messages are all deleted still exists). Names never hold
    glob metacharacters, so the name as a pattern matches itself only."""
    return any(b.name == mailbox for b in c.mailboxes(mailbox))


def read_json(mailbox: str, result: ReadResult) -> dict[str, Any]:
    return {"mailbox": mailbox, "messages": [_message_json(m) for m in result.messages],
            "applied": result.applied, "node": result.node}


@client.command()
@click.argument("mailbox", callback=_mailbox_name)
@click.argument("offsets", nargs=-1, required=True, type=click.IntRange(min=0))
@json_option
@late_options
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
@late_options
@click.pass_context
def mailboxes(ctx: click.Context, pattern: str, as_json: bool) -> None:
    """List mailboxes whose name matches PATTERN (a glob), with their message counts."""
    boxes = _client_of(ctx).mailboxes(pattern)
    if as_json:
        _echo_json([{"name": b.name, "count": b.count, "bytes": b.bytes} for b in boxes])
        return
    for line in _table(["mailbox", "messages", "bytes"], [[b.name, b.count, "-" if b.bytes is None else b.bytes]
                                                          for b in boxes]):
        click.echo(line)


@client.command()
@click.argument("mailbox", callback=_mailbox_name)
@_after_option
@click.option("--stale", is_flag=True, help="Poll any node's local copy instead of the leader.")
@json_option
@late_options
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
@late_options
@click.pass_context
def status(ctx: click.Context, wait_s: float, as_json: bool) -> None:
    """Ask every node at once; one row per node ('last heard': by its peers).
    Exits 3 when no node answers, or none of those that do is the leader."""
    rows = _client_of(ctx).status(timeout_s=wait_s)
    if as_json:
        _echo_json([status_json(r) for r in rows])
    else:
        for line in status_lines(rows):
            click.echo(line)
    if not any(r.up for r in rows):
        raise CliError("no node answered; is the cluster running? start it with 'zrep cluster up'",
                       EXIT_UNAVAILABLE)
    if not any(r.up and r.role == "leader" for r in rows):  # as `etcdctl endpoint health`: not healthy
        up = sum(r.up for r in rows)
        raise CliError(f"no leader: {up} of {len(rows)} nodes answer and a leader needs {len(rows) // 2 + 1}; "
                       "start the nodes that are down (or wait out an election) and ask again", EXIT_UNAVAILABLE)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
