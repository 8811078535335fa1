"""`zrep dashboard` in a real browser: headless Chromium (Selenium) watches a real cluster fail over.

Skips, saying why, when Chromium, chromedriver or Selenium is missing (.ci/run
installs Debian's chromium and chromium-driver). Set ZREP_DASHBOARD_SCREENSHOT
to a path to keep the screenshot taken after the failover (docs/dashboard.png).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from harness import LocalCluster, free_ports, wait_until
from test_metrics import get, metrics_cluster

MakeCluster = Callable[..., LocalCluster]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium or chromedriver not found: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver) to run the dashboard's browser test")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]' to run the dashboard's browser test")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _page(driver) -> dict:  # type: ignore[no-untyped-def]
    """What the page shows now: leader text, each card's role and up flag, the timeline's (event, node)."""
    return driver.execute_script("""
        return {leader: document.getElementById('leader').textContent,
                cards: [...document.querySelectorAll('#nodes .card')].map(c =>
                    [Number(c.dataset.node), c.dataset.role, c.dataset.up === 'true']),
                events: [...document.querySelectorAll('#timeline li')].map(li =>
                    [li.dataset.event, Number(li.dataset.node)]),
                mailboxes: document.querySelectorAll('#mailboxes tbody tr').length,
                chart: document.querySelectorAll('#chart polyline').length};""")


def test_the_page_shows_the_cluster_and_a_failover_within_seconds(make_cluster: MakeCluster, tmp_path: Path) -> None:
    c = metrics_cluster(make_cluster)
    old = c.wait_for_leader()
    (port,) = free_ports("127.0.0.1", 1, set())
    url = f"http://127.0.0.1:{port}"
    dash = subprocess.Popen([sys.executable, "-m", "zrep", "dashboard", "--config", str(c.config_path),
                             "--listen", url], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dashboard.log", "wb"))
    driver = None
    try:
        driver = _browser(tmp_path)
        for seq in range(1, 41):
            c.send("dash", seq, f"box-{seq % 3}", b"hello")
        wait_until("the dashboard serves its page", lambda: _up(url), timeout=15)
        driver.get(url + "/")
        shown = wait_until("the page shows three nodes, the leader, writes and mailboxes", lambda: (lambda p: p if (
            sorted(n for n, _, _ in p["cards"]) == list(c.ids) and p["leader"] == f"node {old}"
            and (old, "leader", True) in [tuple(x) for x in p["cards"]] and p["mailboxes"] == 3 and p["chart"] >= 1
        ) else None)(_page(driver)), timeout=15)
        assert sum(1 for _, role, _ in shown["cards"] if role == "leader") == 1

        c.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        after = wait_until("the page shows a new leader, the old one down, and the failover in the timeline",
                           lambda: (lambda p: p if (
                               p["leader"] not in ("", "none", f"node {old}")
                               and [old, "down", False] in p["cards"]
                               and any(e == "leader_lost" for e, _ in p["events"])
                               and any(e == "election_won" and n != old for e, n in p["events"])
                           ) else None)(_page(driver)), timeout=20)
        took = time.monotonic() - killed
        new = int(after["leader"].split()[-1])
        assert new != old and [new, "leader", True] in after["cards"]
        assert any(e == "election_won" and n == new for e, n in after["events"])
        print(f"dashboard: failover of node {old} shown (new leader {new}) {took:.1f} s after the kill")
        assert took < 15
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        keep = os.environ.get("ZREP_DASHBOARD_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(dash.pid, signal.SIGTERM)
        try:
            dash.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(dash.pid, signal.SIGKILL)
            dash.wait()


def _up(url: str) -> bool:
    try:
        return get(url + "/api/state", timeout=1)[0] == 200
    except OSError:
        return False
