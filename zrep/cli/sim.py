"""`zrep sim` and `python -m zrep.sim`: `--seeds A:B [--nodes 3|5]` or `--seed S --trace`."""

from __future__ import annotations

import sys

import click

from zrep.core.replica import BUGS
from zrep.sim.cluster import median, run_seed


def _parse_range(text: str) -> range:
    lo, _, hi = text.partition(":")
    try:
        return range(int(lo), int(hi)) if hi else range(int(lo), int(lo) + 1)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use A:B (A included, B excluded), e.g. 0:1000")


@click.command(name="sim")
@click.option("--seeds", default="0:100", show_default=True, help="Seed range A:B (B excluded).")
@click.option("--seed", type=int, default=None, help="Run this one seed (replays exactly).")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--trace", is_flag=True, help="Print the run's events (with --seed).")
@click.option("--ticks", type=int, default=600, show_default=True, help="Ticks of faults before the heal.")
@click.option("--first", "stop_first", is_flag=True, help="Stop at the first failing seed.")
@click.option("--bug", "bugs", multiple=True, type=click.Choice(sorted(BUGS)),
              help="Plant a bug (test-only): the run should find a violation.")
def sim(seeds: str, seed: int | None, nodes: str, trace: bool, ticks: int, stop_first: bool,
         bugs: tuple[str, ...]) -> None:
    """Run the deterministic cluster simulator over a range of seeds."""
    seed_range = range(seed, seed + 1) if seed is not None else _parse_range(seeds)
    n = int(nodes)
    totals: dict[str, int] = {}
    failovers: list[int] = []
    relative: list[float] = []  # failover time in election timeouts (plans differ in tick scale)
    runs = elections = commits = acked = reads = 0
    failing: list[tuple[int, str]] = []
    for s in seed_range:
        result, violation, lines = run_seed(s, n, frozenset(bugs), trace, ticks)
        if trace:
            click.echo("\n".join(lines))
        runs += 1
        if violation is not None:
            failing.append((s, violation))
            click.echo(f"seed {s}: VIOLATION {violation}", err=True)
            if stop_first:
                break
            continue
        for k, v in result.faults.items():
            totals[k] = totals.get(k, 0) + v
        failovers += result.failover_ticks
        relative += [t / result.election_ticks for t in result.failover_ticks]
        elections += result.elections
        commits += result.commit
        acked += result.acked_writes
        reads += result.reads
        if len(seed_range) > 50 and runs % 100 == 0:
            click.echo(f"... {runs}/{len(seed_range)} seeds", err=True)
    faults = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none"
    click.echo(f"seeds run: {runs} ({n} nodes)")
    click.echo(f"faults injected: {faults}")
    click.echo(f"elections: {elections}; entries committed: {commits}; writes acknowledged: {acked}; reads: {reads}")
    if failovers:
        click.echo(f"leader crash to new leader: median {median(failovers)} ticks, max {max(failovers)} "
                   f"({len(failovers)} failovers)")
        q = sorted(relative)
        pct = ", ".join(f"p{p} {q[min(len(q) - 1, len(q) * p // 100)]:.2f}" for p in (10, 50, 90, 99))
        click.echo(f"  in election timeouts: {pct}, max {q[-1]:.2f}")
    if failing:
        click.echo(f"FAILING seeds: {', '.join(str(s) for s, _ in failing)}")
        sys.exit(1)
    click.echo("all seeds passed")

