"""Target planning: set arithmetic, dropped network/broadcast, bound, order."""

from __future__ import annotations

import pytest

from poller.endpoints import Endpoint as Target
from poller.errors import TargetsError
from poller.targets import plan_targets


def addresses(subnets: list[str], exclude: list[str] = [], ports: list[int] = [80]) -> list[str]:  # noqa: B006
    return [str(t) for t in plan_targets(subnets, exclude, ports, 65536)]


def test_network_and_broadcast_dropped_for_short_prefixes() -> None:
    assert addresses(["10.0.0.0/29"]) == [f"10.0.0.{i}:80" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.0.0.0/31", ["10.0.0.0:80", "10.0.0.1:80"]),
        ("10.0.0.5/32", ["10.0.0.5:80"]),
    ],
)
def test_point_to_point_and_host_prefixes_keep_every_address(
    subnet: str, expected: list[str]
) -> None:
    assert addresses([subnet]) == expected


def test_excludes_addresses_ranges_and_cidrs() -> None:
    got = addresses(
        ["192.168.42.0/28"], ["192.168.42.1", "192.168.42.3-192.168.42.5", "192.168.42.8/30"]
    )
    assert got == [f"192.168.42.{i}:80" for i in (2, 6, 7, 12, 13, 14)]


def test_overlaps_and_duplicates_merge_in_address_order() -> None:
    got = addresses(["10.0.0.8/30", "10.0.0.0/29", "10.0.0.0/29"])
    assert got == [f"10.0.0.{i}:80" for i in (1, 2, 3, 4, 5, 6, 9, 10)]


def test_ports_of_one_address_are_adjacent_and_sorted() -> None:
    plan = plan_targets(["10.0.0.0/30"], [], [8080, 3000], 100)
    assert list(plan) == [
        Target("10.0.0.1", 3000),
        Target("10.0.0.1", 8080),
        Target("10.0.0.2", 3000),
        Target("10.0.0.2", 8080),
    ]
    assert plan.count == 4


def test_order_is_numeric_not_textual() -> None:
    got = addresses(["10.0.0.0/28", "9.0.0.0/30"])
    assert got[:3] == ["9.0.0.1:80", "9.0.0.2:80", "10.0.0.1:80"]
    assert got[-1] == "10.0.0.14:80"


def test_ipv6_is_supported_and_bracketed() -> None:
    assert addresses(["fd00::/126"]) == [
        "[fd00::]:80",
        "[fd00::1]:80",
        "[fd00::2]:80",
        "[fd00::3]:80",
    ]


def test_a_slash_16_is_exactly_the_default_bound() -> None:
    plan = plan_targets(["10.1.0.0/16"], [], [3000], 65536)
    assert plan.count == 65534


def test_too_many_targets_names_the_size_without_expanding() -> None:
    with pytest.raises(TargetsError) as caught:
        plan_targets(["10.0.0.0/8"], [], [3000, 3001], 65536)
    message = str(caught.value)
    assert message.startswith("discovery.max_targets: ")
    assert "33,554,428 targets" in message
    assert "65,536" in message


def test_everything_excluded_is_an_empty_plan() -> None:
    assert addresses(["10.0.0.0/30"], ["10.0.0.0/30"]) == []
