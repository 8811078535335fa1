"""The undo journal of the power-cut file system: what a disk would lose.

Job: remember, for a backing directory that every operation writes through to
at once, exactly what is not yet durable, and roll the backing directory back
to its durable state on a cut. Pure bookkeeping plus the rollback itself; the
FUSE side (zrep.chaos.powerfs.fs) calls `before_*` ahead of each change and
`synced`/`dir_synced` on fsync.

Model (POSIX fsync(2), stricter than ext4: see zrep.chaos.powerfs):
  * Data, per inode: the size at the last fsync and the old bytes of every
    durable range overwritten or truncated since (a pread before the change;
    appends cost nothing). No entry means everything the inode holds is
    durable. fsync or fdatasync on any descriptor of the inode clears it.
  * Names, per directory: the listing (name -> inode) as of the last fsync of
    that directory, snapshotted before its first change. A durable name that
    is removed or replaced keeps its inode alive as a hard link in
    STATE/ghosts, so the cut can link it back. A rename between two
    directories ties their journals: fsyncing either makes both durable
    (ext4 commits both in one transaction).

Invariants:
  * Nothing outside `backing` and `state` is ever touched; both are on one
    file system (ghosts are hard links).
  * The cut is total: after it, every file holds its durable bytes
    (plus, for `torn`, a seeded part of its unsynced writes, appends and
    overwrites alike: a preallocated WAL writes into its own zeros), and every
    directory its durable names; what is not durable is deleted.
  * Caller serialises: one thread at a time (the FS holds a mutex).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DataUndo:
    """One inode's undo record: its durable size and the durable bytes overwritten since."""

    durable_size: int
    saved: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, old bytes), oldest first
    shrunk: bool = False  # truncated below durable_size since: the cut restores it whole


