"""`zrep bench aio`: sends through the asyncio client (zrep.aio.Client), from one event loop.

Job: start a local 3-node cluster (fsync on), then for each in-flight level
run that many concurrent `send` tasks on one `zrep.aio.Client` for a bounded
time and count, and report sends/s and latency percentiles per level. It
measures what a Python asyncio program gets end to end: the library's
requests, retries and answers included, not the bare wire (which the main
benchmark's load workers measure).
With --secure the same levels run, interleaved, on a second cluster with
CURVE on every socket, and the report gives secure / plain sends/s per level:
the cost of security, measured side by side in one run.
Invariants: every level is bounded in count and time; every send is a real
exactly-once write (the client's own seq); the clusters are always stopped.
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


async def _run(clusters: dict[str, LocalCluster], levels: list[int], count: int, seconds: float,
               say: Any) -> dict[str, list[dict[str, Any]]]:
    """Each level on each cluster in turn (plain, then secure), so both see the same machine."""
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in clusters}
    clients = {kind: Client(c.config_path, timeout_s=15, key=c.client_key) for kind, c in clusters.items()}
    try:
        for client in clients.values():
            await client.send("bench-aio", BODY)  # connect and warm up before the clock starts
        for n in levels:
            for kind, client in clients.items():
                say(f"bench aio: {n} in flight ({kind})")
                out[kind].append(await _level(client, n, count, seconds))
    finally:
        for client in clients.values():
            await client.close()
    return out


def main(levels: list[int], count: int, seconds: float, as_json: bool, secure: bool = False) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="zrep-bench-aio-") as d:
        kinds = ["plain", "secure"] if secure else ["plain"]
        clusters = {kind: LocalCluster(Path(d) / kind, secure=kind == "secure", start=False) for kind in kinds}
        try:
            for c in clusters.values():
                c.start()
                c.wait_for_leader(20)
            results = asyncio.run(_run(clusters, levels, count, seconds, say))
        finally:
            for c in clusters.values():
                c.close()
    report: dict[str, Any] = {"bench": "aio", "machine": machine(), "levels": results["plain"]}
    if secure:
        report["secure_levels"] = results["secure"]
        report["secure_over_plain"] = {str(p["in_flight"]): round(s["per_s"] / p["per_s"], 3) if p["per_s"] else None
                                       for p, s in zip(results["plain"], results["secure"])}
    if as_json:
        print(json.dumps(report))
    else:
        print(f"asyncio client (zrep.aio), one event loop, 100-byte sends, {report['machine']}")
        for kind in kinds:
            for r in results[kind]:
                err = f", errors {r['errors']}" if r["errors"] else ""
                print(f"  {kind:>6} {r['in_flight']:>4} in flight: {r['per_s']:>9,.0f} sends/s  p50 {r['p50_ms']} ms  "
                      f"p99 {r['p99_ms']} ms  ({r['sends']} in {r['seconds']} s{err})")
        if secure:
            print("  secure / plain sends/s: " + ", ".join(f"{k} in flight {v}" for k, v in
                                                        report["secure_over_plain"].items()))
    every = [r for kind in kinds for r in results[kind]]
    return 0 if all(not r["errors"] and r["sends"] for r in every) else 1
