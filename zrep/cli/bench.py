"""`zrep bench` and its parts `wal`, `floor`, `failover` (zrep.bench)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zrep.bench.options import PHASES, default_help, options
from zrep.cli import _echo_json, json_option

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------- tools


def _bench_setting(name: str, kind: click.ParamType, text: str, flag: str | None = None) -> Callable[[F], F]:
    """An option for one field of zrep.bench.options.Options; not given (None) leaves it to --quick or the default."""
    return click.option(flag or "--" + name.replace("_", "-"), name, type=kind, default=None,
                        help=f"{text}  {default_help(name)}")


@click.group(invoke_without_command=True, epilog="Without a subcommand: the whole benchmark (a few minutes at "
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
@click.option("--secure", "secure", flag_value=True, default=None,
              help="Run the send levels again on a CURVE cluster in the same run and report secure/plain sends/s.")
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


@bench.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="A directory on the disk to measure.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Seconds per case.")
@json_option
def wal(directory: str, seconds: float, as_json: bool) -> None:
    """Measure WAL appends on this disk."""
    from zrep.bench.wal import main as bench_wal_main

    sys.exit(bench_wal_main(["--dir", directory, "--seconds", str(seconds)] + (["--json"] if as_json else [])))


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


@bench.command(name="aio")
@click.option("--in-flight", "levels", type=click.IntRange(1, 4096), multiple=True, default=(1, 64, 256),
              show_default=True, help="Concurrent sends on one asyncio client (repeatable: one level each).")
@click.option("--count", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Sends per level at most.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds per level at most.")
@click.option("--secure", is_flag=True, help="Also run every level on a CURVE cluster, interleaved, and report "
                                            "secure / plain sends/s.")
@json_option
def aio(levels: tuple[int, ...], count: int, seconds: float, secure: bool, as_json: bool) -> None:
    """Sends through zrep.aio.Client from one event loop against a local 3-node cluster: sends/s and
    latency per in-flight level, the library's retries and bookkeeping included. Exit 1 if any send failed."""
    from zrep.bench.aio import main as bench_aio_main

    sys.exit(bench_aio_main(list(levels), count, seconds, as_json, secure))

