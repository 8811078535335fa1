"""The power-cut file system keeps what fsync made durable and loses the rest (real FUSE mounts).

The cases of POWERCUT.md: (a) unsynced appends are gone, with a new file's name; (b) fsynced
ones are byte-exact; (b') a new file needs its directory fsynced; (c1-c4) renames; (d) SIGKILL
alone loses nothing; overwrite, truncate, unlink and mkdir are undone; O_SYNC is kept; `torn`
keeps a prefix; flock still excludes; the unmount fallbacks. Skipped, with the reason, where
/dev/fuse, root, fusermount or fusepy is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from zrep.chaos.powerfs.mount import PowerMount, holders, unavailable

WHY = unavailable()
pytestmark = [pytest.mark.skipif(bool(WHY), reason=f"power-cut file system unavailable: {WHY}"),
              pytest.mark.processes]  # real mounts and daemons: not in the quick loop
RECORD = 100
COUNT = 1000


@pytest.fixture
def pm(tmp_path: Path) -> Iterator[PowerMount]:
    m = PowerMount(tmp_path / "pfs", tmp_path / "mnt")
    m.mount()
    try:
        yield m
    finally:
        m.unmount()
        assert not m.mounted


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def records(k: int) -> bytes:
    return f"{k:06d}".encode().ljust(RECORD - 1, b".") + b"\n"


def child_appends(path: Path, flush: str, then_wait: bool = True) -> subprocess.Popen[bytes]:
    """A child that appends COUNT records (each followed by `flush`), prints 'done', then waits."""
    code = textwrap.dedent(f"""
        import os, sys, time
        fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if {flush!r} != "none":
            d = os.open({str(path.parent)!r}, os.O_RDONLY | os.O_DIRECTORY); os.fsync(d); os.close(d)
        for k in range({COUNT}):
            os.write(fd, f"{{k:06d}}".encode().ljust({RECORD - 1}, b".") + b"\\n")
            if {flush!r} == "fsync": os.fsync(fd)
            if {flush!r} == "fdatasync": os.fdatasync(fd)
        print("done", flush=True)
        time.sleep(60 if {then_wait} else 0)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline() == b"done\n"
    return p


def sigkill(p: subprocess.Popen[bytes]) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


def test_a_unsynced_appends_and_a_new_name_are_gone(pm: PowerMount) -> None:
    f = pm.mountpoint / "log"
    sigkill(child_appends(f, "none"))
    assert f.stat().st_size == COUNT * RECORD
    report = pm.reboot()
    assert report["bytes_dropped"] == COUNT * RECORD
    assert not f.exists()


@pytest.mark.parametrize("flush", ["fsync", "fdatasync"])
def test_b_fsynced_appends_are_byte_exact(pm: PowerMount, flush: str) -> None:
    f = pm.mountpoint / "log"
    sigkill(child_appends(f, flush))
    pm.reboot()
    assert f.read_bytes() == b"".join(records(k) for k in range(COUNT))


def test_b_prime_a_new_file_needs_its_directory_fsynced(pm: PowerMount) -> None:
    write_file(pm.mountpoint / "new", b"data", sync=True)
    pm.reboot()
    assert not (pm.mountpoint / "new").exists()
    write_file(pm.mountpoint / "new", b"data", sync=True)
    fsync_dir(pm.mountpoint)
    pm.reboot()
    assert (pm.mountpoint / "new").read_bytes() == b"data"


def durable(pm: PowerMount, name: str, data: bytes) -> Path:
    path = pm.mountpoint / name
    write_file(path, data, sync=True)
    fsync_dir(path.parent)
    return path


def test_c1_rename_without_a_directory_fsync_gives_the_old_content(pm: PowerMount) -> None:
    target = durable(pm, "snap", b"old")
    write_file(pm.mountpoint / "snap.tmp", b"new", sync=True)
    os.replace(pm.mountpoint / "snap.tmp", target)
    assert target.read_bytes() == b"new"
    pm.reboot()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(pm.mountpoint)) == ["snap"]


def test_c2_rename_with_a_directory_fsync_gives_the_new_content(pm: PowerMount) -> None:
    target = durable(pm, "snap", b"old")
    write_file(pm.mountpoint / "snap.tmp", b"new", sync=True)
    os.replace(pm.mountpoint / "snap.tmp", target)
    fsync_dir(pm.mountpoint)
    pm.reboot()
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(pm.mountpoint)) == ["snap"]


def test_c3_a_file_renamed_in_before_its_fsync_comes_back_empty(pm: PowerMount) -> None:
    target = durable(pm, "snap", b"old")
    write_file(pm.mountpoint / "snap.tmp", b"new", sync=False)
    os.replace(pm.mountpoint / "snap.tmp", target)
    fsync_dir(pm.mountpoint)
    pm.reboot()
    assert target.read_bytes() == b""


def test_c4_a_rename_across_directories_is_durable_with_either_side(pm: PowerMount) -> None:
    for d in ("a", "b"):
        (pm.mountpoint / d).mkdir()
    fsync_dir(pm.mountpoint)
    src = durable(pm, "a/f", b"moved")
    os.rename(src, pm.mountpoint / "b/f")
    fsync_dir(pm.mountpoint / "b")
    pm.reboot()
    assert not src.exists()
    assert (pm.mountpoint / "b/f").read_bytes() == b"moved"


def test_d_sigkill_alone_loses_nothing_a_later_cut_does(pm: PowerMount) -> None:
    f = pm.mountpoint / "log"
    sigkill(child_appends(f, "none"))
    seen = subprocess.run([sys.executable, "-c", f"print(len(open({str(f)!r}, 'rb').read()))"],
                          capture_output=True, text=True, check=True).stdout
    assert int(seen) == COUNT * RECORD  # another process sees the page cache
    pm.unmount()  # a clean unmount is no power cut: the journal goes with the daemon
    pm.mount()
    assert f.stat().st_size == COUNT * RECORD
    write_file(pm.mountpoint / "later", b"x", sync=False)
    pm.reboot()
    assert f.stat().st_size == COUNT * RECORD  # durable since the clean remount
    assert not (pm.mountpoint / "later").exists()


