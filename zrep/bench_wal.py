"""WAL benchmark: `python -m zrep.bench_wal [--dir DIR] [--seconds S]`.

Measures, for 100-byte entries, on the disk that holds DIR:
- raw: os.write of 100 bytes + the same flush call the WAL uses, in a loop
  (the ceiling for one durable append at a time);
- the WAL: append_entries + sync with group-commit batches of 1, 16 and 256,
  in entries per second and as a ratio to the raw rate of the same run.
Targets: batch 1 >= 0.8 x raw; batch 256 >= 50,000 entries/s.

Each case runs for `seconds_per_case` and works in a fresh subdirectory of
DIR that is removed afterwards. The raw loop opens its own scratch file: it
measures the disk, not zrep data, so it does not go through zrep.wal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from zrep.core.messages import Entry
from zrep.wal import Wal, sync_data

ENTRY_BYTES = 100
BATCHES = (1, 16, 256)
TARGET_BATCH1_RATIO = 0.8
TARGET_BATCH256_PER_S = 50_000


def _raw_rate(directory: str, seconds: float) -> float:
    path = os.path.join(directory, "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    payload = b"x" * ENTRY_BYTES
    try:
        count, start = 0, time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, payload)
            sync_data(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def _wal_rate(directory: str, batch: int, seconds: float) -> float:
    wal, _ = Wal.open(os.path.join(directory, f"wal-{batch}"))
    data = b"x" * ENTRY_BYTES
    index = 0
    try:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            # Building the Entry objects is part of the cost a node pays too.
            wal.append_entries([Entry(1, i, data) for i in range(index + 1, index + batch + 1)])
            wal.sync()
            index += batch
        return index / (time.perf_counter() - start)
    finally:
        wal.close()


def run_wal_bench(data_dir: str, seconds_per_case: float = 2.0) -> dict[str, Any]:
    """Run every case under data_dir; return rates (entries/s) and ratios to raw."""
    os.makedirs(data_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="zrep-bench-wal-", dir=data_dir)
    try:
        raw = _raw_rate(work, seconds_per_case)
        cases = {}
        for batch in BATCHES:
            rate = _wal_rate(work, batch, seconds_per_case)
            cases[batch] = {"entries_per_s": round(rate), "ratio_to_raw": round(rate / raw, 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "dir": os.path.abspath(data_dir),
        "entry_bytes": ENTRY_BYTES,
        "seconds_per_case": seconds_per_case,
        "raw_appends_per_s": round(raw),
        "batches": cases,
        "batch1_ok": cases[1]["ratio_to_raw"] >= TARGET_BATCH1_RATIO,
        "batch256_ok": cases[256]["entries_per_s"] >= TARGET_BATCH256_PER_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.bench_wal", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="a directory on the disk to measure (default: .)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per case (default: 2)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_wal_bench(args.dir, seconds_per_case=args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"disk of {result['dir']}, {ENTRY_BYTES}-byte entries, {args.seconds:g} s per case")
        print(f"raw write+flush:  {result['raw_appends_per_s']:>9,} appends/s")
        for batch, case in result["batches"].items():
            print(f"wal batch {batch:>3}:    {case['entries_per_s']:>9,} entries/s  {case['ratio_to_raw']:>7.2f} x raw")
        print(f"batch 1 >= {TARGET_BATCH1_RATIO} x raw: {'ok' if result['batch1_ok'] else 'MISSED'}")
        print(f"batch 256 >= {TARGET_BATCH256_PER_S:,}/s: {'ok' if result['batch256_ok'] else 'MISSED'}")
    return 0 if result["batch1_ok"] and result["batch256_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
