"""The exception hierarchy of zrep.

Every error a user can meet has one class here, and its message is one line
that says what happened and what to do. Errors caused by a bad peer or a bad
client (DecodeError) are caught by the node and never stop it; errors that
mean our own state is unsafe (CorruptLogError, StorageError, InvariantError)
stop the node.
"""


class ZrepError(Exception):
    """Base of every zrep error."""


class ConfigError(ZrepError):
    """A cluster file is missing, malformed or inconsistent."""


class DecodeError(ZrepError):
    """Bytes from the network or a record body could not be decoded strictly."""


class CorruptLogError(ZrepError):
    """A log record in the middle of a WAL failed its CRC or did not decode."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{path}: corrupt record at byte {offset} ({reason}); "
            f"refusing to start. Restore this node's data directory from a peer "
            f"(remove it and let the node catch up) or inspect it with "
            f"'zrep log inspect {path}'"
        )


class StorageError(ZrepError):
    """A write or fsync failed: the node must stop, never retry (fsyncgate)."""


class InvariantError(ZrepError):
    """An internal safety invariant broke: a bug. The node stops at once."""
