"""`zrep admin ...`: change the cluster's membership while it serves, modelled on etcdctl's `member`.

members, add (a learner), promote, demote, remove, update (addresses),
replace (remove a dead or wiped node, add it back as a learner, wait until
it has caught up, promote it), and inspect DIR (offline: a stopped node's
rank and configuration). Every change goes to the leader, which judges it
(zrep.service.membership) and answers once its configuration entry has
committed. transfer-leader [ID] hands leadership over; force-new-cluster DIR (offline) recovers from a lost majority.

Invariants: one line on stderr for every failure, saying what to do; exit
codes from zrep.exit_codes (a refused change: EXIT_REJECTED; no leader:
EXIT_UNAVAILABLE; a change that did not commit in time: EXIT_OUTCOME_UNKNOWN).
`--json` prints the data and nothing else on stdout.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from zrep.cli import (
    CONFIG_ENV,
    CONFIG_KEY,
    DEFAULT_CONFIG,
    EXIT_CODES_HELP,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_REJECTED,
    EXIT_USAGE,
    KEY_ENV,
    TIMEOUT_ENV,
    TIMEOUT_KEY,
    CliError,
    _echo_json,
    _remember,
    json_option,
    late_options,
    verbose_option,
)
from zrep.cli.admin_inspect import NotADataDir, inspect_dir, inspect_lines
from zrep.cli.client import _ClientFactory
from zrep.client import Client, Membership, OutcomeUnknown, Rejected
from zrep.errors import CorruptLogError, StorageError
from zrep.storage.recovery import force_new_cluster, snapshot_base
from zrep.wire.client_messages import MAX_NODE_ID, REFUSED

RETRY_EVERY_S = 0.5  # --wait: how often a refused promote is asked again
DEFAULT_REPLACE_WAIT_S = 300.0  # replace: how long the new machine may take to start and catch up


@click.group(epilog=EXIT_CODES_HELP)
@click.option("--config", "config_path", envvar=CONFIG_ENV, default=DEFAULT_CONFIG, show_default=True,
              show_envvar=True, metavar="PATH", help="Cluster file (TOML); its nodes are the seeds.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0,
              envvar=TIMEOUT_ENV, show_envvar=True, show_default=True, metavar="SECONDS",
              help="Seconds one request may take, retries through failovers included.")
@click.option("--key", "key_path", envvar=KEY_ENV, default=None, show_envvar=True, metavar="FILE",
              help="Secret key of a principal with the admin grant (security.mode = curve).")
@verbose_option
@click.pass_context
def admin(ctx: click.Context, config_path: str, timeout_s: float, key_path: str | None) -> None:
    """Change the membership: members, add, promote, demote, remove, update, replace; inspect a data dir.

    A change goes to the leader and is answered once it has committed; the
    leader refuses one that would leave the live voters without a quorum
    (--force skips that check only) and a second change while one is pending.
    See docs/membership.md.
    """
    ctx.obj = _ClientFactory(ctx, config_path, timeout_s, key_path)
    ctx.call_on_close(ctx.obj.close)


def _client(ctx: click.Context) -> Client:
    return ctx.find_object(_ClientFactory).get()


def _late_options_but_key(f: Any) -> Any:
    """late_options without --key, which `add` uses for the new node's public key (as etcdctl's flags
    sit after the command); the client's own key file goes before the command: zrep admin --key FILE add."""
    f = click.option("--config", "late_config", default=None, expose_value=False, metavar="PATH",
                     callback=_remember(CONFIG_KEY), help="Cluster file (TOML).")(f)
    f = click.option("--timeout", "late_timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     expose_value=False, metavar="SECONDS", callback=_remember(TIMEOUT_KEY),
                     help="Seconds one request may take.")(f)
    return verbose_option(f)


node_id = click.argument("node", metavar="ID", type=click.IntRange(1, MAX_NODE_ID))
force_option = click.option("--force", is_flag=True, help="Skip the liveness checks (never the safety rules).")


def member_json(view: Membership) -> dict[str, Any]:
    return {**asdict(view), "voters": view.voters, "learners": view.learners}


