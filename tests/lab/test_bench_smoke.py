"""Smoke runs of the root benchmarks (tiny sizes), so they do not rot."""

from __future__ import annotations

import pytest

from tests.support.processes import bench_rows

pytestmark = pytest.mark.root  # checked by tests/conftest.py


def test_lab_benchmark_smoke() -> None:
    (row,) = bench_rows("lab.py", "10.78.0.0/20", timeout=600)
    assert row[2] == "2 / 2"  # found every live node
    assert row[-1] == "0"  # no neighbour-table overflow


def test_discovery_benchmark_smoke() -> None:
    rows = bench_rows("discovery.py", "/2", timeout=600)  # /24 and /22, every tool
    assert len(rows) == 10
    for row in rows:
        assert row[6] == "10 / 10", row  # every live node found
        assert row[-1] == "0", row  # no neighbour-table overflow


def test_footprint_benchmark_smoke() -> None:
    (row,) = bench_rows("footprint.py", "/24", timeout=300)
    assert float(row[2]) < 100  # a share of one core, measured
    assert row[-1] == "0"


def test_hot_sweep_benchmark_smoke() -> None:
    (row,) = bench_rows("hot.py", "hot sweeps", timeout=300)
    assert row[2].startswith("0 of ")  # no failed request while nodes joined
    assert row[7] == "yes"
    assert row[-1] == "0"


def test_services_benchmark_smoke() -> None:
    rows = {row[1]: row for row in bench_rows("services.py", "/24", timeout=300)}
    both = rows["2 services, one sweep (web :3000 + api :3001)"]
    assert both[4] == "web 10, api 5"  # the bench itself fails on a miss or an overflow
    assert "of two sweeps' wall" in both[5]


def test_members_benchmark_smoke() -> None:
    # 400 members on a /23: below the size that needs a larger neighbour table, which a
    # test inside the suite's private namespace could not raise.
    (row,) = bench_rows("members.py", "400", timeout=600)
    assert row[1] == "HAProxy's (default)"
    assert row[2] == "/23"
    assert float(row[4]) < 10  # % of a core at rest
    assert row[-2] == "0"  # no member missed, no killed one still served
    assert row[-1] == "0"  # no neighbour-table overflow


def test_failover_benchmark_smoke() -> None:
    rows = {row[0]: row for row in bench_rows("failover.py", "", timeout=300)}
    del rows["advert_int"]  # the header
    assert set(rows) == {"1 s", "0.2 s"}
    for row in rows.values():
        assert row[1] == "1"  # failovers
        over, back = (float(cell.split(" / ")[0]) for cell in (row[2], row[3]))
        assert over > 0  # the backup answered on the floating address (nan otherwise)
        assert back > 0  # and the first took it back
