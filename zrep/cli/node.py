"""`zrep node` (and `python -m zrep.node`): run one node in the foreground; exits with the node's code."""

from __future__ import annotations

import sys

import click

from zrep.cli import NODE_EXIT_CODES_HELP, config_option


@click.command(epilog=NODE_EXIT_CODES_HELP)
@click.option("--id", "node_id", type=click.IntRange(min=1), required=True, help="This node's id in the cluster file.")
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: one line per event; json: one JSON object per line (time, node, level, event, fields).")
@click.option("--init", "mode", flag_value="init",
              help="A fresh data directory founds a new cluster with the nodes of the cluster file.")
@click.option("--join", "mode", flag_value="join",
              help="A fresh data directory waits as an observer until `zrep admin add` or `replace` adds it.")
@click.option("--unsafe-bug", "bugs", multiple=True, hidden=True, help="Plant a bug (tests only).")
def node(node_id: int, config_path: str, log_format: str, mode: str | None, bugs: tuple[str, ...]) -> None:
    """Run one node of the cluster in the foreground until SIGTERM or Ctrl-C.

    A fresh data directory needs --init or --join; one that has started before ignores both."""
    from zrep.node.start import (
        run_node,  # lazily: the node loads the core, the WAL and the transport
    )

    sys.exit(run_node(config_path, node_id, bugs=frozenset(bugs), log_format=log_format, mode=mode))
