"""The replicated state machine: mailboxes of messages, log-entry commands, the snapshot image.

Job: apply committed commands deterministically, answer reads, keep the
exactly-once table and a digest every replica can compare.
Invariants: pure (no clock, disk or sockets); imports zrep.wire and
zrep.errors only.
"""
