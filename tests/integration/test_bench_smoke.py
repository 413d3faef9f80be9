"""Smoke runs of the benchmarks (tiny sizes), so they do not rot between real runs."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_scan_benchmark_smoke() -> None:
    run = subprocess.run(
        [sys.executable, "bench/scan.py", "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| /28")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1] == "14"  # targets
    assert cells[-1] == "0"  # live nodes missed


def test_churn_benchmark_smoke() -> None:
    run = subprocess.run(
        [sys.executable, "bench/churn.py", "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| runtime")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1] == "2+2"  # joins + leaves
    assert cells[4] == "0"  # no reload on the runtime path


def test_status_benchmark_smoke() -> None:
    run = subprocess.run(
        [sys.executable, "bench/status.py", "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    pool = [line for line in run.stdout.splitlines() if line.startswith("| /pool")]
    assert len(pool) == 1
    assert int(pool[0].split("|")[2].strip().replace(",", "")) > 100_000  # 500 members
