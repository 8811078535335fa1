"""A file system that forgets what was not fsynced: power cuts for real processes.

SIGKILL cannot show a missing fsync (the page cache survives a killed
process). Mounted over a node's data directory, this FUSE file system
(fusepy on libfuse2) writes every call through to a backing directory and
keeps an undo journal of everything not yet durable (journal.py); `cut`
rolls the backing directory back to what a disk holds after losing power,
`torn SEED` also keeps a random prefix of each file's unsynced appends.
Modules: journal.py (the model), fs.py (the FUSE operations), control.py
(the control socket), mount.py (mount, cut, unmount with fallbacks),
__main__.py (the daemon). The design and its measurements: POWERCUT.md.

Where it is stricter than ext4 (it loses more; a correct program survives both):
  * everything since the last fsync of an inode is lost; ext4 commits its
    journal about every 5 s and writes data back after about 30 s;
  * a new or renamed name is lost unless its directory is fsynced (as
    fsync(2) says); ext4 usually persists a new file's name with the file;
  * a file renamed over another without fsyncing it first comes back empty
    or old; ext4's auto_da_alloc usually saves it;
  * sync() and syncfs() never reach FUSE: they make nothing durable here.
Where it is looser (it loses less than a real disk may):
  * a plain cut never tears or reorders data, never zeroes blocks; `torn`
    only cuts unsynced appends to a prefix; `reorder SEED` (not used by the
    nemesis) keeps or zeroes each 4 KiB page of them at random, as a file
    system without ordered data may (ext4's default data=ordered does not);
  * chmod, chown, utimes and xattrs are never undone, and a durable
    directory that was removed is not recreated;
  * no fsync EIO, no ENOSPC, no bit rot;
  * the journal is in the daemon's memory: if the daemon dies, everything
    written so far becomes durable;
  * the backing files are not fsynced unless --real-fsync (the host never
    loses power, so only the journal's view of durability matters).
"""
