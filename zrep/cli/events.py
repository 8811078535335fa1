"""`zrep cluster events`: print the merged event timeline of a cluster (zrep.dashboard.events)."""

from __future__ import annotations

import json
import time

import click

from zrep.cli import EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from zrep.config import ClusterConfig
from zrep.dashboard.events import EventReader, Timeline, format_event, parse_since


def show_events(cfg: ClusterConfig, since: str, follow: bool, as_json: bool) -> None:
    try:
        since_t = time.time() - parse_since(since)
    except ValueError as e:
        raise CliError(f"--since: {e}", EXIT_USAGE) from None
    reader = EventReader(cfg)
    if not reader.sources:
        raise CliError("no node has a metrics address: add metrics = \"http://HOST:PORT\" to each [[nodes]] "
                       "of the cluster file and restart the nodes", EXIT_USAGE)
    try:
        first = True
        for timeline in (reader.follow(since_t) if follow else iter([reader.read(since_t)])):
            if first and len(timeline.unreachable) == len(cfg.nodes):
                raise CliError("no node answered: " + "; ".join(f"node {n}: {why}" for n, why in
                                                               sorted(timeline.unreachable.items()))
                               + "; is the cluster up (zrep client status)?", EXIT_UNAVAILABLE)
            _print(timeline, as_json, warn=first)
            first = False
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _print(timeline: Timeline, as_json: bool, warn: bool) -> None:
    if warn:
        for node, why in sorted(timeline.unreachable.items()):
            click.echo(f"warning: node {node}: not asked or no answer ({why}); its events are missing", err=True)
    for e in timeline.events:
        click.echo(json.dumps(e, ensure_ascii=False) if as_json else format_event(e))
