"""Imports only point down (DESIGN section 2): a short AST check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "zrep"
WORLD = {"zmq", "os", "time", "socket", "threading", "subprocess", "signal", "select", "asyncio"}

# module (or package prefix) -> top-level modules it must never import
RULES = {
    "core": WORLD | {"zrep.node.loop", "zrep.node.transport", "zrep.storage.wal", "zrep.client", "zrep.cli", "zrep.sim"},
    "sim": WORLD | {"zrep.node.loop", "zrep.node.transport", "zrep.storage.wal", "zrep.client", "zrep.cli"},
    "store/store.py": WORLD | {"random"},
    "service/pending.py": WORLD | {"random"},
    "service/service.py": WORLD | {"random", "zrep.storage.wal", "zrep.node.transport"},
    "service/apply.py": WORLD,
    "store/commands.py": WORLD | {"random"},
}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    pkg = "zrep." + ".".join(path.relative_to(PKG).parts[:-1]) if len(path.relative_to(PKG).parts) > 1 else "zrep"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
    return names


def files_for(rule: str) -> list[Path]:
    target = PKG / rule
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_imports_point_down(rule):
    banned = RULES[rule]
    for path in files_for(rule):
        for name in imported(path):
            hit = [b for b in banned if name == b or name.startswith(b + ".")]
            assert not hit, f"{path.relative_to(PKG.parent)} imports {name}"
