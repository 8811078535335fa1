"""`zrep cluster up`: run every node of a cluster file on this machine (zrep.local.up)."""

from __future__ import annotations

import sys

import click

from zrep.cli import config_option
from zrep.cli.client import status_lines
from zrep.config import load_config

# ---------------------------------------------------------------- zrep cluster


@click.group()
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
