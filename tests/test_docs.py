"""The docs the README links to exist, and the commands and paths they show still work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def test_every_link_in_the_readme_to_a_local_file_resolves():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)\)", text)
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_doc_names_exists(doc: Path):
    text = doc.read_text()
    paths = set(re.findall(r"`((?:zrep|tests|bin|config|bench|docs)/[\w/.-]*\w)`", text))
    modules = set(re.findall(r"python -m (zrep[\w.]*)", text))
    missing = [p for p in paths if not (ROOT / p.split(":")[0]).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"
    for mod in modules:
        spec = subprocess.run([sys.executable, "-c", f"import importlib.util,sys; "
                               f"sys.exit(importlib.util.find_spec('{mod}') is None)"], cwd=ROOT)
        assert spec.returncode == 0, f"{doc.name}: python -m {mod}: no such module"


@pytest.mark.parametrize("command", [
    ["zrep", "sim", "--seeds", "0:3"],
    ["zrep", "verify", "--help"],
    ["zrep", "log", "inspect", "--help"],
    ["zrep", "bench", "--help"],
    ["zrep", "chaos", "--help"],
    ["zrep", "keys", "--help"],
    ["zrep", "admin", "--help"],
    ["zrep", "admin", "inspect", "--help"],
    ["zrep", "admin", "transfer-leader", "--help"],
    ["zrep", "admin", "force-new-cluster", "--help"],
    ["zrep", "chaos", "--membership", "--help"],
])
def test_the_commands_the_docs_show_run(command: list[str]):
    proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
