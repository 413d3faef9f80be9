"""Smoke run of the lab benchmark (2 events, a /20), so it does not rot."""

from __future__ import annotations

from tests.conftest import requires_root
from tests.support.processes import bench_rows


def test_lab_benchmark_smoke() -> None:
    requires_root()
    (row,) = bench_rows("lab.py", "10.78.0.0/20", timeout=600)
    assert row[2] == "2 / 2"  # found every live node
    assert row[-1] == "0"  # no neighbour-table overflow