def member_lines(view: Membership) -> list[str]:
    state = "committed" if view.committed else "pending: a change is not committed yet"
    lead = f"node {view.leader}" if view.leader else "none known"
    head = [f"cluster {view.cluster_id or '-'}: configuration at index {view.config_index} ({state}); "
            f"leader {lead}; asked node {view.node}"]
    if view.forming:
        head.append("the cluster is being formed: every seed must answer before it serves")
    if not view.committed:
        head.append(f"committed voters: {', '.join(map(str, view.committed_voters)) or '-'}")
    rows = [("ID", "ROLE", "INCARNATION", "STATE", "LAG", "RPC", "PUB")]
    for m in view.members:
        rows.append((str(m.id), m.role, m.incarnation or "-", m.state or "-", "-" if m.lag is None else str(m.lag),
                     m.rpc or "(cluster file)", m.pub or "(cluster file)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lost = [m.id for m in view.members if m.lost_state]
    notes = [f"node {n} answers from a new disk (its state was lost): run zrep admin replace {n}" for n in lost]
    return head + table + notes


def _show(view: Membership, as_json: bool, done: str = "") -> None:
    if as_json:
        _echo_json(member_json(view))
        return
    if done:
        click.echo(f"{done} (configuration at index {view.index or view.config_index})")
    for line in member_lines(view):
        click.echo(line)


def _change(ctx: click.Context, op: str, node: int, **kw: Any) -> Membership:
    """One change; a timeout says how to find out whether it happened."""
    try:
        return _client(ctx).admin(op, node, **kw)
    except OutcomeUnknown as e:
        raise CliError(f"{_first_clause(e)}; the {op} of node {node} may or may not have committed: check with "
                       "'zrep admin members' before trying again", EXIT_OUTCOME_UNKNOWN) from None


def _first_clause(e: Exception) -> str:
    return str(e).split("; ")[0]


@admin.command()
@json_option
@late_options
@click.pass_context
def members(ctx: click.Context, as_json: bool) -> None:
    """List the members: role, incarnation, liveness and lag (the leader's view), and whether the
    latest configuration has committed."""
    _show(_client(ctx).members(), as_json)


@admin.command()
@node_id
@click.option("--rpc", required=True, metavar="ADDR", help="Its request address (tcp://HOST:PORT).")
@click.option("--pub", required=True, metavar="ADDR", help="Its heartbeat address (tcp://HOST:PORT).")
@click.option("--key", "keys", multiple=True, metavar="KEY", help="Its public key (z85), for security.mode = "
              "curve; repeat for several.")
@json_option
@_late_options_but_key
@click.pass_context
def add(ctx: click.Context, node: int, rpc: str, pub: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Add node ID as a learner: it receives the log but does not vote. Start it with
    `zrep node --id ID --join`, then `zrep admin promote ID`."""
    view = _change(ctx, "add", node, rpc=rpc, pub=pub, keys=keys)
    _show(view, as_json, f"node {node} added as a learner; promote it once it has caught up: "
          f"zrep admin promote {node} --wait 60")


@admin.command()
@node_id
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Ask again while the leader refuses (the learner is still catching up), for this long.")
@force_option
@json_option
@late_options
@click.pass_context
def promote(ctx: click.Context, node: int, wait_s: float, force: bool, as_json: bool) -> None:
    """Make learner ID a voter, once it has caught up with the leader's log."""
    view = _promote(ctx, node, wait_s, force)
    _show(view, as_json, f"node {node} is a voter")


def _promote(ctx: click.Context, node: int, wait_s: float, force: bool = False) -> Membership:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _change(ctx, "promote", node, force=force)
        except Rejected as e:
            if e.code != REFUSED or time.monotonic() + RETRY_EVERY_S > deadline:
                raise
        time.sleep(RETRY_EVERY_S)  # the learner catches up meanwhile: nothing to wait on but time


@admin.command()
@node_id
@force_option
@json_option
@late_options
@click.pass_context
def demote(ctx: click.Context, node: int, force: bool, as_json: bool) -> None:
    """Make voter ID a learner: it keeps the log but no longer votes or counts."""
    _show(_change(ctx, "demote", node, force=force), as_json, f"node {node} is a learner")


@admin.command()
@node_id
@force_option
@json_option
@late_options
@click.pass_context
def remove(ctx: click.Context, node: int, force: bool, as_json: bool) -> None:
    """Remove node ID from the configuration. A live voter the quorum needs is refused
    (--force skips that check); a dead voter or a learner can always go."""
    _show(_change(ctx, "remove", node, force=force), as_json, f"node {node} removed")


@admin.command()
@node_id
@click.option("--rpc", required=True, metavar="ADDR", help="Its new request address.")
@click.option("--pub", required=True, metavar="ADDR", help="Its new heartbeat address.")
@json_option
@late_options
@click.pass_context
def update(ctx: click.Context, node: int, rpc: str, pub: str, as_json: bool) -> None:
    """Change the addresses of member ID (restart it on the new ones)."""
    _show(_change(ctx, "update", node, rpc=rpc, pub=pub), as_json, f"node {node} updated")


@admin.command(epilog="Rerun after an interruption: a node that is a learner already is only waited for and "
               "promoted.")
@node_id
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=DEFAULT_REPLACE_WAIT_S, show_default=True,
              metavar="SECONDS", help="How long the new machine may take to start (--join) and catch up.")
@json_option
@late_options
@click.pass_context
def replace(ctx: click.Context, node: int, wait_s: float, as_json: bool) -> None:
    """Replace node ID, whose disk is lost or wiped: remove it, add it back as a learner at the
    same addresses, wait until it has caught up, promote it.

    Start the new machine (an empty data directory) with `zrep node --id ID --join`
    before or while this runs.
    """
    client = _client(ctx)
    view = client.members()
    member = view.member(node)
    if member is None:
        raise CliError(f"node {node} is not a member; to add a new node: zrep admin add {node} --rpc ADDR --pub ADDR",
                       EXIT_REJECTED)
    rpc, pub = _addresses(client, node, member.rpc, member.pub)
    if member.role == "voter":
        _change(ctx, "remove", node)
        _say(as_json, f"node {node} removed; now start the new machine: zrep node --id {node} --join")
        _change(ctx, "add", node, rpc=rpc, pub=pub)
        _say(as_json, f"node {node} added back as a learner; waiting up to {wait_s:g} s for it to catch up")
    try:
        view = _promote(ctx, node, wait_s)
    except Rejected as e:
        raise CliError(f"{e}; node {node} is a learner now: once it runs (zrep node --id {node} --join) and has "
                       f"caught up, finish with: zrep admin promote {node} --wait 60", EXIT_REJECTED) from None
    _show(view, as_json, f"node {node} replaced: it is a voter again")


def _addresses(client: Client, node: int, rpc: str, pub: str) -> tuple[str, str]:
    """The member's addresses, or the cluster file's when the configuration names none."""
    if rpc and pub:
        return rpc, pub
    seed = next((n for n in client.config.nodes if n.id == node), None)
    if seed is None:
        raise CliError(f"node {node}'s addresses are in neither the configuration nor the cluster file; "
                       f"add it by hand: zrep admin add {node} --rpc ADDR --pub ADDR", EXIT_USAGE)
    return rpc or seed.rpc, pub or seed.pub


def _say(as_json: bool, line: str) -> None:
    click.echo(line, err=as_json)  # with --json, progress goes to stderr: stdout is the data alone


@admin.command(name="transfer-leader")
@click.argument("node", type=click.IntRange(0, MAX_NODE_ID), default=0, metavar="[ID]")
@json_option
@late_options
@click.pass_context
def transfer_leader(ctx: click.Context, node: int, as_json: bool) -> None:
    """Hand leadership over to voter ID (default: the most caught-up live voter). The leader
    stops taking writes (clients retry them), brings ID up to date and tells it to run at once:
    before maintenance or a restart of the leader, no election timeout is lost."""
    view = _change(ctx, "transfer", node)
    _show(view, as_json, f"node {view.leader} leads now")


@admin.command(name="inspect")
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@json_option
@verbose_option
def inspect_command(directory: str, as_json: bool) -> None:
    """Offline: a stopped node's data directory (DATA_DIR/node-N): its rank (last epoch and
    index), commit, epoch and vote, and the latest configuration in its log or snapshot."""
    try:
        info = inspect_dir(directory)
    except NotADataDir as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if as_json:
        _echo_json(info)
        return
    for line in inspect_lines(info):
        click.echo(line)


@admin.command(name="force-new-cluster")
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--yes", is_flag=True, help="Do it: without --yes, only say what would be done and what may be lost.")
@json_option
@verbose_option
def force_new_cluster_command(directory: str, yes: bool, as_json: bool) -> None:
    """Offline, after losing a majority: make this stopped node's directory a cluster of one voter
    (a new cluster id, its whole log kept). Run it on the survivor `zrep admin inspect` ranks highest;
    wipe the other survivors and add them back with --join and `zrep admin add/promote`."""
    try:
        info = inspect_dir(directory)
    except NotADataDir as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if info["wal_end"] == "corrupt":
        raise CliError(f"{directory}: its WAL is corrupt ({info['wal_verdict']}); pick another survivor", EXIT_USAGE)
    node = _node_of(directory, info)
    warning = ("writes acknowledged by a majority that did not include this node may be lost; none sent with "
               "--ack all (every voter held those). Old members that return must be wiped first: started "
               "with their data they would form the old cluster again.")
    if not yes:
        click.echo(f"would make node {node} (rank epoch {info['last_epoch']}, index {info['last_index']}) the only "
                   f"voter of a new cluster, keeping all {info['last_index']} entries of its log")
        click.echo(f"what may be lost: {warning}")
        click.echo("run again with --yes to do it (the node must be stopped)")
        return
    if not info["incarnation"]:
        raise CliError(f"{directory} has no identity file yet; start and stop the node once (it is upgraded "
                       "in place), then run this again", EXIT_USAGE)
    try:
        config, index = force_new_cluster(Path(directory) / "wal", node, info["incarnation"],
                                          snapshot_base(Path(directory)))
    except (StorageError, CorruptLogError, OSError) as e:
        raise CliError(f"{directory}: {e}; is the node still running? stop it first", EXIT_USAGE) from None
    out = {"node": node, "cluster_id": f"{config.cluster_id:x}", "config_index": index, "may_be_lost": warning}
    if as_json:
        _echo_json(out)
        return
    click.echo(f"node {node} is now the only voter of cluster {config.cluster_id:x} (configuration at index "
               f"{index}); start it as usual, then add the others back: wipe each, start it with --join, "
               f"zrep admin add ID --rpc ... --pub ..., zrep admin promote ID --wait 60")
    click.echo(f"what may be lost: {warning}")


def _node_of(directory: str, info: dict[str, Any]) -> int:
    """The node id of a data directory, from its name: DATA_DIR/node-N."""
    name = Path(directory).resolve().name
    if name.startswith("node-") and name[5:].isdigit():
        return int(name[5:])
    raise CliError(f"{directory}: cannot tell which node this is (a node's data directory is DATA_DIR/node-N)",
                   EXIT_USAGE)