def test_overwrite_truncate_and_unlink_are_undone(pm: PowerMount) -> None:
    a, b, c = (durable(pm, n, b"0123456789") for n in "abc")
    with open(a, "r+b") as f:
        f.seek(3)
        f.write(b"XXXX")
        f.seek(0, 2)
        f.write(b"tail")
    os.truncate(b, 2)
    os.truncate(b, 20)
    c.unlink()
    pm.reboot()
    assert [p.read_bytes() for p in (a, b, c)] == [b"0123456789"] * 3


def test_unsynced_mkdir_is_removed_with_its_files(pm: PowerMount) -> None:
    (pm.mountpoint / "d").mkdir()
    durable(pm, "d/inner", b"x")  # the file and its name in d are durable, d itself is not
    pm.reboot()
    assert os.listdir(pm.mountpoint) == []


def test_o_sync_writes_are_kept(pm: PowerMount) -> None:
    path = durable(pm, "s", b"")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_SYNC)
    os.write(fd, b"synced")
    os.close(fd)
    pm.reboot()
    assert path.read_bytes() == b"synced"


def test_torn_keeps_a_seeded_prefix_of_the_unsynced_appends(pm: PowerMount) -> None:
    path = durable(pm, "log", b"D" * 10)
    kept = set()
    for seed in (1, 2, 3):
        with open(path, "ab") as f:
            f.write(b"u" * 1000)
        report = pm.reboot(seed=seed)
        data = path.read_bytes()
        assert data[:10] == b"D" * 10 and set(data[10:]) <= {ord("u")}
        assert len(data) == 10 + report["bytes_kept_torn"]
        kept.add(report["bytes_kept_torn"])
        os.truncate(path, 10)
        write_file(path, b"D" * 10, sync=True)
    assert len(kept) > 1  # seeds choose different prefixes


def test_flock_excludes_a_second_process(pm: PowerMount) -> None:
    path = durable(pm, "lock", b"")
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import fcntl
            try:
                fcntl.flock(open({str(path)!r}, 'rb'), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SystemExit(7)
        """)])
    assert other.returncode == 7


def test_every_call_fails_after_a_cut_and_a_busy_mount_still_comes_down(pm: PowerMount) -> None:
    path = durable(pm, "f", b"x")
    fd = os.open(path, os.O_RDONLY)  # a holder: plain fusermount -u fails
    try:
        assert os.getpid() in holders(pm.mountpoint)
        pm.cut()
        with pytest.raises(OSError):
            os.pread(fd, 1, 0)
        pm.unmount()
        assert not pm.mounted and pm.fallbacks and pm.fallbacks[0].startswith("lazy")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # ENOTCONN: its daemon is gone
    pm.mount()
    assert path.read_bytes() == b"x"


def test_a_hung_daemon_is_aborted(pm: PowerMount) -> None:
    assert pm.daemon is not None
    os.kill(pm.daemon.pid, signal.SIGSTOP)  # hung: every request would wait forever
    try:
        pm.unmount()
    finally:
        if pm.daemon is not None:
            os.kill(pm.daemon.pid, signal.SIGCONT)
    assert not pm.mounted and pm.daemon is None


def test_a_durable_directory_renamed_away_comes_back_with_its_files(pm: PowerMount) -> None:
    (pm.mountpoint / "d").mkdir()
    fsync_dir(pm.mountpoint)
    durable(pm, "d/f", b"inside")
    os.rename(pm.mountpoint / "d", pm.mountpoint / "e")
    pm.reboot()
    assert os.listdir(pm.mountpoint) == ["d"] and (pm.mountpoint / "d/f").read_bytes() == b"inside"


def test_cleanup_unmounts_what_a_killed_run_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zrep.chaos import leftovers

    m = PowerMount(tmp_path / "pfs", tmp_path / "run" / "mnt")
    m.mount()
    try:
        monkeypatch.setattr(leftovers, "STATE_DIR", tmp_path / "state")
        monkeypatch.setattr(leftovers.netfaults, "cleanup_table", lambda: False)  # never another run's rules
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "run-dead.json").write_text(json.dumps(
            {"pid": 1, "dir": str(tmp_path / "run"), "config": "", "keep": False, "mounts": [str(m.mountpoint)]}))
        said: list[str] = []
        assert leftovers.cleanup_leftovers(said.append) == 0
        assert not m.mounted and any("unmounted" in line for line in said), said
        assert m.daemon is not None and m.daemon.wait(10) == 0  # its daemon ends with its mount
        assert not (tmp_path / "run").exists()
    finally:
        m.unmount()


def test_reorder_keeps_random_pages_of_the_unsynced_appends_and_zeroes_the_others(pm: PowerMount) -> None:
    path = durable(pm, "log", b"D" * 100)
    with open(path, "ab") as f:
        f.write(b"u" * 5 * 4096)
    pm.reboot(seed=3, reorder=True)
    data = path.read_bytes()
    assert data[:100] == b"D" * 100
    pages = [data[o:min(len(data), (o // 4096 + 1) * 4096)] for o in [100, *range(4096, len(data), 4096)]]
    assert all(set(p) in ({ord("u")}, {0}) for p in pages if len(data) > 100)
    assert set(pages[-1]) == {ord("u")}  # the file ends after a kept page
    assert [set(p) == {0} for p in pages] == [False, True, False, True, True, False]  # seed 3's draw
