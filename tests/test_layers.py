"""The architecture as a test: every import between zrep's packages against one table of allowed edges.

The table is LAYOUT section 5 (and the README's layer diagram). Each package may
import only the packages listed for it; the graph of allowed edges is acyclic;
the pure packages touch no clock, disk, socket or thread; only zrep.cli imports
click; zmq stays in node, client, local and bench. `__main__.py` files are
entry points and exempt.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "zrep"

# package -> the zrep packages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "exit_codes": set(),
    "config": {"errors", "security"},
    "security": {"errors"},
    "httpd": set(),  # the guarded stdlib HTTP server of node metrics and the dashboard
    "core": {"errors"},
    "wire": {"core", "errors"},
    "store": {"core", "wire", "errors"},  # core: which log entries are configurations
    "service": {"core", "store", "errors"},
    "storage": {"core", "store", "errors"},
    "sim": {"core", "store", "service", "errors"},
    "node": {"core", "wire", "store", "service", "storage", "config", "security", "errors", "exit_codes", "httpd"},
    "client": {"wire", "config", "security", "errors"},
    "local": {"client", "wire", "config", "security", "errors", "exit_codes"},
    "chaos": {"local", "client", "wire", "storage", "core", "config", "security", "errors"},
    "bench": {"local", "client", "aio", "wire", "storage", "core", "config", "security", "errors"},
    "dashboard": {"client", "config", "errors", "httpd"},  # reads nodes over the network only: never node
    "aio": {"client", "wire", "config", "errors"},  # zrep.aio: the asyncio client's public name
    "cli": set(),  # anything: filled in below
}
ALLOWED["cli"] = set(ALLOWED) - {"cli"}

WORLD = {"zmq", "os", "time", "socket", "select", "signal", "subprocess", "threading", "asyncio"}
PURE = {"core", "store", "service", "sim"}
ZMQ_USERS = {"node", "client", "local", "bench", "security"}


def package_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (every import is absolute)"
            names.add(node.module or "")
            if node.module == "zrep":
                names |= {f"zrep.{a.name}" for a in node.names}
    return names


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__main__.py" and p.parent != PKG or
                  (p.parent == PKG and p.name not in ("__init__.py", "__main__.py")))


def test_every_package_is_in_the_table():
    assert {package_of(p) for p in modules()} <= set(ALLOWED)


def test_the_table_is_acyclic():
    try:
        tuple(TopologicalSorter(ALLOWED).static_order())
    except CycleError as e:  # pragma: no cover - the message is the point
        pytest.fail(f"allowed imports form a cycle: {e.args[1]}")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_table(path: Path):
    pkg = package_of(path)
    for name in imports(path):
        parts = name.split(".")
        if parts[0] == "zrep" and len(parts) > 1:
            target = parts[1]
            assert target == pkg or target in ALLOWED[pkg], f"{path.relative_to(PKG)}: {pkg} may not import {name}"
        if pkg in PURE:
            assert parts[0] not in WORLD, f"{path.relative_to(PKG)}: pure package {pkg} imports {name}"
        if pkg == "core":
            assert parts[0] in {"zrep", "__future__"} or _stdlib(parts[0]), f"core imports third-party {name}"
        if parts[0] == "click":
            assert pkg == "cli", f"{path.relative_to(PKG)}: only zrep.cli imports click"
        if parts[0] == "zmq":
            assert pkg in ZMQ_USERS, f"{path.relative_to(PKG)}: {pkg} may not import zmq"


def _stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names


def test_the_check_sees_a_wrong_edge(tmp_path: Path):
    """The rule itself can fail: a client module importing the store is refused."""
    bad = tmp_path / "bad.py"
    bad.write_text("from zrep.store.store import Store\n")
    target = imports(bad).pop().split(".")[1]
    assert target not in ALLOWED["client"]
