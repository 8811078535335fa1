"""Node processes on this machine: `zrep cluster up` and the LocalCluster of tests, chaos and bench.

Job: start, watch and stop real node processes, each in its own process group.
Invariants: imports zrep.client, zrep.wire, zrep.config and zrep.errors only;
whatever it starts it also kills and reaps, also when its caller fails.
"""
