"""`zrep cluster up`: run every node of a cluster file on this machine (zrep.local.up)."""

from __future__ import annotations

import sys

import click

from zrep.cli import config_option
from zrep.cli.client import status_lines
from zrep.config import load_config
from zrep.exit_codes import UP_CODES, epilog

# ---------------------------------------------------------------- zrep cluster


@click.group()
def cluster() -> None:
    """Run a whole cluster on this machine."""


@cluster.command(epilog=epilog(UP_CODES))
@config_option
@click.option("--secure", is_flag=True, help="CURVE on every socket: keys for each node and for a client "
                                            "(local-admin) in DATA_DIR/keys, made once and then reused, and the "
                                            "cluster run from DATA_DIR/cluster-secure.toml.")
def up(config_path: str, secure: bool) -> None:
    """Start every node of the cluster file, print the status once there is a leader,
    and stop them all on Ctrl-C or SIGTERM. Node log lines are prefixed with their id.

    It refuses to start when a cluster (or another program) already holds the ports,
    and on stopping names any node it did not start that still runs."""
    from zrep.local.up import run_cluster

    cfg = load_config(config_path)
    key = None
    if secure and not cfg.security.curve:
        from zrep.local.secure import secure_copy

        cfg, key_path = secure_copy(cfg)
        key = str(key_path)
        click.echo(f"zrep cluster up: CURVE on every socket; to talk to this cluster:\n"
                   f"  export ZREP_CONFIG={cfg.path} ZREP_KEY={key}")
    sys.exit(run_cluster(cfg, show_status=lambda rows: [click.echo(line) for line in status_lines(rows)], key=key))


@cluster.command(epilog="Reads each node's /events on its metrics address (nodes[].metrics in the cluster file). "
                        "Exit code 0; 3 when no node could be asked; 2 for a bad config or --since.")
@config_option
@click.option("--since", "since", default="10m", show_default=True, metavar="DURATION",
              help="Only events this recent: 90s, 10m, 2h, 1d.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
def events(config_path: str, since: str, follow: bool, as_json: bool) -> None:
    """Every node's recent events (elections, role changes, snapshots, slow fsyncs, ...)
    merged into one timeline sorted by time, so a failover reads as one story."""
    from zrep.cli.events import show_events

    show_events(load_config(config_path), since, follow, as_json)
