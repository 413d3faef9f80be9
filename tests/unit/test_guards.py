"""The removal guard: which removals are held, over which window, and when a hold is
released."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.config import GuardSettings
from poller.endpoints import Endpoint as Server
from poller.pool.guards import Guarded, guard

S = [Server(f"10.0.0.{i}", 80) for i in range(1, 11)]
DEFAULT = GuardSettings()


def test_no_removal_no_hold() -> None:
    assert guard(S[:3], S[:2], DEFAULT, 0.0).servers == frozenset(S[:3])
    assert guard(S[:3], S[:2], DEFAULT, 0.0).hold is None


def test_one_leaving_is_never_suspicious() -> None:
    done = guard(S[:1], S[:2], DEFAULT, 0.0)
    assert done.servers == frozenset(S[:1])
    assert done.hold is None


def test_many_leaving_at_once_are_held() -> None:
    done = guard(S[:2], S[:6], DEFAULT, 0.0)
    assert done.servers == frozenset(S[:6])
    assert done.hold is not None
    assert done.hold.held == frozenset(S[2:6])
    assert "4 of 6 members would leave at once" in done.hold.reason


def test_within_the_fraction_is_allowed() -> None:
    done = guard(S[:4], S[:6], DEFAULT, 0.0)
    assert done.servers == frozenset(S[:4])
    assert done.hold is None


@pytest.mark.parametrize(("staying", "held"), [(4, False), (3, True)])
def test_exactly_the_fraction_is_allowed_and_one_more_is_held(staying: int, held: bool) -> None:
    done = guard(S[:staying], S[:8], GuardSettings(max_removed_fraction=0.5), 0.0)
    assert (done.hold is not None) is held


def test_min_members_floor() -> None:
    settings = GuardSettings(min_members=2, max_removed_fraction=1.0)
    done = guard(S[:1], S[:2], settings, 0.0)
    assert done.servers == frozenset(S[:2])
    assert done.hold is not None
    assert "fewer than min_members 2" in done.hold.reason


def test_hold_is_released_after_max_hold() -> None:
    settings = GuardSettings(max_hold_seconds=30)
    first = guard([], S[:3], settings, 100.0)
    assert first.hold is not None
    still = guard([], S[:3], settings, 129.0, first)
    assert still.hold is not None
    assert still.hold.since == 100.0
    released = guard([], S[:3], settings, 130.0, still)
    assert released.servers == frozenset()
    assert released.hold is None


def test_zero_max_hold_holds_until_resolved() -> None:
    settings = GuardSettings(max_hold_seconds=0)
    first = guard([], S[:3], settings, 0.0)
    later = guard([], S[:3], settings, 1e9, first)
    assert later.hold is not None


def test_guard_off_with_fraction_one() -> None:
    done = guard([], S[:6], GuardSettings(max_removed_fraction=1.0), 0.0)
    assert done.servers == frozenset()
    assert done.hold is None


# --- removals in steps ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "held_at"),
    [
        # 8 -> 4 -> 2 a second apart: 75 % of the pool within the window: the second step
        # is held (it slipped past when each step was judged against the pool it saw).
        ([(0.0, 4), (1.0, 2)], [False, True]),
        # The same steps far apart: each window on its own, 50 % each, nothing held.
        ([(0.0, 4), (10.0, 2)], [False, False]),
        # One at a time, quickly: the third makes 3 of 8 (38 %), the fifth 5 of 8 (62 %).
        ([(0.0, 7), (0.5, 6), (1.0, 5), (1.5, 4), (2.0, 3)], [False, False, False, False, True]),
    ],
)
def test_removals_in_steps_count_together_within_the_window(
    steps: list[tuple[float, int]], held_at: list[bool]
) -> None:
    settings = GuardSettings(max_removed_fraction=0.5, window_seconds=5.0)
    live: frozenset[Server] = frozenset(S[:8])
    state: Guarded | None = None
    held = []
    for now, staying in steps:
        state = guard(S[:staying], live, settings, now, state)
        held.append(state.hold is not None)
        live = state.servers  # what HAProxy serves after this step
    assert held == held_at


def test_a_held_step_says_the_window_and_the_total() -> None:
    settings = GuardSettings(max_removed_fraction=0.5, window_seconds=5.0)
    first = guard(S[:4], S[:8], settings, 0.0)
    second = guard(S[:2], first.servers, settings, 1.0, first)
    assert second.hold is not None
    assert "6 of 8 members would leave within 5 s (75% > max_removed_fraction 50%)" in (
        second.hold.reason
    )
    assert second.hold.held == frozenset(S[2:4])


def test_window_zero_judges_each_reconcile_on_its_own() -> None:
    settings = GuardSettings(max_removed_fraction=0.5, window_seconds=0)
    first = guard(S[:4], S[:8], settings, 0.0)
    second = guard(S[:2], first.servers, settings, 0.0, first)
    assert second.hold is None  # the old per-step behaviour, on purpose


@given(
    size=st.integers(2, 10),
    fraction=st.sampled_from([0.2, 0.3, 0.5, 0.75]),
    steps=st.lists(
        st.tuples(st.floats(0.0, 4.9), st.sets(st.integers(0, 9))), min_size=1, max_size=12
    ),
)
def test_a_window_never_loses_more_than_the_fraction_without_a_hold(
    size: int, fraction: float, steps: list[tuple[float, set[int]]]
) -> None:
    """Whatever the nodes do within one window, the servers removed without a hold are at
    most max_removed_fraction of the pool the window started with (or a single one)."""
    settings = GuardSettings(max_removed_fraction=fraction, window_seconds=5.0, max_hold_seconds=0)
    base = frozenset(S[:size])
    live, state = base, None
    for now, staying in sorted(steps):
        desired = [S[i] for i in staying if i < size]
        state = guard(desired, live, settings, now, state)
        live = state.servers
        removed = base - live
        assert len(removed) <= max(1, int(fraction * size + 1e-9)), (now, sorted(staying))


def test_the_only_member_leaving_is_not_a_mass_removal() -> None:
    """1 of 1 is 100 %, but one member is never suspicious (only min_members guards it)."""
    done = guard([], S[:1], GuardSettings(min_members=0), 50.0)
    assert (done.servers, done.hold) == (frozenset(), None)


def test_the_window_ends_window_seconds_after_it_began_at_any_clock_value() -> None:
    settings = GuardSettings(window_seconds=5, max_removed_fraction=0.5)
    first = guard(S[:4], S[:8], settings, 1000.0)  # 4 of 8: allowed, counted
    assert first.hold is None
    inside = guard(S[:3], S[:4], settings, 1004.9, first)  # 5 of 8 within 5 s: held
    assert inside.hold is not None
    later = guard(S[:3], S[:4], settings, 1005.0, first)  # a new window: 1 of 4
    assert later.hold is None


def test_both_reasons_are_given_in_one_line() -> None:
    settings = GuardSettings(min_members=5, max_removed_fraction=0.5)
    done = guard(S[:1], S[:4], settings, 0.0)
    assert done.hold is not None
    assert done.hold.reason == (
        "1 members would remain, fewer than min_members 5; "
        "3 of 4 members would leave at once (75% > max_removed_fraction 50%)"
    )


def test_a_reconcile_with_no_removal_does_not_end_the_window() -> None:
    """4 of 8 leave, a join comes (nothing removed), 2 more leave: still one window."""
    settings = GuardSettings(window_seconds=5, max_removed_fraction=0.5)
    first = guard(S[:4], S[:8], settings, 10.0)
    joined = guard([*S[:4], S[9]], S[:4], settings, 11.0, first)
    assert (joined.hold, joined.window) == (None, first.window)
    later = guard([S[0], S[1], S[9]], [*S[:4], S[9]], settings, 12.0, joined)
    assert later.hold is not None
    assert "6 of 8 members would leave within 5 s" in later.hold.reason


def test_announced_removals_go_at_once_and_are_not_counted() -> None:
    done = guard(S[:2], S[:6], DEFAULT, 0.0, announced=S[2:6])
    assert done.servers == frozenset(S[:2])
    assert done.hold is None


def test_announced_removals_leave_the_windows_pool_so_the_rest_is_judged_strictly() -> None:
    # 3 failing of the 6 served would be 50 %, allowed; of the 4 meant to stay, 75 %: held.
    done = guard(S[3:4], S[:6], DEFAULT, 0.0, announced=S[4:6])
    assert done.hold is not None
    assert done.hold.held == frozenset(S[:3])
    assert "3 of 4 members" in done.hold.reason
