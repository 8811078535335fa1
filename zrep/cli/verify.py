"""`zrep verify HISTORY [--final F] [--json]`: check a chaos history offline (zrep.chaos.verify)."""

from __future__ import annotations

import sys

import click

from zrep.chaos.history import HistoryError, load_history, pair_ops
from zrep.chaos.verify import check, load_final


@click.command(name="verify")
@click.argument("history", type=click.Path(exists=True, dir_okay=False))
@click.option("--final", "final_path", type=click.Path(exists=True, dir_okay=False),
              help='Final state read from the converged cluster: {"mailbox": [[offset, body], ...]}.')
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(history: str, final_path: str | None, as_json: bool) -> None:
    """Check a chaos HISTORY (JSON lines); exit 0 iff every check passes, 1 on violations, 2 on bad input."""
    try:
        ops = pair_ops(load_history(history))
        final = load_final(final_path) if final_path else None
        report = check(ops, final)
    except (HistoryError, ValueError) as e:
        click.echo(f"zrep verify: {e}", err=True)
        sys.exit(2)
    click.echo(report.to_json() if as_json else report.format())
    sys.exit(0 if report.ok else 1)
