"""`zrep log inspect PATH [--json]`: every record of a WAL and whether a node could start from it.

Exit status: 0 clean or torn tail, 1 corrupt, 2 not a WAL at all (zrep.storage.inspect gives the
rows and the verdict).
"""

from __future__ import annotations

import json

import click

from zrep.cli import CliError
from zrep.exit_codes import EXIT_USAGE
from zrep.storage.inspect import not_a_wal, rows, text_row, verdict
from zrep.storage.wal import read_log


@click.group(name="log")
def log() -> None:
    """Look at write-ahead logs."""


@log.command(name="inspect", epilog="Exit codes: 0 clean end or torn tail, 1 corrupt, 2 not a WAL.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def inspect(ctx: click.Context, path: str, as_json: bool) -> None:
    """Print every record of the WAL at PATH (entries decoded: op, mailbox, sender, client, seq,
    body) and whether a node could start from it."""
    buf = read_log(path)
    problem = not_a_wal(buf)
    if problem:
        raise CliError(f"{path} is not a zrep WAL ({problem}); a node's WAL is DATA_DIR/node-N/wal", EXIT_USAGE)
    for row in rows(buf):
        click.echo(json.dumps(row) if as_json else text_row(row))
    result = verdict(buf, path)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "text"}))
    else:
        click.echo(result["text"])
    if result["end"] == "corrupt":
        ctx.exit(1)
