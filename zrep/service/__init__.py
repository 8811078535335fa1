"""A node minus its sockets, files and clock: the Service that node/ and sim/ both run.

Job: feed client requests and peer messages to the Replica, apply committed
entries to the Store, and hand back what to persist and send (apply_ready).
Invariants: pure, like core/ and store/: no zmq, os, time, socket or
threading; imports zrep.core, zrep.store and zrep.errors only.
"""
