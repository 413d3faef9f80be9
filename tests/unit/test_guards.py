"""The removal guard: which removals are held, and when a hold is released."""

from __future__ import annotations

from poller.config import GuardSettings
from poller.endpoints import Endpoint as Server
from poller.guards import guard

S = [Server(f"10.0.0.{i}", 80) for i in range(1, 7)]
DEFAULT = GuardSettings()


def test_no_removal_no_hold() -> None:
    assert guard(S[:3], S[:2], DEFAULT, 0.0, None) == (frozenset(S[:3]), None)


def test_one_leaving_is_never_suspicious() -> None:
    servers, hold = guard(S[:1], S[:2], DEFAULT, 0.0, None)
    assert servers == frozenset(S[:1])
    assert hold is None


def test_many_leaving_at_once_are_held() -> None:
    servers, hold = guard(S[:2], S[:6], DEFAULT, 0.0, None)
    assert servers == frozenset(S[:6])
    assert hold is not None
    assert hold.held == frozenset(S[2:])
    assert "4 of 6 members would leave at once" in hold.reason


def test_within_the_fraction_is_allowed() -> None:
    servers, hold = guard(S[:4], S[:6], DEFAULT, 0.0, None)
    assert servers == frozenset(S[:4])
    assert hold is None


def test_min_members_floor() -> None:
    settings = GuardSettings(min_members=2, max_removed_fraction=1.0)
    servers, hold = guard(S[:1], S[:2], settings, 0.0, None)
    assert servers == frozenset(S[:2])
    assert hold is not None
    assert "fewer than min_members 2" in hold.reason


def test_hold_is_released_after_max_hold() -> None:
    settings = GuardSettings(max_hold_seconds=30)
    _, hold = guard([], S[:3], settings, 100.0, None)
    assert hold is not None
    _, still = guard([], S[:3], settings, 129.0, hold)
    assert still is not None
    assert still.since == 100.0
    servers, released = guard([], S[:3], settings, 130.0, still)
    assert servers == frozenset()
    assert released is None


def test_zero_max_hold_holds_until_resolved() -> None:
    settings = GuardSettings(max_hold_seconds=0)
    _, hold = guard([], S[:3], settings, 0.0, None)
    _, hold = guard([], S[:3], settings, 1e9, hold)
    assert hold is not None


def test_guard_off_with_fraction_one() -> None:
    servers, hold = guard([], S[:6], GuardSettings(max_removed_fraction=1.0), 0.0, None)
    assert servers == frozenset()
    assert hold is None
