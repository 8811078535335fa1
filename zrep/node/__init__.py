"""The real node: the Service driven by a poll loop over ZeroMQ sockets and files.

Job: start-up (start.py: WAL replay, snapshot load, exit codes), the loop
(loop.py), the client op table (requests.py), the snapshot and compaction
schedule (compaction.py), the ZeroMQ transport (transport.py), and what the
node tells about itself: counters (stats.py), log lines and the event
timeline (journal.py), and the optional metrics/health/events HTTP server
(metrics.py, in its own thread, never blocking the loop).
Invariants: the only package that joins the pure core to sockets and disk;
nothing else imports it (the CLI and `python -m zrep.node` start it).
"""
