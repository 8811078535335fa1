"""The `zrep chaos` command (and bin/chaos): options, `--cleanup`, and the move into a
private network namespace for partitions (zrep.chaos.sandbox).
"""

from __future__ import annotations

import random
import sys

import click

from zrep.chaos import netfaults
from zrep.chaos.leftovers import cleanup_leftovers
from zrep.chaos.nemesis import FAULTS
from zrep.chaos.powerfs.mount import unavailable as power_cuts_unavailable
from zrep.chaos.runner import Options, Say, run_chaos
from zrep.chaos.sandbox import partition_blocker, run_sandboxed
from zrep.core.replica import BUGS
from zrep.storage.bugs import STORAGE_BUGS


def _faults_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise click.BadParameter(f"unknown fault {', '.join(unknown)}; choose from {','.join(FAULTS)}")
    return names


@click.command(name="chaos", epilog="Exit codes: 0 every check passed, 1 a check failed, 2 usage, "
                                    "3 the tool itself failed, 130 interrupted.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None, metavar="PATH",
              help="Use this cluster file's nodes and timing (data goes to the run directory). "
                   "Default: generate one on free ports.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True,
              help="Nodes of a generated cluster.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=1, max=24 * 3600), default=60.0,
              show_default=True, metavar="SECONDS", help="How long the nemesis runs.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of every choice. Default: random.")
@click.option("--clients", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Concurrent client processes (threads, one Client each).")
@click.option("--mailboxes", type=click.IntRange(min=1, max=100), default=4, show_default=True)
@click.option("--faults", callback=_faults_option, default=None, metavar="LIST",
              help=f"Comma-separated subset of {','.join(FAULTS)}. Default: all this machine can do.")
@click.option("--power-cut", "power_cut", is_flag=True,
              help="Power cuts only (added to --faults if given): each node's data directory on a file system "
                   "that drops what was not fsynced; needs /dev/fuse, root and fusepy.")
@click.option("--membership", is_flag=True, help="Alongside the faults, an operator hands leadership over, "
              "demotes and promotes followers, and replaces followers whose disk it wipes (zrep admin's calls).")
@click.option("--nasty", is_flag=True, help="Faults may take down a majority at once (the cluster must stall "
                                            "safely, never diverge).")
@click.option("--history", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the history (JSON lines) here, and the final state next to it (NAME.final.json), "
                   "both kept. Default: in the run directory.")
@click.option("--keep", is_flag=True, help="Keep the run directory (data, logs, history) even when every check "
                                           "passed. A failed run always keeps it.")
@click.option("--dir", "run_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Run directory. Default: a new temporary one.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--recovery-bound", "recovery_s", type=click.FloatRange(min=1), default=20.0, show_default=True,
              metavar="SECONDS", help="(e): after the heal, a new write must be acknowledged within this.")
@click.option("--heartbeat-ms", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--election-timeout-ms", type=click.IntRange(min=10), default=300, show_default=True)
@click.option("--snapshot-entries", type=click.IntRange(min=0), default=200, show_default=True,
              help="Of a generated cluster: entries between store snapshots (0: none). Small, so that "
                   "kills and restarts meet snapshots being written and loaded.")
@click.option("--no-netns", is_flag=True, help="Do not move into a private network namespace for partitions "
                                               "(the rules then live in this one; removed at the end).")
@click.option("--secure", is_flag=True, help="Of a generated cluster: CURVE on every socket, fresh keys for every "
                                            "node and for the clients (security.mode = curve).")
@click.option("--cleanup", is_flag=True, help="Remove what killed runs left behind (nodes, rules, "
                                              "directories) and exit.")
@click.option("--unsafe-bug", "bugs", multiple=True, type=click.Choice(sorted(BUGS | STORAGE_BUGS)), hidden=True,
              help="Start every node with this planted bug (tests of the checker).")
def chaos(config: str | None, nodes: str, duration_s: float, seed: int | None, clients: int, mailboxes: int,
          faults: tuple[str, ...] | None, power_cut: bool, membership: bool, nasty: bool, history: str | None, keep: bool,
          run_dir: str | None, as_json: bool, recovery_s: float, heartbeat_ms: int, election_timeout_ms: int,
          snapshot_entries: int, no_netns: bool, secure: bool, cleanup: bool, bugs: tuple[str, ...]) -> None:
    """Run a local cluster under load with a seeded nemesis (kills, pauses, partitions, torn WAL tails,
    restarts of every node, power cuts), then heal, converge and check the recorded history.

    The report gives the faults by type, the operations by outcome, the failovers and every check's
    verdict with evidence."""
    say = Say(sys.stderr)
    if cleanup:
        sys.exit(cleanup_leftovers(say.line))
    if power_cut:
        why = power_cuts_unavailable()
        if why:
            raise click.UsageError(f"--power-cut cannot run here: {why}")
        faults = tuple(dict.fromkeys([*(faults or ()), "power-cut"]))
    if secure and config is not None:
        raise click.UsageError("--secure makes keys for a generated cluster; with --config, the file's own "
                               "[security] table decides")
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    opts = Options(nodes=int(nodes), duration_s=duration_s, seed=seed, clients=clients, mailboxes=mailboxes,
                   faults=faults, nasty=nasty, history=history, keep=keep, dir=run_dir, as_json=as_json,
                   bugs=bugs, netns=not no_netns, recovery_s=recovery_s, config=config,
                   heartbeat_ms=heartbeat_ms, election_timeout_ms=election_timeout_ms,
                   snapshot_entries=snapshot_entries, secure=secure, membership=membership)
    wants_partitions = faults is None or "partition" in faults
    if (wants_partitions and not no_netns and not netfaults.in_private_netns()
            and not netfaults.sandbox_unavailable() and not partition_blocker(opts)):
        say.line(f"seed {seed}: moving into a private network namespace (unshare) for partitions")
        sys.exit(run_sandboxed(opts, say))
    sys.exit(run_chaos(opts))
