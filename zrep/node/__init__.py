"""The real node: the Service driven by a poll loop over ZeroMQ sockets and files.

Job: start-up (start.py: WAL replay, snapshot load, exit codes), the loop
(loop.py), the client op table (requests.py), the snapshot and compaction
schedule (compaction.py), and the ZeroMQ transport (transport.py).
Invariants: the only package that joins the pure core to sockets and disk;
nothing else imports it (the CLI and `python -m zrep.node` start it).
"""
