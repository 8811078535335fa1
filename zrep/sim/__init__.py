"""The deterministic cluster simulator: real replicas, stores and the real
ready-applying function over a simulated network, disk and clock.

Must never import zmq, os, time or socket: one seed must replay exactly.
"""
