"""The layers, as files: `poller scan` stays a cheap one-shot (the CLI does not import the
daemon's machinery), and only the CLI decides exit codes. Import directions are
import-linter's (`make lint`, contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

POLLER = Path(__file__).resolve().parents[2] / "poller"


def test_cli_import_leaves_out_scheduler_metrics_and_templates() -> None:
    code = (
        "import sys, poller.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'apscheduler', 'prometheus_client', 'jinja2'}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_only_the_cli_exits() -> None:
    """No `sys.exit`, `SystemExit`, `os._exit` or `exit()` below the CLI: errors travel up as
    PollerError and the CLI maps them to exit codes."""
    found = []
    for path in POLLER.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = ""
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            if name in ("exit", "_exit", "SystemExit", "quit"):
                found.append(f"{path.relative_to(POLLER)}:{node.lineno}: {name}")
    assert found == []
