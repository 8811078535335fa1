"""One exit-code table: the README, `zrep --help` and `zrep node --help` all show zrep.exit_codes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from zrep import exit_codes
from zrep.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_the_module_table():
    assert exit_codes.markdown_table() in README.read_text()


def _listed(help_text: str) -> dict[int, str]:
    tail = help_text.split("Exit codes:", 1)[1]
    rows = [line.strip().split(maxsplit=1) for line in tail.splitlines() if line.strip()[:1].isdigit()]
    return {int(code): " ".join(text.split()) for code, text in rows}


def test_the_client_help_lists_every_client_code():
    out = CliRunner().invoke(main, ["client", "--help"], terminal_width=400).output
    assert _listed(out) == {c: t.replace("`", "") for c, t in exit_codes.CLIENT_CODES.items()}


def test_the_node_help_lists_every_node_code_9_included():
    out = CliRunner().invoke(main, ["node", "--help"], terminal_width=400).output
    assert _listed(out) == {c: t.replace("`", "") for c, t in exit_codes.NODE_CODES.items()}
    assert max(_listed(out)) == exit_codes.NODE_REMOVED == 9


def test_both_node_command_lines_exit_2_on_a_missing_config(tmp_path):
    import subprocess
    import sys

    missing = str(tmp_path / "nope.toml")
    for argv in (["-m", "zrep.node", "--config", missing, "--id", "1"], ["-m", "zrep", "node", "--config", missing, "--id", "1"]):
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == exit_codes.NODE_USAGE, proc.stderr
        assert "nope.toml" in proc.stderr
