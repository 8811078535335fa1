"""zrep.local.processes: children in their own groups, stopped politely, killed when they will not stop."""

from __future__ import annotations

import os
import signal
import sys
import time

from zrep.local.processes import kill_all, signal_group, spawn, stop

# A child that starts a grandchild in its group and prints the grandchild's pid.
PARENT = "import subprocess,sys,time; c=subprocess.Popen(['sleep','60']); print(c.pid, flush=True); time.sleep(60)"
STUBBORN = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_a_child_leads_its_own_group_and_stop_reaches_its_children():
    p = spawn([sys.executable, "-c", PARENT], stdout=-1)
    grandchild = int(p.stdout.readline())
    assert os.getpgid(p.pid) == p.pid != os.getpgid(0)
    codes = stop([p], grace_s=10)
    assert codes == {p.pid: -signal.SIGTERM}
    assert _wait_gone(grandchild)  # sleep got the group's SIGTERM too
    p.stdout.close()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    p = spawn([sys.executable, "-c", STUBBORN], stdout=-1)
    assert p.stdout.readline() == b"ready\n"
    killed = []
    started = time.monotonic()
    codes = stop([p], grace_s=0.3, on_kill=killed.append)
    assert codes == {p.pid: -signal.SIGKILL} and killed == [p]
    assert time.monotonic() - started < 10
    p.stdout.close()


def test_kill_all_takes_paused_children_and_gone_ones_are_no_error():
    paused = spawn(["sleep", "60"])
    gone = spawn(["true"])
    gone.wait(10)
    assert signal_group(paused, signal.SIGSTOP)
    kill_all([paused, gone])
    assert paused.returncode == -signal.SIGKILL and gone.returncode == 0
    assert not signal_group(gone, signal.SIGTERM)
