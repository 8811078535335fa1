"""The settings of `zrep bench`: phases, counts, and what --quick changes.

Standard library only, so the command line can show these defaults in its
help without loading the benchmark (which starts clusters and loads zmq).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PHASES = ("floor", "sends", "reads", "catchup", "memory", "membership", "failover")


@dataclass(frozen=True)
class Options:
    config: Path | None = None  # a cluster file to copy; None: a new local cluster
    directory: Path | None = None  # where the cluster lives, kept afterwards; None: a temp dir
    phases: tuple[str, ...] = PHASES
    seconds: float = 10.0  # per send/read level, at most
    # Requests per send/read level, at most. High enough that `seconds` ends every level: at
    # 100,000 a stale-read level (60-90k/s) was over in 1-2 s, a window too short to be a figure.
    count: int = 1_000_000
    warmup: int = 500  # requests per level before the window
    workers: int = 2  # worker processes per level with more than 1 in flight
    catchup_messages: int = 100_000
    messages: int = 1_000_000
    kills: int = 10
    max_error_fraction: float = 0.01
    batch: bool = True  # load workers send ClientBatch frames; False: one ClientRequest frame per request
    secure: bool = False  # the sends again on a CURVE cluster, beside the plain one: the cost of security


QUICK = {"seconds": 1.0, "count": 300, "warmup": 20, "catchup_messages": 2_000, "messages": 5_000, "kills": 1}


def options(quick: bool = False, **given: Any) -> Options:
    """Options from the defaults, overridden by --quick, overridden by what was given (not None)."""
    base = dict(QUICK) if quick else {}
    base.update({k: v for k, v in given.items() if v is not None})
    return Options(**base)


def default_help(name: str) -> str:
    """'[default: 10; --quick 1]' for an option's help."""
    def show(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else f"{v:g}"

    default = next(f.default for f in fields(Options) if f.name == name)
    quick = f"; --quick {show(QUICK[name])}" if name in QUICK else ""
    return f"[default: {show(default)}{quick}]"
