"""`zrep`: the command line (click). Entry point `main` (setup.cfg console script).

Commands: `node`, `client {send,read,delete,mailboxes,watch,status}`,
`cluster up` (zrep.local.up), `log inspect` (zrep.storage.inspect), `bench`
(the whole benchmark, zrep.bench.suite) with its parts `bench wal` (zrep.bench.wal),
`bench floor` (zrep.bench.floor) and `bench failover` (zrep.bench.failover), `sim` (zrep.sim), `chaos`
(zrep.chaos.command), `verify` (zrep.chaos.verify).

Invariants
- Output is human-readable by default; `--json` prints data (one JSON value,
  or one per line for `watch`) and nothing else on stdout.
- Every failure is ONE line on stderr saying what happened and what to do,
  and an exit code from the table below (`--verbose` adds the traceback).
- Heavy or optional modules (the node, the simulator, the benchmark) are
  imported inside their command, so `zrep --help` is quick and the client
  commands never load the node.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, TypeVar

import click

from zrep.bench.options import PHASES, default_help, options
from zrep.client import (
    Client,
    Message,
    NodeStatus,
    OutcomeUnknown,
    ReadResult,
    Receipt,
    Rejected,
    Unavailable,
)
from zrep.config import ClusterConfig, load_config
from zrep.errors import ConfigError, ZrepError
from zrep.wire.client_messages import MAX_READ_LIMIT

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug or an unexpected failure
EXIT_USAGE = 2  # bad input or usage (click's own code)
EXIT_UNAVAILABLE = 3  # no leader / no quorum answered in time
EXIT_OUTCOME_UNKNOWN = 4  # a write timed out and may have been applied
EXIT_REJECTED = 5  # the cluster refused the request

EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    f"  {EXIT_OK}  ok\n"
    f"  {EXIT_INTERNAL}  internal error (rerun with --verbose for the traceback)\n"
    f"  {EXIT_USAGE}  bad input or usage\n"
    f"  {EXIT_UNAVAILABLE}  unavailable: no leader or quorum answered; retry later\n"
    f"  {EXIT_OUTCOME_UNKNOWN}  timed out: the write may or may not have been applied\n"
    f"  {EXIT_REJECTED}  rejected by the cluster (bad mailbox, too large, no such message)"
)
DEFAULT_CONFIG = "config/cluster.toml"
CONFIG_ENV = "ZREP_CONFIG"

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------- errors -> exit codes


class CliError(click.ClickException):
    """One line on stderr and a chosen exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _exit_code_of(error: ZrepError) -> int:
    if isinstance(error, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, OutcomeUnknown):
        return EXIT_OUTCOME_UNKNOWN
    if isinstance(error, Rejected):
        return EXIT_REJECTED
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    return EXIT_INTERNAL


