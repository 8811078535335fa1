"""WAL benchmark: `python -m zrep.bench.wal [--dir DIR] [--seconds S]`.

Measures, for 100-byte entries, on the disk that holds DIR:
- raw: os.write of 100 bytes + the same flush call the WAL uses, in a loop
  (the ceiling for one durable append at a time);
- the WAL: append_entries + sync with group-commit batches of 1, 16 and 256,
  in entries per second and as a ratio to the raw rate of the same run.
Targets: batch 1 >= 0.8 x raw; batch 256 >= 50,000 entries/s.

Each case runs for `seconds_per_case` in all, in turns of SLICE_SECONDS, in a
fresh subdirectory of DIR that is removed afterwards. The raw loop opens its own scratch file: it
measures the disk, not zrep data, so it does not go through zrep.storage.wal.
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
from zrep.storage.wal import Wal, sync_data

ENTRY_BYTES = 100
BATCHES = (1, 16, 256)
TARGET_BATCH1_RATIO = 0.8
TARGET_BATCH256_PER_S = 50_000
SLICE_SECONDS = 0.25  # cases take turns in slices this long


class RawCase:
    """os.write of one entry's bytes + the WAL's flush call, one at a time."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._payload = b"x" * ENTRY_BYTES

    def run(self, seconds: float) -> int:
        fd, payload, count = self._fd, self._payload, 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            os.write(fd, payload)
            sync_data(fd)
            count += 1
        return count

    def close(self) -> None:
        os.close(self._fd)


class _WalCase:
    """append_entries + sync with `batch` entries per sync (group commit)."""

    def __init__(self, directory: str, batch: int) -> None:
        self._wal, _ = Wal.open(os.path.join(directory, f"wal-{batch}"))
        self._batch = batch
        self._index = 0
        self._data = b"x" * ENTRY_BYTES

    def run(self, seconds: float) -> int:
        wal, batch, data, first = self._wal, self._batch, self._data, self._index
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            # Building the Entry objects is part of the cost a node pays too.
            wal.append_entries([Entry(1, i, data) for i in range(self._index + 1, self._index + batch + 1)])
            wal.sync()
            self._index += batch
        return self._index - first

    def close(self) -> None:
        self._wal.close()


def run_wal_bench(data_dir: str, seconds_per_case: float = 2.0) -> dict[str, Any]:
    """Run every case under data_dir; return rates (entries/s) and ratios to raw.

    The cases take turns in short slices rather than running one after the
    other, so that other load on the disk or CPU weighs on all of them alike
    and the ratios stay meaningful on a busy machine.
    """
    os.makedirs(data_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="zrep-bench-wal-", dir=data_dir)
    cases: dict[str, Any] = {}
    try:
        cases["raw"] = RawCase(work)
        for batch in BATCHES:
            cases[batch] = _WalCase(work, batch)
        counts = dict.fromkeys(cases, 0)
        elapsed = dict.fromkeys(cases, 0.0)
        rounds = max(1, round(seconds_per_case / SLICE_SECONDS))
        for _ in range(rounds):
            for name, case in cases.items():
                start = time.perf_counter()
                counts[name] += case.run(seconds_per_case / rounds)
                elapsed[name] += time.perf_counter() - start
    finally:
        for case in cases.values():
            case.close()
        shutil.rmtree(work, ignore_errors=True)
    raw = counts["raw"] / elapsed["raw"]
    batches = {}
    for batch in BATCHES:
        rate = counts[batch] / elapsed[batch]
        batches[batch] = {"entries_per_s": round(rate), "ratio_to_raw": round(rate / raw, 3)}
    return {
        "dir": os.path.abspath(data_dir),
        "entry_bytes": ENTRY_BYTES,
        "seconds_per_case": seconds_per_case,
        "raw_appends_per_s": round(raw),
        "batches": batches,
        "batch1_ok": batches[1]["ratio_to_raw"] >= TARGET_BATCH1_RATIO,
        "batch256_ok": batches[256]["entries_per_s"] >= TARGET_BATCH256_PER_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.bench.wal", description=__doc__.splitlines()[0])
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
