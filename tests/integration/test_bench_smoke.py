"""Smoke runs of the benchmarks (tiny sizes), so they do not rot between real runs."""

from __future__ import annotations

from tests.support.processes import bench_rows


def test_scan_benchmark_smoke() -> None:
    (row,) = bench_rows("scan.py", "/28", timeout=120)
    assert row[1] == "14"  # targets
    assert row[-1] == "0"  # live nodes missed


def test_churn_benchmark_smoke() -> None:
    (row,) = bench_rows("churn.py", "runtime", timeout=300)
    assert row[1] == "2+2"  # joins + leaves
    assert row[4] == "0"  # no reload on the runtime path


def test_status_benchmark_smoke() -> None:
    (row,) = bench_rows("status.py", "/pool", timeout=120)
    assert int(row[1].replace(",", "")) > 100_000  # 500 members in the document
