"""`zrep bench aio`: sends through the asyncio client (zrep.aio.Client), from one event loop.

Job: start a local 3-node cluster (fsync on), then for each in-flight level
run that many concurrent `send` tasks on one `zrep.aio.Client` for a bounded
time and count, and report sends/s and latency percentiles per level. It
measures what a Python asyncio program gets end to end: the library's
requests, retries and answers included, not the bare wire (which the main
benchmark's load workers measure).
Invariants: every level is bounded in count and time; every send is a real
exactly-once write (the client's own seq); the cluster is always stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zrep.aio import Client
from zrep.bench.report import machine
from zrep.bench.workers import percentile
from zrep.local.cluster import LocalCluster

BODY = b"x" * 100


async def _level(client: Client, in_flight: int, count: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    stop_at = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < stop_at:
            issued += 1
            began = time.monotonic()
            try:
                await client.send("bench-aio", BODY)
            except Exception as e:  # counted by kind: the bench judges them, never hides them
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                continue
            latencies.append((time.monotonic() - began) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"in_flight": in_flight, "sends": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(percentile(latencies, 50), 3) if latencies else None,
            "p99_ms": round(percentile(latencies, 99), 3) if latencies else None}


async def _run(config: Path, levels: list[int], count: int, seconds: float,
               say: Any) -> list[dict[str, Any]]:
    out = []
    async with Client(config, timeout_s=15) as client:
        await client.send("bench-aio", BODY)  # connect and warm up before the clock starts
        for n in levels:
            say(f"bench aio: {n} in flight")
            out.append(await _level(client, n, count, seconds))
    return out


def main(levels: list[int], count: int, seconds: float, as_json: bool) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="zrep-bench-aio-") as d:
        with LocalCluster(Path(d)) as cluster:
            cluster.wait_for_leader(20)
            results = asyncio.run(_run(cluster.config_path, levels, count, seconds, say))
    report = {"bench": "aio", "machine": machine(), "levels": results}
    if as_json:
        print(json.dumps(report))
    else:
        print(f"asyncio client (zrep.aio), one event loop, 100-byte sends, {report['machine']}")
        for r in results:
            err = f", errors {r['errors']}" if r["errors"] else ""
            print(f"  {r['in_flight']:>4} in flight: {r['per_s']:>9,.0f} sends/s  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  ({r['sends']} in {r['seconds']} s{err})")
    return 0 if all(not r["errors"] and r["sends"] for r in results) else 1
