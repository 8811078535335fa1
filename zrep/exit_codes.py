"""Every exit code zrep's commands use, in one table that the node, the CLI help and the README read.

Job: name each code once, with the one-line meaning shown to users. `zrep
client ...` (and the other cluster-talking commands) and `zrep node` share
the numbers but not the meanings, as the README's table shows side by side.
Invariants: no imports; the README's "Exit codes" table is `markdown_table()`
verbatim (tests/test_exit_codes.py), and the CLI epilogs come from here.
"""

from __future__ import annotations

# ---------------------------------------------------------------- zrep client ... (and admin commands)
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug or an unexpected failure
EXIT_USAGE = 2  # bad input or usage (click's own code), bad config file
EXIT_UNAVAILABLE = 3  # no leader / no quorum answered in time
EXIT_OUTCOME_UNKNOWN = 4  # a write timed out and may have been applied
EXIT_REJECTED = 5  # the cluster refused the request
EXIT_ACK_NOT_MET = 6  # the write is committed, but --ack all was not met in time
EXIT_NOT_AUTHORIZED = 8  # curve: the client's key was refused, or its principal may not do this
EXIT_BROKEN_PIPE = 141  # stdout was closed early (`| head`): stop quietly, 128 + SIGPIPE as git does

# ---------------------------------------------------------------- zrep cluster up / bin/up
UP_OK = 0  # stopped by Ctrl-C/SIGTERM, every node stopped cleanly
UP_NODE_FAILED = 1  # a node died or had to be killed
UP_USAGE = 2  # bad config file
UP_PORTS_TAKEN = 6  # a cluster (or another program) already holds the cluster's ports

# ---------------------------------------------------------------- zrep node / python -m zrep.node
NODE_OK = 0  # stopped by SIGTERM/SIGINT
NODE_UNEXPECTED = 1  # an unexpected error (Python's own code for an uncaught exception)
NODE_USAGE = 2  # bad config file, unknown node id, unknown planted bug
NODE_CORRUPT_LOG = 3  # a record in the middle of the WAL is corrupt: refuse to start
NODE_STORAGE = 4  # the WAL cannot be opened, locked, written or fsynced: stop, never retry
NODE_INVARIANT = 5  # an internal safety rule broke (a bug): stop at once
NODE_NETWORK = 6  # a socket cannot be bound (address in use or not local)
NODE_NO_SNAPSHOT = 7  # the WAL is compacted and the snapshot it needs is missing or unusable
NODE_NO_MODE = 8  # a fresh data directory and neither --init nor --join: refuse to start
NODE_REMOVED = 9  # the committed configuration no longer names this node: stop, keeping the data

CLIENT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_INTERNAL: "internal error (`zrep -v ...` prints the traceback)",
    EXIT_USAGE: "bad input or usage, bad config file",
    EXIT_UNAVAILABLE: "unavailable: no leader or no quorum; retry later",
    EXIT_OUTCOME_UNKNOWN: "timed out: the write may or may not have been applied; retrying the same request is safe",
    EXIT_REJECTED: "rejected (bad mailbox, too large, no such message)",
    EXIT_ACK_NOT_MET: "`--ack all` not met: the write is committed, but not every member had it on disk in time",
    EXIT_NOT_AUTHORIZED: "not authorized: the cluster refused this key, or its principal may not do this "
                         "(the line says which, and what to ask for)",
    EXIT_BROKEN_PIPE: "stdout closed early (piped into `head`): stops quietly, as git does",
}

UP_CODES: dict[int, str] = {
    UP_OK: "stopped by Ctrl-C or SIGTERM, every node cleanly",
    UP_NODE_FAILED: "a node died or had to be killed",
    UP_USAGE: "bad config file",
    UP_PORTS_TAKEN: "a cluster (or another program) holds the ports: refuses to start, naming the pids",
}

NODE_CODES: dict[int, str] = {
    NODE_OK: "stopped by SIGTERM or SIGINT",
    NODE_UNEXPECTED: "unexpected error",
    NODE_USAGE: "bad config, unknown node id",
    NODE_CORRUPT_LOG: "corrupt log mid-file: refuses to start (the line names the file and byte offset)",
    NODE_STORAGE: "the log cannot be written or fsynced: stops, never retries",
    NODE_INVARIANT: "a broken internal invariant (a bug): stops at once",
    NODE_NETWORK: "a socket cannot be bound (port in use, address not local)",
    NODE_NO_SNAPSHOT: "the log is compacted and its snapshot (`store.snap`) is missing or unusable: refuses to start "
                      "(the line says what to do)",
    NODE_NO_MODE: "a fresh data directory without `--init` or `--join`: refuses to start (the line says which)",
    NODE_REMOVED: "removed from the cluster's configuration: stops, keeping its data",
}


def epilog(codes: dict[int, str]) -> str:
    """The codes as a click epilog (`\\b` keeps click from rewrapping the lines)."""
    lines = [f"  {code}  {text.replace('`', '')}" for code, text in sorted(codes.items())]
    return "\b\nExit codes:\n" + "\n".join(lines)


def markdown_table() -> str:
    """The README's table: one row per code, the client's, the node's and bin/up's meaning side by side."""
    rows = ["| code | `zrep client ...` | `zrep node` | `bin/up`, `zrep cluster up` |", "|---|---|---|---|"]
    for code in sorted(CLIENT_CODES.keys() | NODE_CODES.keys() | UP_CODES.keys()):
        rows.append(f"| {code} | {CLIENT_CODES.get(code, '')} | {NODE_CODES.get(code, '')} | "
                    f"{UP_CODES.get(code, '')} |")
    return "\n".join(rows)
