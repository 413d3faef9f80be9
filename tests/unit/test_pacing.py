"""The neighbour-table pacer: never more than `budget` new addresses per hold window."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from poller.pacing import KERNEL_DEFAULT_GC_THRESH3, NeighbourPacer, needs_pacing, neighbour_limits


def test_first_budget_start_at_once_then_wait_for_the_window() -> None:
    pacer = NeighbourPacer(budget=3, hold_seconds=1.0)
    assert [pacer.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.reserve(0.0) == 1.0
    assert pacer.reserve(0.5) == 1.0
    assert pacer.reserve(0.5) == 1.0
    assert pacer.reserve(0.5) == 2.0
    assert pacer.reserve(10.0) == 10.0


@given(
    budget=st.integers(1, 20),
    hold=st.floats(0.01, 5.0),
    gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_than_the_budget(
    budget: int, hold: float, gaps: list[float]
) -> None:
    pacer = NeighbourPacer(budget, hold)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        start = pacer.reserve(now)
        assert start >= now
        starts.append(start)
    assert starts == sorted(starts)
    for i, start in enumerate(starts):
        in_window = [s for s in starts[: i + 1] if s > start - hold + 1e-9]  # float slack
        assert len(in_window) <= budget


def test_loopback_needs_no_pacing() -> None:
    assert not needs_pacing("127.0.3.4")
    assert not needs_pacing("::1")
    assert needs_pacing("192.168.42.7")


def test_limits_read_from_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "gc_thresh3").write_text("4096\n")
    for name, tries, retrans in (("eth0", 3, 1000), ("eth1", 1, 100), ("lo", 9, 9000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mcast_solicit").write_text(f"{tries}\n")
        (tmp_path / name / "app_solicit").write_text("0\n")
        (tmp_path / name / "retrans_time_ms").write_text(f"{retrans}\n")
    limits = neighbour_limits(tmp_path)
    assert limits.table_limit == 4096
    assert limits.budget == 1024
    assert 3.0 < limits.hold_seconds < 4.0  # the slowest non-loopback interface, plus margin


def test_hidden_table_size_falls_back_to_kernel_default_or_operator_value(tmp_path: Path) -> None:
    assert neighbour_limits(tmp_path).table_limit == KERNEL_DEFAULT_GC_THRESH3
    assert "not visible" in neighbour_limits(tmp_path).table_limit_source
    assert neighbour_limits(tmp_path, table_limit=8192).budget == 2048


def test_consecutive_sweeps_share_one_pacer() -> None:
    """The neighbour table remembers the last sweep's addresses when the next one starts,
    so the pacing must too (a fresh pacer per sweep would let back-to-back sweeps stack up
    unresolved entries). 10.255.255.0/30 has no route in the test namespace: each connect
    fails at once with ENETUNREACH, and no packet leaves."""
    import asyncio

    from poller.config import load_settings
    from poller.probing import Prober
    from poller.results import Sweep
    from poller.sweeping import discover, resolve

    settings = load_settings(
        None, environ={}, overrides={"discovery": {"subnets": ["10.255.255.0/30"]}}
    )
    resolved = resolve(settings.discovery)

    async def sweep() -> Sweep:
        async with Prober(settings.probe, 4) as prober:
            return await discover(resolved, prober)

    for _ in range(2):
        found = asyncio.run(sweep())
        assert found.targets == 2
    assert len(resolved.pacer._starts) == 4  # both sweeps' addresses are still counted
