"""Start modes of a fresh data directory: --init founds, --join waits as an observer, neither refuses;
an identity, once written, decides every later start (the flags are ignored)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from test_node_observe import one_node

from zrep.core.membership import Config
from zrep.node.start import EXIT_NO_MODE, EXIT_OK, base_config, run_node, seed_config
from zrep.storage.identity import Identity, read_identity


def _run(cfg: Any, mode: str | None, until: str, seconds: float = 5.0) -> tuple[int, list[str]]:
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    code = run_node(cfg, 1, log=lines.append, mode=mode,
                    stopping=lambda: any(until in line for line in lines) or time.monotonic() > deadline)
    return code, lines


def test_a_fresh_directory_without_a_mode_refuses_with_one_line(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=False)
    code, lines = _run(cfg, None, "never")
    assert code == EXIT_NO_MODE == 8
    assert len(lines) == 1 and "--init" in lines[0] and "--join" in lines[0], lines
    assert not cfg.node_data_dir(1).exists() or not any(cfg.node_data_dir(1).iterdir())  # nothing written


def test_init_founds_and_the_identity_survives_restarts_whatever_the_flag(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=False)
    code, lines = _run(cfg, "init", "is leader")
    assert code == EXIT_OK and any("is leader" in line for line in lines), lines
    first = read_identity(cfg.node_data_dir(1))
    assert first is not None and first.mode == "init"
    code, lines = _run(cfg, "join", "is leader")  # ignored: the directory has its identity
    assert code == EXIT_OK and any("is leader" in line for line in lines), lines
    assert read_identity(cfg.node_data_dir(1)) == first
    assert any(f"incarnation {first.incarnation:x} (init)" in line for line in lines)


def test_join_waits_as_an_observer_that_never_leads(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=False)
    code, lines = _run(cfg, "join", "is leader", seconds=1.5)  # 50 election timeouts
    assert code == EXIT_OK
    assert not any("is leader" in line or "election" in line for line in lines), lines
    assert read_identity(cfg.node_data_dir(1)).mode == "join"


def test_the_base_configuration_by_mode(tmp_path: Path) -> None:
    cfg = one_node(tmp_path, metrics=False)
    seeds = seed_config(cfg)
    assert seeds.provisional and seeds.ids == (1,) and seeds.member(1).rpc == cfg.node(1).rpc
    assert base_config(cfg, Identity(5, "init"), None) == seeds
    assert base_config(cfg, Identity(5, "join"), None) == Config(0, ())
