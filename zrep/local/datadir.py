"""Whether a node's data directory is fresh, as a runner sees it before starting the node.

Job: decide the start flag a runner passes (--init for a founding member,
--join for a lost disk) without importing the storage layer (zrep.local
talks to nodes over the wire and reads only the cluster file).
Invariant: the same answer as zrep.storage.identity.is_fresh (a test checks
both on every combination of the files a node writes).
"""

from __future__ import annotations

import os
from pathlib import Path

NODE_FILES = ("identity", "wal", "store.snap")  # what a node writes first: its identity, its log, its snapshot


def is_fresh(directory: str | os.PathLike[str]) -> bool:
    """Nothing a node wrote is there: a start needs --init or --join."""
    d = Path(directory)
    return not any((d / name).exists() for name in NODE_FILES)