@dataclass
class NameUndo:
    """One directory's durable listing, and the directories a rename tied to it."""

    listing: dict[str, int]  # name -> inode number as of the last fsync
    tied: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class CutReport:
    """What a cut did (for the control socket and the tests)."""

    files_restored: int
    bytes_dropped: int
    bytes_kept_torn: int
    names_removed: int
    names_restored: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Journal:
    def __init__(self, backing: Path, state: Path) -> None:
        self.backing = backing
        self.state = state
        self.ghosts = state / "ghosts"
        self.limbo = state / "limbo"
        for d in (self.ghosts, self.limbo):
            d.mkdir(parents=True, exist_ok=True)
        self.data: dict[int, DataUndo] = {}
        self.names: dict[int, NameUndo] = {}

    # ------------------------------------------------------------ data

    def before_write(self, fd: int, offset: int, length: int) -> None:
        """Save the durable bytes [offset, offset+length) is about to overwrite."""
        st = os.fstat(fd)
        undo = self._data(st)
        end = min(offset + length, undo.durable_size)
        if offset < end:
            undo.saved.append((offset, os.pread(fd, end - offset, offset)))

    def before_truncate(self, fd: int, length: int) -> None:
        st = os.fstat(fd)
        undo = self._data(st)
        if length < undo.durable_size:
            undo.saved.append((length, os.pread(fd, undo.durable_size - length, length)))
            undo.shrunk = True

    def created(self, ino: int) -> None:
        """A new file: nothing of it is durable (also resets a reused inode number)."""
        self.data[ino] = DataUndo(0)

    def synced(self, ino: int) -> None:
        self.data.pop(ino, None)

    def _data(self, st: os.stat_result) -> DataUndo:
        undo = self.data.get(st.st_ino)
        if undo is None:
            undo = self.data[st.st_ino] = DataUndo(st.st_size)
        return undo

    # ------------------------------------------------------------ names

    def before_change(self, directory: Path) -> None:
        """Snapshot a directory's listing before its first change since its last fsync."""
        ino = os.lstat(directory).st_ino
        if ino not in self.names:
            self.names[ino] = NameUndo({e.name: e.inode() for e in os.scandir(directory)})

    def before_remove(self, path: Path) -> None:
        """`path` is about to be unlinked or replaced: keep a durable file's inode as a ghost."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        self.before_change(path.parent)
        durable = self.names[os.lstat(path.parent).st_ino].listing.get(path.name) == st.st_ino
        if durable and not stat.S_ISDIR(st.st_mode):
            ghost = self.ghosts / str(st.st_ino)
            if not ghost.exists():
                os.link(path, ghost, follow_symlinks=False)
        elif st.st_nlink <= 1 and not stat.S_ISDIR(st.st_mode):
            self.data.pop(st.st_ino, None)  # gone for good: its number may be reused

    def made_dir(self, path: Path) -> None:
        """A new directory: none of its names is durable yet."""
        self.names[os.lstat(path).st_ino] = NameUndo({})

    def tie(self, a: Path, b: Path) -> None:
        ia, ib = os.lstat(a).st_ino, os.lstat(b).st_ino
        if ia != ib:
            self.names[ia].tied.add(ib)
            self.names[ib].tied.add(ia)

    def dir_synced(self, directory: Path) -> None:
        todo = [os.lstat(directory).st_ino]
        while todo:
            undo = self.names.pop(todo.pop(), None)
            if undo is not None:
                todo.extend(undo.tied)

    # ------------------------------------------------------------ the cut

    def pending(self) -> dict[str, int]:
        return {"files": len(self.data), "directories": len(self.names),
                "ghosts": sum(1 for _ in self.ghosts.iterdir())}

    def cut(self, seed: int | None = None, reorder: bool = False) -> CutReport:
        """Roll the backing directory back to what a disk holds after losing power now.
        Without a seed every unsynced write is lost. With a seed (`torn`), each file keeps
        its unsynced writes below a random offset (written in file order, as a log writes);
        with `reorder` too (`reorder SEED`), each PAGE-sized page of them is kept or lost at
        random (pages written out of order, as file systems without ordered data may leave
        them). An appended file ends after its last kept page; lost pages before it read as
        zeros, and lost overwrites read as the old bytes."""
        rng = random.Random(seed) if seed is not None else None
        where = self._paths_by_inode()
        restored = dropped = kept = 0
        for ino, undo in self.data.items():
            path = where.get(ino)
            if path is None or not path.is_file():
                continue  # no name left anywhere: the inode is gone with its last name
            restored += 1
            with open(path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                changed = unsynced_ranges(undo, size)
                if rng is None or undo.shrunk:
                    lost = changed
                elif reorder:
                    lost = lost_pages(rng, changed)
                else:
                    lost = lost_above(torn_offset(rng, changed), changed)
                n_changed, n_lost = _length(changed), _length(lost)
                kept += n_changed - n_lost
                dropped += n_lost
                _roll_back(f.fileno(), undo, size, lost)
        removed, relinked = self._restore_names()
        self.data.clear()
        self.names.clear()
        for d in (self.ghosts, self.limbo):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        return CutReport(restored, dropped, kept, removed, relinked)

    def _paths_by_inode(self) -> dict[int, Path]:
        """One path for every inode reachable in backing, limbo or ghosts (backing first)."""
        out: dict[int, Path] = {}
        for top in (self.backing, self.ghosts, self.limbo):
            for root, dirs, files in os.walk(top):
                for name in dirs + files:
                    p = Path(root) / name
                    out.setdefault(os.lstat(p).st_ino, p)
            out.setdefault(os.lstat(top).st_ino, top)
        return out

    def _dirs_by_inode(self) -> dict[int, Path]:
        out = {os.lstat(self.backing).st_ino: self.backing}
        for root, dirs, _ in os.walk(self.backing):
            for name in dirs:
                p = Path(root) / name
                out[os.lstat(p).st_ino] = p
        return out

    def _restore_names(self) -> tuple[int, int]:
        removed = relinked = 0
        # 1. every name that is not durable goes to limbo (its subtree with it)
        dirs = self._dirs_by_inode()
        serial = 0
        for ino, undo in self.names.items():
            d = dirs.get(ino)
            if d is None:
                continue  # the directory itself went to limbo with its parent's names
            for entry in list(os.scandir(d)):
                if undo.listing.get(entry.name) != entry.inode():
                    serial += 1
                    os.rename(entry.path, self.limbo / f"{serial}-{entry.name}")
                    removed += 1
        # 2. every durable name that is missing is linked (or, a directory, moved) back
        where = self._paths_by_inode()
        dirs = self._dirs_by_inode()
        for ino, undo in self.names.items():
            d = dirs.get(ino)
            if d is None:
                continue
            for name, target in undo.listing.items():
                dest = d / name
                if os.path.lexists(dest):
                    continue
                src = where.get(target)
                if src is None:
                    continue  # a durable directory removed for good: not modelled (see the package docs)
                relinked += 1
                if stat.S_ISDIR(os.lstat(src).st_mode):
                    os.rename(src, dest)  # its whole subtree moves: look everything up again
                    where, dirs = self._paths_by_inode(), self._dirs_by_inode()
                else:
                    os.link(src, dest, follow_symlinks=False)
                    where[target] = dest
        return removed, relinked


PAGE = 4096


Ranges = list[tuple[int, int]]  # [start, end) byte ranges of a file, sorted, disjoint


def unsynced_ranges(undo: DataUndo, size: int) -> Ranges:
    """The bytes written since the last fsync: durable ranges overwritten, and the appended tail."""
    spans = sorted([(o, o + len(old)) for o, old in undo.saved] + [(undo.durable_size, max(size, undo.durable_size))])
    out: Ranges = []
    for a, b in spans:
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def torn_offset(rng: random.Random, ranges: Ranges) -> int:
    """A random offset splitting the unsynced bytes: those below it reached the disk."""
    k = rng.randint(0, _length(ranges))
    for a, b in ranges:
        if k <= b - a:
            return a + k
        k -= b - a
    return ranges[-1][1] if ranges else 0


def lost_above(offset: int, ranges: Ranges) -> Ranges:
    return [(max(a, offset), b) for a, b in ranges if b > offset]


def lost_pages(rng: random.Random, ranges: Ranges) -> Ranges:
    """The unsynced bytes lost when each PAGE of them (file offsets, PAGE-aligned) reached
    the disk or not at random."""
    lost: Ranges = []
    for a, b in ranges:
        start = a
        while start < b:
            end = min(b, (start // PAGE + 1) * PAGE)
            if rng.random() >= 0.5:
                if lost and lost[-1][1] == start:
                    lost[-1] = (lost[-1][0], end)
                else:
                    lost.append((start, end))
            start = end
    return lost


def _length(ranges: Ranges) -> int:
    return sum(b - a for a, b in ranges)


def _roll_back(fd: int, undo: DataUndo, size: int, lost: Ranges) -> None:
    """Undo the `lost` unsynced bytes of an inode: an appended tail ends after its last kept
    byte (earlier lost bytes of it read as zeros), lost overwrites get their old bytes back."""
    durable = undo.durable_size
    end = durable
    for a, b in subtract([(durable, size)] if size > durable else [], lost):
        end = max(end, b)
    os.ftruncate(fd, end)
    for a, b in lost:
        if b > durable and a < end:
            os.pwrite(fd, bytes(min(b, end) - max(a, durable)), max(a, durable))
    for offset, old in reversed(undo.saved):  # the oldest save is the durable byte
        for a, b in lost:
            lo, hi = max(a, offset), min(b, offset + len(old))
            if lo < hi:
                os.pwrite(fd, old[lo - offset:hi - offset], lo)


def subtract(ranges: Ranges, cut: Ranges) -> Ranges:
    """The parts of `ranges` outside `cut`."""
    out: Ranges = []
    for a, b in ranges:
        pieces = [(a, b)]
        for c, d in cut:
            pieces = [p for x, y in pieces for p in ((x, min(y, c)), (max(x, d), y)) if p[0] < p[1]]
        out.extend(pieces)
    return out
