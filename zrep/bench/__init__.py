"""zrep's benchmark: `zrep bench` and its phases (tooling, not the service).

Job: drive a real local cluster and bare processes to measure sends, reads,
failover, catch-up, the WAL and the machine's floor and ceiling.
Invariants: imports zrep.local, zrep.client, zrep.wire, zrep.storage,
zrep.core, zrep.config and zrep.errors, never zrep.node; every load loop is
bounded in count and time.
"""
