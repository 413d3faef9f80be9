"""The neighbour-table pacer: never more than `budget` new addresses per hold window."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.discovery.pacing import (
    KERNEL_DEFAULT_GC_THRESH3,
    NeighbourPacer,
    needs_pacing,
    neighbour_limits,
)


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
    from poller.discovery.plans import plan_sweep
    from poller.discovery.probing import Prober
    from poller.discovery.sweeping import run_sweep
    from poller.results import Sweep

    settings = load_settings(
        None, environ={}, overrides={"discovery": {"subnets": ["10.255.255.0/30"]}}
    )
    resolved = plan_sweep(settings.discovery)

    async def sweep() -> Sweep:
        async with Prober(settings.probe, 4, resolved.plan.scope()) as prober:
            return await run_sweep(resolved, prober)

    for _ in range(2):
        found = asyncio.run(sweep())
        assert found.targets == 2
    assert len(resolved.pacer._starts) == 4  # both sweeps' addresses are still counted


@pytest.mark.parametrize(
    ("mcast", "app", "retrans_ms", "hold_between"),
    [(3, 0, 1000, (3.0, 4.0)), (1, 2, 1000, (3.0, 4.0)), (2, 3, 100, (0.5, 0.7))],
)
def test_the_hold_time_counts_multicast_and_application_probes(
    tmp_path: Path, mcast: int, app: int, retrans_ms: int, hold_between: tuple[float, float]
) -> None:
    """Resolution gives up after mcast_solicit + app_solicit tries of retrans_time each."""
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "mcast_solicit").write_text(f"{mcast}\n")
    (tmp_path / "eth0" / "app_solicit").write_text(f"{app}\n")
    (tmp_path / "eth0" / "retrans_time_ms").write_text(f"{retrans_ms}\n")
    low, high = hold_between
    assert low < neighbour_limits(tmp_path).hold_seconds < high


def test_a_sweep_of_two_ports_reserves_each_address_once() -> None:
    """One neighbour entry serves every port of an address: pacing counts addresses.
    10.255.255.0/30 has no route in the test namespace (ENETUNREACH at once)."""
    import asyncio

    from poller.config import load_settings
    from poller.discovery.probing import Prober
    from poller.discovery.targets import plan_targets

    settings = load_settings(None, environ={})
    plan = plan_targets(["10.255.255.0/30"], [], [3000, 8080], 16)
    pacer = NeighbourPacer(budget=100, hold_seconds=3.0)

    async def sweep() -> int:
        async with Prober(settings.probe, 4, plan.scope()) as prober:
            found = await prober.sweep(plan, pacer)
        return found.targets

    assert asyncio.run(sweep()) == 4  # two addresses x two ports
    assert len(pacer._starts) == 2  # two reservations, one per address


@pytest.mark.parametrize(("budget", "hold"), [(0, 1.0), (-1, 1.0), (1, -0.1), (0, -1.0)])
def test_a_pacer_refuses_an_empty_budget_or_a_negative_hold(budget: int, hold: float) -> None:
    with pytest.raises(ValueError, match=r"^budget must be >= 1 and hold_seconds >= 0$"):
        NeighbourPacer(budget, hold)


def test_a_zero_hold_admits_everything_at_once() -> None:
    pacer = NeighbourPacer(budget=1, hold_seconds=0.0)
    assert [pacer.reserve(5.0) for _ in range(3)] == [5.0, 5.0, 5.0]


def test_a_clock_running_backwards_never_starts_before_the_last_start() -> None:
    """Starts stay sorted: a reservation at an earlier `now` starts with the latest one."""
    pacer = NeighbourPacer(budget=4, hold_seconds=1.0)
    assert pacer.reserve(0.0) == 0.0
    assert pacer.reserve(3.0) == 3.0
    assert pacer.reserve(1.0) == 3.0  # not 1.0 (unsorted), not 0.0 (the first start)
    assert pacer.reserve(2.0) == 3.0


@pytest.mark.parametrize(
    ("reserved", "now", "more", "expected"),
    [
        (0, 10.0, 0, 10.0),  # nothing reserved: from now
        (0, 10.0, 8, 12.0),  # 8 more at 4 per second
        (4, 0.0, 4, 1.5),  # after starts 0, 0, 0.5, 0.5 come 1, 1, 1.5, 1.5
        (4, 5.0, 2, 5.5),  # the last start is past: from now
    ],
)
def test_the_pacing_plan_says_when_the_last_reservation_would_start(
    reserved: int, now: float, more: int, expected: float
) -> None:
    """finish(): the ETA of a sweep; the budget per hold window is the rate."""
    pacer = NeighbourPacer(budget=2, hold_seconds=0.5)
    for _ in range(reserved):
        pacer.reserve(0.0)
    assert pacer.finish(more, now) == pytest.approx(expected)


def _interface(root: Path, name: str, mcast: str, app: str, retrans_ms: str) -> None:
    (root / name).mkdir()
    (root / name / "mcast_solicit").write_text(f"{mcast}\n")
    (root / name / "app_solicit").write_text(f"{app}\n")
    (root / name / "retrans_time_ms").write_text(f"{retrans_ms}\n")


def test_the_hold_time_is_exact_and_comes_from_the_slowest_readable_interface(
    tmp_path: Path,
) -> None:
    """hold = tries x retrans_time x 1.2 + 50 ms, over the slowest interface; an
    interface with an unreadable value is skipped (not the ones after it), `lo` and
    `default` are not interfaces, and zero tries count as one."""
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "gc_thresh3").write_text("2048\n")
    (tmp_path / "default" / "mcast_solicit").write_text("99\n")  # not an interface
    (tmp_path / "default" / "app_solicit").write_text("0\n")
    (tmp_path / "default" / "retrans_time_ms").write_text("9000\n")
    _interface(tmp_path, "a0", "x", "0", "5000")  # unreadable: skipped
    _interface(tmp_path, "b0", "0", "0", "2000")  # zero tries: one try of 2 s
    _interface(tmp_path, "c0", "1", "0", "500")
    limits = neighbour_limits(tmp_path)
    assert limits.table_limit == 2048
    assert limits.table_limit_source == str(tmp_path / "default" / "gc_thresh3")
    assert limits.hold_seconds == pytest.approx(2.0 * 1.2 + 0.05)


def test_with_no_interface_to_read_the_hold_time_is_the_kernel_default(tmp_path: Path) -> None:
    limits = neighbour_limits(tmp_path / "absent", table_limit=512)
    assert limits.hold_seconds == pytest.approx(3.0 * 1.2 + 0.05)
    assert limits.table_limit == 512
    assert limits.table_limit_source == "discovery.neighbour_table_limit"
    hidden = neighbour_limits(tmp_path)
    assert hidden.table_limit_source == (
        "kernel default (gc_thresh3 not visible in this namespace)"
    )


@pytest.mark.parametrize(("table", "budget"), [(16, 8), (32, 8), (36, 9), (1024, 256)])
def test_the_budget_is_a_quarter_of_the_table_and_never_below_eight(
    table: int, budget: int
) -> None:
    assert neighbour_limits(Path("/nonexistent"), table_limit=table).budget == budget


def test_starts_stay_sorted_after_the_latest_start_not_any_other() -> None:
    pacer = NeighbourPacer(budget=8, hold_seconds=1.0)
    assert [pacer.reserve(t) for t in (0.0, 1.0, 2.0)] == [0.0, 1.0, 2.0]
    assert pacer.finish(0, 0.0) == 2.0  # the plan starts from the latest start
    assert pacer.reserve(0.5) == 2.0  # the latest start, not the second


def test_the_labs_overflow_check_counts_by_stamp_not_by_count() -> None:
    """Every lab asserts no new 'neighbor table overflow' line: lines of before it (still
    in the ring buffer, or leaving it) neither count nor hide a new one."""
    from tests.support.netlab import count_overflows

    log = (
        "[   10.5] veth1: entered forwarding state\n"
        "[   11.25] neighbour: arp_cache: neighbor table overflow!\n"
        "[   12.0] heig: port 2 entered blocking state\n"
        "neighbour: arp_cache: neighbor table overflow!\n"  # no stamp: always counts
        "[   13.0] neighbour: arp_cache: neighbour table overflow!\n"
    )
    assert count_overflows(log, -1.0) == 3
    assert count_overflows(log, 11.25) == 2
    assert count_overflows(log, 13.0) == 1
