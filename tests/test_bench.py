"""The benchmark commands run end to end (figures come from them; no speed is asserted)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from zrep.cli import main


def test_bench_failover_measures_each_kill():
    result = CliRunner().invoke(main, ["bench", "failover", "--kills", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["kills"] == 2 and len(report["all_ms"]) == 2
    assert 0 < report["median_ms"] <= report["max_ms"] < 15_000