class ZrepGroup(click.Group):
    """The root group: turns every uncaught error into one line and an exit code.

    Commands in LAZY are imported only when used (or listed by --help).
    """

    LAZY = {"log": "zrep.storage.inspect:log", "sim": "zrep.sim.__main__:main", "chaos": "zrep.chaos.command:chaos",
            "verify": "zrep.chaos.verify:verify"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self.LAZY.get(name)
        if target is None:
            return super().get_command(ctx, name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ZrepError as e:
            _show_traceback(ctx)
            raise CliError(str(e), _exit_code_of(e)) from None
        except Exception as e:
            _show_traceback(ctx)
            raise CliError(
                f"internal error: {type(e).__name__}: {e}; rerun with --verbose and report it", EXIT_INTERNAL
            ) from None


def _show_traceback(ctx: click.Context) -> None:
    if ctx.find_root().params.get("verbose"):
        traceback.print_exc()


# ---------------------------------------------------------------- shared options


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        show_envvar=True,
        metavar="PATH",
        help="Cluster file (TOML).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


# ---------------------------------------------------------------- the root group


@click.group(cls=ZrepGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="On an error, print the traceback too.")
@click.version_option(package_name="zrep", prog_name="zrep")
def main(verbose: bool) -> None:
    """zrep: a replicated, persistent message service."""


@main.command(epilog="Exits with the node's own code: 0 stopped by SIGTERM/SIGINT, 2 bad config or id, "
                     "3 corrupt log, 4 storage failure, 5 broken invariant, 6 port in use.")
@click.option("--id", "node_id", type=click.IntRange(min=1), required=True, help="This node's id in the cluster file.")
@config_option
@click.option("--unsafe-bug", "bugs", multiple=True, hidden=True, help="Plant a bug (tests only).")
def node(node_id: int, config_path: str, bugs: tuple[str, ...]) -> None:
    """Run one node of the cluster in the foreground until SIGTERM or Ctrl-C."""
    from zrep.node.loop import (
        run_node,  # lazily: the node loads the core, the WAL and the transport
    )

    sys.exit(run_node(config_path, node_id, bugs=frozenset(bugs)))


# ---------------------------------------------------------------- zrep client


@main.group(epilog=EXIT_CODES_HELP)
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


# ---------------------------------------------------------------- zrep cluster


@main.group()
def cluster() -> None:
    """Run a whole cluster on this machine."""


@cluster.command(epilog="Exit code 0 when stopped by Ctrl-C/SIGTERM and every node stopped cleanly; "
                        "1 if a node died or had to be killed; 2 for a bad config.")
@config_option
def up(config_path: str) -> None:
    """Start every node of the cluster file, print the status once there is a leader,
    and stop them all on Ctrl-C or SIGTERM. Node log lines are prefixed with their id."""
    from zrep.local.up import run_cluster

    cfg = load_config(config_path)
    sys.exit(run_cluster(cfg, show_status=lambda rows: [click.echo(line) for line in status_lines(rows)]))


# ---------------------------------------------------------------- tools


def _bench_setting(name: str, kind: click.ParamType, text: str, flag: str | None = None) -> Callable[[F], F]:
    """An option for one field of zrep.bench.options.Options; not given (None) leaves it to --quick or the default."""
    return click.option(flag or "--" + name.replace("_", "-"), name, type=kind, default=None,
                        help=f"{text}  {default_help(name)}")


@main.group(invoke_without_command=True, epilog="Without a subcommand: the whole benchmark (a few minutes at "
            "full size; --quick for a look in seconds). Exit code 1 if it could not measure.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="Run a copy of this cluster file (its data in the run's own directory) instead of a new "
                   "local 3-node cluster with the default timeouts.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Run the cluster here and keep it (node logs) afterwards; default: a temporary directory.")
@click.option("--quick", is_flag=True, help="Small counts: seconds, not minutes; for tests and quick looks.")
@click.option("--only", type=click.Choice(PHASES), multiple=True, help="Run only this phase (repeatable).")
@click.option("--skip", type=click.Choice(PHASES), multiple=True, help="Skip this phase (repeatable).")
@_bench_setting("seconds", click.FloatRange(min=0, min_open=True), "Seconds per send/read level at most")
@_bench_setting("count", click.IntRange(min=1), "Requests per send/read level at most")
@_bench_setting("warmup", click.IntRange(min=0), "Requests per level before the measured window")
@_bench_setting("workers", click.IntRange(1, 64), "Worker processes per level with more than 1 request in flight")
@_bench_setting("catchup_messages", click.IntRange(min=1), "Messages written while a follower is down")
@_bench_setting("messages", click.IntRange(min=1), "Messages stored before memory is read")
@_bench_setting("kills", click.IntRange(1, 100), "Leader kills in the failover phase")
@_bench_setting("max_error_fraction", click.FloatRange(0, 1), "Fraction of non-OK answers per level that fails "
                "the run", flag="--max-errors")
@click.option("--history", "history", type=click.Path(dir_okay=False), default=None,
              help="Append the result as one JSON line here  [default: bench/history.jsonl of the repo]")
@click.option("--no-history", is_flag=True, help="Do not append to the history (quick looks, tests).")
@click.option("--no-batch", "batch", flag_value=False, default=None,
              help="Load workers send one frame per request instead of ClientBatch frames (the unbatched figure).")
@json_option
@click.pass_context
def bench(ctx: click.Context, quick: bool, only: tuple[str, ...], skip: tuple[str, ...], history: str | None,
          no_history: bool, as_json: bool, **given: Any) -> None:
    """Benchmarks of this machine and of a cluster.

    Without a subcommand: start a local cluster (fsync on) and measure
    acknowledged sends at 1, 64 and 256 requests in flight, linearizable and
    stale reads, a follower's catch-up, memory per node with many messages
    stored, and failover; progress on stderr, the report on stdout.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pathlib import Path

    from zrep.bench.report import DEFAULT_HISTORY, Progress, append_history, format_text
    from zrep.bench.suite import run_bench

    if only and skip:
        raise click.UsageError("use --only or --skip, not both")
    phases = tuple(p for p in PHASES if (p in only if only else p not in skip))
    for key in ("config_path", "directory"):
        given[key] = Path(given[key]) if given[key] is not None else None
    opts = options(quick, phases=phases, config=given.pop("config_path"), **given)
    result = run_bench(opts, Progress())
    if not no_history:
        append_history(Path(history) if history else DEFAULT_HISTORY, result)
    if as_json:
        _echo_json(result)
    else:
        click.echo(format_text(result))


@bench.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def wal(args: tuple[str, ...]) -> None:
    """Measure WAL appends on this disk (options: --dir DIR --seconds S --json; see --help)."""
    from zrep.bench.wal import main as bench_wal_main

    sys.exit(bench_wal_main(list(args)))


@bench.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="A directory on the disk whose fsyncs to measure.")
@json_option
def floor(directory: str, as_json: bool) -> None:
    """The latency no node could beat here: 2 ZeroMQ round trips between processes + 1 raw fsync."""
    from zrep.bench.floor import main as bench_floor_main

    sys.exit(bench_floor_main(["--dir", directory] + (["--json"] if as_json else [])))


@bench.command()
@click.option("--kills", type=click.IntRange(1, 100), default=10, show_default=True,
              help="How many times to SIGKILL the leader.")
@json_option
def failover(kills: int, as_json: bool) -> None:
    """Kill the leader of a local 3-node cluster KILLS times while a client writes;
    report the median and max time from the kill to the next acknowledged write."""
    from zrep.bench.failover import main as bench_failover_main

    sys.exit(bench_failover_main(kills, as_json))
