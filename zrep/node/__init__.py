"""The real node: the Service driven by a poll loop over ZeroMQ sockets and files.

Job: start-up (WAL replay, snapshot load, exit codes), the loop, the client
op table, the snapshot and compaction schedule, and the ZeroMQ transport.
Invariants: the only package that joins the pure core to sockets and disk;
nothing else imports it (the CLI and `python -m zrep.node` start it).
"""
