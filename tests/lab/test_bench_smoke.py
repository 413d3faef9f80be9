"""Smoke run of the lab benchmark (2 events, a /20), so it does not rot."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import requires_root
from tests.support.processes import ROOT


def test_lab_benchmark_smoke() -> None:
    requires_root()
    run = subprocess.run(
        [sys.executable, "bench/lab.py", "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    wide = [line for line in run.stdout.splitlines() if line.startswith("| 10.78.0.0/20")]
    assert len(wide) == 1
    cells = [cell.strip() for cell in wide[0].strip("|").split("|")]
    assert cells[2] == "2 / 2"  # found every live node
    assert cells[-1] == "0"  # no neighbour-table overflow
