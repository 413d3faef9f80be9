"""Target planning: set arithmetic, dropped network/broadcast, bound, order."""

from __future__ import annotations

import pytest

from poller.discovery.targets import likely_addresses, plan_targets
from poller.endpoints import Endpoint as Target
from poller.errors import TargetsError


def addresses(subnets: list[str], exclude: list[str] = [], ports: list[int] = [80]) -> list[str]:  # noqa: B006
    return [str(t) for t in plan_targets(subnets, exclude, ports, 65536, allow_public=True)]


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
    assert str(caught.value) == (
        "discovery.max_targets: 10.0.0.0/8 x 2 ports is 33,554,428 targets, more than "
        "the bound of 65,536; narrow the subnets, or raise the bound "
        "(discovery.max_targets, POLLER_DISCOVERY__MAX_TARGETS)"
    )
    with pytest.raises(TargetsError) as caught:
        plan_targets(["10.0.0.0/24", "10.0.1.0/24"], [], [3000], 500)
    assert str(caught.value).startswith(
        "discovery.max_targets: 10.0.0.0/24, 10.0.1.0/24 x 1 port is 508 targets"
    )


def test_everything_excluded_is_an_empty_plan() -> None:
    assert addresses(["10.0.0.0/30"], ["10.0.0.0/30"]) == []


@pytest.mark.parametrize(("bound", "accepted"), [(254, True), (253, False), (508, True)])
def test_a_plan_of_exactly_max_targets_is_accepted_and_one_more_refused(
    bound: int, accepted: bool
) -> None:
    """192.168.0.0/24 is 254 addresses: with one port, 254 targets; with two, 508."""
    ports = [80] if bound < 500 else [80, 81]
    if accepted:
        assert plan_targets(["192.168.0.0/24"], [], ports, bound).count == bound
    else:
        with pytest.raises(TargetsError, match="254 targets, more than the bound of 253"):
            plan_targets(["192.168.0.0/24"], [], ports, bound)


def hot(in_use: list[str], vacated: list[str] = [], per: int = 4, bound: int = 64) -> list[str]:  # noqa: B006
    plan = plan_targets(["10.42.0.0/16"], ["10.42.0.1"], [3000], 65536)
    chosen = likely_addresses(plan, ["10.42.0.0/16"], in_use, vacated, per, bound)
    return [str(address) for address in chosen]


@pytest.mark.parametrize(
    ("in_use", "vacated", "expected"),
    [
        # Nothing yet: the lowest free (the gateway .1 is excluded).
        ([], [], ["10.42.0.2", "10.42.0.3", "10.42.0.4", "10.42.0.5"]),
        # Handed out in order: next after the highest, and the lowest free (here the same).
        (["10.42.0.2", "10.42.0.3"], [], ["10.42.0.4", "10.42.0.5", "10.42.0.6", "10.42.0.7"]),
        # A gap from a removal is the lowest free: first-free IPAM (bridges) fills it.
        (
            ["10.42.0.2", "10.42.0.4", "10.42.0.9"],
            [],
            [
                *("10.42.0.3", "10.42.0.5", "10.42.0.6", "10.42.0.7"),  # the lowest free
                *("10.42.0.10", "10.42.0.11", "10.42.0.12", "10.42.0.13"),  # after .9
            ],
        ),
        # Serial IPAM (overlays) wraps around after the top of the subnet.
        (
            ["10.42.255.253", "10.42.255.254"],
            [],
            ["10.42.0.2", "10.42.0.3", "10.42.0.4", "10.42.0.5"],
        ),
        # Recently vacated addresses first, newest first.
        (
            ["10.42.0.2"],
            ["10.42.7.7", "10.42.0.9"],
            ["10.42.0.3", "10.42.0.4", "10.42.0.5", "10.42.0.6", "10.42.0.9", "10.42.7.7"],
        ),
    ],
)
def test_likely_addresses_follow_dockers_allocation(
    in_use: list[str], vacated: list[str], expected: list[str]
) -> None:
    assert hot(in_use, vacated) == expected


def test_likely_addresses_are_bounded() -> None:
    assert len(hot(["10.42.0.100"], per=50, bound=16)) == 16
