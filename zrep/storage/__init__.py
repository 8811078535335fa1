"""The node's files: the write-ahead log, snapshot files and their writer, log inspection.

Job: make what the Service asks to persist durable (fsync before it returns)
and read it back on start, refusing corrupt records with a clear error.
Invariants: imports zrep.core, zrep.store and zrep.errors; never zmq.
"""
