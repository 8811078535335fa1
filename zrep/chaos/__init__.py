"""`zrep chaos`: a local cluster under load and a seeded nemesis, then checks.

Modules: netfaults (nftables partitions, the private-namespace sandbox),
nemesis (the faults), workload (client threads writing the history),
report (the verdicts), runner (the command and the run's phases).
"""
