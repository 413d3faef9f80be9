"""Smoke runs of the benchmarks (tiny sizes), so they do not rot between real runs."""

from __future__ import annotations

import os

from tests.support.processes import bench_rows


def test_scan_benchmark_smoke() -> None:
    (row,) = bench_rows("scan.py", "/28", timeout=120)
    assert row[1] == "14"  # targets
    assert row[-1] == "0"  # live nodes missed


def test_churn_benchmark_smoke() -> None:
    rows = {row[0]: row for row in bench_rows("churn.py", "", timeout=300)}
    assert rows["runtime"][1] == "2+2"  # joins + leaves
    assert rows["runtime"][4] == "0"  # no reload on the runtime path
    assert rows["restart"][1] == "2+2"
    assert rows["restart"][4] == "4"  # the push lab's way: a restart per join and leave


def test_status_benchmark_smoke() -> None:
    rows = [row for row in bench_rows("status.py", "", timeout=300) if row[0] in ("500", "2,000")]
    pool = {row[0]: row for row in rows if len(row) == 6 and row[1] == "/pool"}
    assert int(pool["500"][2].replace(",", "")) > 100_000  # 500 members in the document
    assert int(pool["2,000"][2].replace(",", "")) > 400_000
    page = {row[0]: row for row in rows if len(row) == 4}
    require_browser = page or os.environ.get("CI") != "true"
    assert require_browser, "the page was not timed in Chromium (.ci/run installs it)"
    if page:
        assert page["2,000"][3] == "500"  # thousands of members: 500 rows drawn at most
        assert page["500"][3] == "500"


def test_slowstart_benchmark_smoke() -> None:
    rows = {row[0]: row for row in bench_rows("slowstart.py", "", timeout=180)}
    off, on = rows["off (default)"], rows["slowstart_seconds: 5"]
    assert float(off[1]) > 15  # its share at once (a fair share is 25 %)
    assert float(on[1]) < float(off[1])  # ramped up instead
    assert off[-1].startswith("0 of ")
    assert on[-1].startswith("0 of ")


def test_drain_benchmark_smoke() -> None:
    rows = {row[0]: row for row in bench_rows("drain.py", "", timeout=300)}
    closed, failing = rows["listener closed (the reference app)"], rows["check answers 404"]
    for row in (closed, failing):
        p50 = float(row[2].split(" / ")[0])
        assert 0 < p50 < 2000  # HAProxy stopped sending it requests within its checks' time
        assert row[3].startswith("0 of ")  # and no request failed either way


def test_retries_benchmark_smoke() -> None:
    rows = {row[0]: row for row in bench_rows("retries.py", "", timeout=300)}
    del rows["retry_on"]  # the header
    assert set(rows) == {"off", "idempotent (default)", "all"}
    for row in rows.values():
        assert row[1] == "2"  # deaths
        assert int(row[2].split(" of ")[1].replace(",", "")) > 0  # GETs were sent
        assert int(row[3].split(" of ")[1].replace(",", "")) > 0  # and POSTs
