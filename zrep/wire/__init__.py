"""The client protocol and the frame codec: what crosses a socket, as msgpack.

Job: the client request/reply vocabulary (ops, codes, Message) and the
encoding of every frame, client and peer.
Invariants: pure apart from threading.local; imports zrep.core and
zrep.errors only; every decoder refuses malformed input with DecodeError.
"""
