"""The chaos run's report: what was done, what was seen, each check's verdict.

Job: turn a finished run (faults, workload counts, failovers, checks) into
one dict (`--json`) and a text for people. A check is a name, a label
((a)..(f) for the issue's list), a verdict and the evidence behind it; the
run passed iff every check passed.

Checks of the history come from zrep.chaos.verify (the one checker: never a copy
here); the cluster checks are made by the runner and handed in as `Check`s.

Imports zrep.chaos.verify's result type only; no I/O except formatting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zrep.chaos.verify import ACKED, ACKS, DUPS, FAILED, FINAL, LIN, PHANTOM, STALE
from zrep.chaos.verify import Report as VerifyReport

REPLICAS = "replicas_identical"
RECOVERY = "writes_resume_after_heal"
EXITS = "no_unexpected_exits"
PROGRESS = "workload_made_progress"
RUN = "run_complete"

# The (a)..(f) first, then the rest of zrep.chaos.verify's checks, then ours.
LABELS = {ACKED: "(a)", DUPS: "(b)", REPLICAS: "(c)", LIN: "(d)", RECOVERY: "(e)", EXITS: "(f)"}
ORDER = [ACKED, DUPS, REPLICAS, LIN, RECOVERY, EXITS, FAILED, STALE, PHANTOM, ACKS, FINAL, PROGRESS, RUN]
EVIDENCE_SHOWN = 8


@dataclass
class Check:
    name: str
    passed: bool
    description: str
    evidence: list[str] = field(default_factory=list)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": LABELS.get(self.name, ""), "passed": self.passed,
                "skipped": self.skipped, "description": self.description, "evidence": self.evidence}


def from_verify(report: VerifyReport) -> list[Check]:
    out = []
    for c in report.checks:
        evidence = list(c.evidence)
        if c.violations > len(evidence):
            evidence.append(f"... and {c.violations - len(evidence)} more")
        # A check verify skipped (no final state) has not passed: the run could not show it.
        # verify's own labels ("(c) ...") follow its list, not the chaos report's (a)..(f).
        description = re.sub(r"^\([a-z]\)\s*", "", c.description)
        out.append(Check(c.name, c.passed and not c.skipped, description, evidence, c.skipped))
    return out


def ordered(checks: Sequence[Check]) -> list[Check]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(checks, key=lambda c: rank.get(c.name, len(ORDER)))


@dataclass
class RunReport:
    settings: dict[str, Any]
    faults: dict[str, int]
    fault_log: list[dict[str, Any]]
    skipped_faults: dict[str, str]
    ops: dict[str, int]
    ops_per_s: float
    failovers: list[dict[str, Any]]
    checks: list[Check]
    paths: dict[str, str | None]
    notes: list[str] = field(default_factory=list)
    verify_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "settings": self.settings, "faults": self.faults,
                "faults_run": sorted(k for k, v in self.faults.items() if v),
                "power_cuts": power_cut_summary(self.fault_log),
                "skipped_faults": self.skipped_faults, "fault_log": self.fault_log,
                "ops": self.ops, "ops_per_s": self.ops_per_s, "failovers": self.failovers,
                "checks": [c.to_dict() for c in ordered(self.checks)], "paths": self.paths,
                "notes": self.notes, "verify_stats": self.verify_stats}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def format(self) -> str:
        s = self.settings
        out = [f"zrep chaos: seed {s.get('seed')}, {s.get('nodes')} nodes, {s.get('duration_s')}s, "
               f"{s.get('clients')} clients{', nasty' if s.get('nasty') else ''}"
               f"{', planted bugs ' + ','.join(s['bugs']) if s.get('bugs') else ''}; {s.get('sandbox', '')}"]
        out.append("faults:   " + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"))
        for kind, why in sorted(self.skipped_faults.items()):
            out.append(f"          {kind} skipped: {why}")
        cuts = power_cut_summary(self.fault_log)
        if cuts["cuts"]:
            out.append(f"power:    {cuts['cuts']} cuts ({cuts['all_nodes']} of every node at once, "
                       f"{cuts['one_node']} of one node, {cuts['minority']} of a minority; {cuts['torn']} torn), {cuts['disks_cut']} disks "
                       f"cut, {cuts['unsynced_bytes_dropped']} unsynced bytes dropped")
        out.append(f"ops:      {_counts(self.ops) or 'none'} ({self.ops_per_s:.1f} ops/s)")
        if self.failovers:
            out.append("failovers (leader lost -> first acknowledged send in a later epoch):")
            for f in self.failovers:
                took = "no acknowledged send before the end" if f["took_s"] is None else f"{f['took_s']:.2f}s"
                out.append(f"          {f['fault']} at {f['at_s']:.1f}s, leader {f['leader']} "
                           f"(epoch {f['epoch']}): {took}")
        for note in self.notes:
            out.append(f"note:     {note}")
        out.append("checks:")
        for c in ordered(self.checks):
            tag = "SKIP" if c.skipped else "PASS" if c.passed else "FAIL"
            label = LABELS.get(c.name, "   ")
            out.append(f"  {tag} {label} {c.name}: {c.description}")
            shown = c.evidence[:EVIDENCE_SHOWN]
            out.extend(f"         - {e}" for e in shown)
            if len(c.evidence) > len(shown):
                out.append(f"         ... and {len(c.evidence) - len(shown)} more")
        for what, path in self.paths.items():
            if path:
                out.append(f"{what}: {path}")
        out.append("RESULT: " + ("every check passed" if self.ok else
                                 "FAILED: " + ", ".join(c.name for c in ordered(self.checks) if not c.passed)))
        return "\n".join(out)


def power_cut_summary(fault_log: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many power cuts of which scope, and what the disks lost (the nemesis's power-cut records)."""
    cuts = [f for f in fault_log if f.get("kind") == "power-cut"]
    scopes = [f.get("scope") for f in cuts]
    return {"cuts": len(cuts), "all_nodes": scopes.count("all"), "one_node": scopes.count("one"),
            "minority": scopes.count("minority"), "torn": sum(1 for f in cuts if f.get("torn_seed") is not None),
            "disks_cut": sum(len(f.get("nodes", [])) for f in cuts),
            "unsynced_bytes_dropped": sum(sum(f.get("dropped_bytes", {}).values()) for f in cuts),
            "torn_bytes_kept": sum(sum(f.get("kept_torn_bytes", {}).values()) for f in cuts)}


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
