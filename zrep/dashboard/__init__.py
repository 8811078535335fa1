"""A read-only view of a running cluster, over the network only: `zrep dashboard`, `zrep cluster events`.

Job: fetch what every node serves (its status over the client protocol, its
/metrics and /events on its metrics address), merge the nodes' timelines into
one, and serve a live web page of the cluster.
Invariants: never imports zrep.node (it talks to nodes as any operator would:
through zrep.client and HTTP); no write to the cluster; a node that does not
answer is shown as down, never waited on past a short timeout.
Imports: zrep.client, zrep.config, zrep.errors, the standard library and
prometheus_client's text parser.
"""
