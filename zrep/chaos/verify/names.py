"""The checks' names and descriptions, and the constants every verify module shares."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

ACKED = "acknowledged_sends_durable"
DUPS = "no_duplicates"
FAILED = "failed_sends_absent"
LIN = "linearizable"
STALE = "stale_reads_valid"
PHANTOM = "no_phantom_messages"
ACKS = "acknowledgements_consistent"
FINAL = "final_state_consistent"

CHECKS: dict[str, str] = {
    ACKED: "(a) every acknowledged send is in the final state once, at its acknowledged offset, "
           "unless a delete removed it",
    DUPS: "(b) no body appears twice: in one read, in the final state, or in two mailboxes",
    FAILED: "(c) no failed send appears in any read or in the final state",
    LIN: "(d) linearizable reads, sends and deletes admit one order consistent with real time",
    STALE: "stale reads return states that existed (offset order, holes deleted, nothing rolled back)",
    PHANTOM: "every message seen was sent, to that mailbox; no offset without a possible send",
    ACKS: "acknowledgements agree: one send per offset and log index, log order = offset order, "
          "no offset deleted twice",
    FINAL: "the final state is a valid state: every hole deleted, acknowledged deletes hold",
}
NEEDS_FINAL = frozenset({ACKED, FINAL})
EVIDENCE_LIMIT = 8  # examples kept per check; the count covers them all
NO_BOUND = sys.maxsize  # a rank above every real time rank
Final = Mapping[str, Sequence[tuple[int, str]]]
