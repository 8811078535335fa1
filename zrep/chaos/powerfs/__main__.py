"""`python -m zrep.chaos.powerfs --backing B --state S MOUNTPOINT`: the daemon of one mount
(foreground, single-threaded FUSE loop plus the control socket). zrep.chaos.powerfs.mount
starts it; it exits when the mount is taken down."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zrep.chaos.powerfs", description=__doc__)
    parser.add_argument("--backing", required=True, type=Path, help="directory the mount writes through to")
    parser.add_argument("--state", required=True, type=Path, help="ghosts, limbo and ctl.sock (same file system)")
    parser.add_argument("--real-fsync", action="store_true", help="also fsync the backing files (slower)")
    parser.add_argument("mountpoint", type=Path)
    args = parser.parse_args(argv)
    from fuse import FUSE  # here: importing fusepy needs libfuse

    from zrep.chaos.powerfs.control import SOCKET_NAME, ControlServer
    from zrep.chaos.powerfs.fs import PowerFS

    ops = PowerFS(args.backing, args.state, real_fsync=args.real_fsync)
    ControlServer(ops, args.state / SOCKET_NAME)
    FUSE(ops, str(args.mountpoint), foreground=True, nothreads=True, big_writes=True, allow_other=True,
         default_permissions=True, fsname="zrep-powerfs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
