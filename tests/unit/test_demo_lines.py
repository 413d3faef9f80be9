"""What the demo prints about poller's pool: why a member falls, when the guard holds,
and which state changes the demo did not cause (`tests/support/demo.py`)."""

from __future__ import annotations

from typing import Any

from tests.support.demo import describe, surprises


def member(
    address: str, state: str, identity: str, last: str = "ok", service: str = "web"
) -> dict[str, Any]:
    return {
        "service": service,
        "address": address,
        "state": state,
        "identity": identity,
        "last_result": last,
    }


def test_a_falling_or_down_member_carries_its_last_result() -> None:
    pool = {
        "members": [
            member("127.42.0.11", "falling", "s1", "timeout"),
            member("127.42.0.22", "down", "s2", "refused"),
            member("127.42.0.33", "up", "s3"),
            member("127.42.0.77", "rising", "api1", service="api"),
        ],
        "guard": {"holding": False, "reason": None},
    }
    assert describe(pool) == (
        "127.42.0.11 falling: timeout (s1), 127.42.0.22 down: refused (s2), "
        "127.42.0.33 up (s3), api: 127.42.0.77 rising (api1)"
    )


def test_the_guard_holding_is_said_with_its_reason() -> None:
    pool = {
        "members": [member("127.42.0.11", "down", "s1", "timeout")],
        "guard": {"holding": True, "reason": "2 of 3 members would leave at once"},
    }
    assert describe(pool).endswith(
        "; the guard holds removals (2 of 3 members would leave at once): HAProxy's checks decide"
    )


def test_only_members_the_demo_left_alone_are_surprises() -> None:
    pool = {
        "members": [
            member("127.42.0.11", "falling", "s1", "timeout"),  # left alone: a surprise
            member("127.42.0.22", "down", "s2", "refused"),  # the demo stopped it
            member("127.42.0.33", "up", "s3"),
        ]
    }
    assert surprises(pool, {"s1", "s3"}) == {("s1", "falling", "timeout")}
    assert surprises(None, {"s1"}) == set()
    assert describe(None) == "(the status server does not answer)"
