"""CurveZMQ keys, who may do what, and the in-loop ZAP handler (issue 16, SECURITY.md).

Job: keypairs in the zcert format (`keys`), the table of node keys and client
principals with their mailbox grants (`policy`), and a ZAP handler that a
node's poll loop answers without a thread (`zap`).
Invariants: a secret is never logged or printed (only public keys and
fingerprints); a secret file readable by group or others is refused; the
policy denies by default; imports zmq (for CURVE) and zrep.errors only.
"""
