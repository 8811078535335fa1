"""The README's tour, run as a script against `zrep cluster up` on free ports.

It also holds the tour to what the README says around it: the tour writes
nothing into the folder it runs in (the restarted node's log goes to
$TMPDIR), and Ctrl-C of `cluster up` stops its own nodes and names, with its
pid, the one the tour restarted by hand.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import free_ports

from zrep.config import write_config

ROOT = Path(__file__).resolve().parents[2]


def python_example(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- python:{name}:start -->\s*```python\n(.*?)```\s*<!-- python:{name}:end -->", text, re.S)
    assert block, f"README.md lost its python:{name} example"
    return block.group(1)


def test_readme_python_examples_run_as_written(make_cluster, tmp_path):
    cluster = make_cluster()
    cluster.wait_for_leader()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cluster.toml").symlink_to(cluster.config_path)  # the path the examples name
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outputs = {}
    for name in ("blocking", "async"):
        proc = subprocess.run([sys.executable, "-c", python_example(name)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs[name] = proc.stdout
    blocking = outputs["blocking"].splitlines()
    assert blocking[0].startswith("stored at offset 0 on nodes ")
    assert blocking[1] == "0 me hello from Python" and blocking[2] == "1 - bulk 0" and blocking[101] == "100 - bulk 99"
    assert blocking[-1] == "[('alice', 101)]"
    assert outputs["async"].splitlines() == ["100 sent concurrently", "watched up to 99"]


def tour_script() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour:start -->\s*```sh\n(.*?)```\s*<!-- tour:end -->", text, re.S)
    assert block, "README.md lost its tour block"
    return block.group(1)


def status(env: dict[str, str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "zrep", "client", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.stdout.strip() else []


def wait_until(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def kill_everything_of(cfg_path: Path) -> None:
    """Last resort: no process started for this config may outlive the test."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(cfg_path) in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_readme_tour_runs_as_written(tmp_path):
    ports = free_ports("127.0.0.1", 6, set())
    cfg_path = tmp_path / "cluster.toml"
    write_config({
        "cluster": {"heartbeat_ms": 50, "election_timeout_ms": 500, "data_dir": "data"},
        "nodes": [{"id": i + 1, "rpc": f"tcp://127.0.0.1:{ports[i]}", "pub": f"tcp://127.0.0.1:{ports[i + 3]}"}
                  for i in range(3)],
    }, cfg_path)
    tour_dir, tour_tmp = tmp_path / "repo", tmp_path / "tmp"
    tour_dir.mkdir()
    tour_tmp.mkdir()
    env = dict(os.environ, ZREP_CONFIG=str(cfg_path), PYTHONUNBUFFERED="1", TMPDIR=str(tour_tmp))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    up = subprocess.Popen([sys.executable, "-m", "zrep", "cluster", "up", "--config", str(cfg_path)],
                          cwd=tmp_path, env=env, stdout=open(tmp_path / "up.log", "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
    tour = None
    try:
        wait_until("a leader", lambda: any(n.get("role") == "leader" for n in status(env)), 30)
        script = tour_script().replace('export PATH="$PWD/.venv/bin:$PATH"', ":")
        tour = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tour_dir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        out, _ = tour.communicate(timeout=120)
        assert tour.returncode == 0, out
        assert out.count("sent to alice") == 3, out
        for body in ("hello, alice", "on every node's disk before the answer", "sent while the old leader is dead"):
            assert body in out
        # The restarted old leader catches up: all three nodes up with equal logs.
        def converged() -> bool:
            rows = status(env)
            return len(rows) == 3 and all(r["up"] for r in rows) and len({(r["last_index"], r["applied"])
                                                                          for r in rows}) == 1
        wait_until("the old leader to catch up", converged, 30)
        assert list(tour_dir.iterdir()) == [], "the tour wrote into the folder it ran in"
        (node_log,) = tour_tmp.glob("zrep-node-*.log")
        restarted = int(node_log.stem.rsplit("-", 1)[1])
        # Ctrl-C in terminal 1: its own nodes stop; the one restarted by hand is named with its pid.
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=30) == 1  # the tour killed a node it started
        said = (tmp_path / "up.log").read_text()
        assert "all nodes stopped" in said
        assert f"still running, not started by this runner: node {restarted} (pid " in said, said
    finally:
        if tour is not None and tour.poll() is None:
            os.killpg(tour.pid, signal.SIGKILL)
        if tour is not None:
            try:
                os.killpg(tour.pid, signal.SIGTERM)  # the restarted node runs in the tour's group
            except ProcessLookupError:
                pass
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        kill_everything_of(cfg_path)
