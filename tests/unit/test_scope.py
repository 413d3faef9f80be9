"""Only what was named: targets, hot sweeps and the edge checks never leave the subnets the
user gave, never change IP version, and refuse ranges no Docker network uses.

A bug once turned `::1/128` into the IPv4 target `0.0.0.1:8080`, and a probe left the
machine. These tests send nothing: the planner is pure, and the edge checks are asked
with recording fakes in place of sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import httpx
import netaddr
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from poller.config import ProbeSettings, load_settings
from poller.discovery import arp
from poller.discovery.plans import plan_sweep
from poller.discovery.probing import Prober
from poller.discovery.targets import (
    Scope,
    address_text,
    check_subnet,
    host_bits_set,
    likely_addresses,
    normalised,
    plan_targets,
)
from poller.endpoints import Endpoint
from poller.errors import ConfigError, TargetsError
from poller.results import Outcome


def texts(subnet: str, allow_public: bool = True) -> list[str]:
    return [t.address for t in plan_targets([subnet], [], [8080], 65536, allow_public)]


# -- numbers to addresses: one way, in the subnet's own version ---------------------------


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("::1/128", ["::1"]),
        ("::a00:1/126", ["::a00:0", "::a00:1", "::a00:2", "::a00:3"]),
        ("fd00::/126", ["fd00::", "fd00::1", "fd00::2", "fd00::3"]),
    ],
)
def test_an_ipv6_subnet_gives_ipv6_targets_even_below_two_to_the_32(
    subnet: str, expected: list[str]
) -> None:
    got = texts(subnet)
    assert got == expected
    assert {ipaddress.ip_address(a).version for a in got} == {6}


def test_an_ipv4_mapped_subnet_is_refused_since_its_packets_would_be_ipv4() -> None:
    with pytest.raises(TargetsError, match=r"IPv4-mapped.*give the IPv4 subnet itself"):
        plan_targets(["::ffff:0:0/126"], [], [8080], 65536, allow_public=True)
    # Its numbers still read as IPv6 text, never as 0.0.0.0 ... 0.0.0.3.
    text = address_text(6, 0xFFFF_0000_0000)
    assert text in {"::ffff:0:0", "::ffff:0.0.0.0"}  # Python 3.13 writes it the second way
    assert ipaddress.ip_address(text).version == 6


@pytest.mark.parametrize(
    ("version", "value", "text"),
    [
        (4, 0, "0.0.0.0"),
        (4, 0x0A000001, "10.0.0.1"),
        (4, 2**32 - 1, "255.255.255.255"),
        (6, 0, "::"),
        (6, 1, "::1"),
        (6, 0x0A000001, "::a00:1"),
        (6, 2**128 - 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ],
)
def test_address_text_keeps_the_version_it_is_given(version: int, value: int, text: str) -> None:
    assert address_text(version, value) == text


@pytest.mark.parametrize(("version", "value"), [(4, -1), (4, 2**32), (6, 2**128), (5, 1)])
def test_address_text_refuses_what_no_address_of_that_version_is(version: int, value: int) -> None:
    refused = r"is not an IPv4|neither 4 nor 6|not permitted as an IPv6"
    with pytest.raises(ValueError, match=refused):
        address_text(version, value)


# -- which ranges may be swept at all ---------------------------------------------------------


@pytest.mark.parametrize(
    "subnet",
    [
        "10.0.0.0/30",
        "172.16.0.0/12",
        "172.31.255.0/24",
        "192.168.42.0/24",
        "100.64.0.0/24",
        "127.0.0.0/28",
        "::1/128",
        "fd00::/120",
        "fc00::/126",
    ],
)
def test_private_unique_local_and_loopback_subnets_are_accepted(subnet: str) -> None:
    check_subnet(subnet, allow_public=False)


@pytest.mark.parametrize(
    "subnet", ["8.8.8.0/30", "172.15.255.0/24", "172.0.0.0/8", "2001:db8::/120", "::a00:1/126"]
)
def test_public_subnets_are_refused_naming_the_subnet_and_the_opt_in(subnet: str) -> None:
    with pytest.raises(TargetsError) as caught:
        check_subnet(subnet, allow_public=False)
    message = str(caught.value)
    assert message.startswith(f"discovery.subnets: {subnet} is neither a private range")
    assert "--allow-public" in message
    assert "discovery.allow_public: true" in message
    check_subnet(subnet, allow_public=True)  # the user's word opens it


@pytest.mark.parametrize(
    ("subnet", "what"),
    [
        ("0.0.0.0/30", "0.0.0.0/8"),
        ("169.254.1.0/24", "link-local"),
        ("224.0.0.0/30", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::ffff:10.0.0.0/126", "IPv4-mapped"),
        ("fe80::/120", "link-local"),
        ("ff02::/126", "multicast"),
        ("0.0.0.0/0", "0.0.0.0/8"),
    ],
)
def test_special_ranges_are_refused_even_with_the_opt_in(subnet: str, what: str) -> None:
    with pytest.raises(TargetsError, match=what):
        check_subnet(subnet, allow_public=True)


def test_a_subnet_with_host_bits_set_means_its_network() -> None:
    assert host_bits_set("127.0.0.5/28")
    assert not host_bits_set("127.0.0.0/28")
    assert not host_bits_set("::1/128")
    assert normalised("127.0.0.5/28") == "127.0.0.0/28"
    assert normalised("::a00:1/126") == "::a00:0/126"
    assert texts("127.0.0.5/30") == ["127.0.0.5", "127.0.0.6"]


def test_no_subnet_is_an_error_that_says_how_to_give_one() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(ConfigError) as caught:
        plan_sweep(settings.discovery)
    message = str(caught.value)
    assert message.startswith("discovery.subnets: no subnet to sweep")
    for way in ("--subnet CIDR", "POLLER_DISCOVERY__SUBNETS", "discovery.subnets", "`auto`"):
        assert way in message


def test_an_ipv6_network_too_large_to_sweep_says_why() -> None:
    with pytest.raises(TargetsError, match=r"An IPv6 network cannot be swept whole"):
        plan_targets(["fd00::/64"], [], [80], 65536)


# -- the property: every target, and every hot address, is inside what was named ------------

ports = st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True)


@st.composite
def networks(draw: st.DrawFn) -> tuple[int, str]:
    """A small subnet of either version; IPv6 values below 2**32 are drawn often, since
    they are where the version was once guessed wrong. Host bits may be set."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    low = st.integers(0, 2**32 - 1)
    value = draw(low if version == 4 else st.one_of(low, st.integers(0, 2**bits - 1)))
    prefix = draw(st.integers(bits - 8, bits))
    return version, f"{address_text(version, value)}/{prefix}"


@st.composite
def excludes(draw: st.DrawFn, subnets: list[str]) -> list[str]:
    """Addresses, CIDRs and ranges around the subnets (some of the other version)."""
    found = []
    for subnet in draw(st.lists(st.sampled_from(subnets), max_size=3)):
        network = ipaddress.ip_network(subnet, strict=False)
        first = int(network.network_address)
        a = draw(st.integers(first, first + network.num_addresses - 1))
        b = draw(st.integers(a, a + 4))
        version = network.version
        kind = draw(st.sampled_from(["address", "cidr", "range", "other version"]))
        if kind == "address":
            found.append(address_text(version, a))
        elif kind == "cidr":
            bits = network.max_prefixlen
            found.append(f"{address_text(version, a)}/{draw(st.integers(bits - 3, bits))}")
        elif kind == "range" and b < 2**network.max_prefixlen:
            found.append(f"{address_text(version, a)}-{address_text(version, b)}")
        else:
            found.append(address_text(10 - version, a % 2**32))  # the same number, other version
    return found


def excluded(address: ipaddress.IPv4Address | ipaddress.IPv6Address, items: list[str]) -> bool:
    for item in items:
        if "-" in item:
            first, last = (ipaddress.ip_address(p) for p in item.split("-"))
            if first.version == address.version and first <= address <= last:  # type: ignore[operator]
                return True
        elif address in ipaddress.ip_network(item, strict=False):
            return True
    return False


def expected_addresses(subnets: list[str], items: list[str]) -> set[str]:
    """What the plan must hold, worked out with `ipaddress` alone."""
    found = set()
    for subnet in subnets:
        network = ipaddress.ip_network(subnet, strict=False)
        hosts = list(network)
        if network.version == 4 and network.prefixlen < 31:
            hosts = hosts[1:-1]
        found |= {str(h) for h in hosts if not excluded(h, items)}
    return found


@settings(max_examples=200, deadline=None)
@given(data=st.data(), chosen=st.lists(networks(), min_size=1, max_size=3), ports=ports)
def test_every_target_and_hot_address_is_inside_the_subnets_outside_the_excludes(
    data: st.DataObject, chosen: list[tuple[int, str]], ports: list[int]
) -> None:
    subnets = [subnet for _, subnet in chosen]
    exclude = data.draw(excludes(subnets))
    try:
        plan = plan_targets(subnets, exclude, ports, 2**20, allow_public=True)
    except TargetsError:
        assume(False)  # a special range: refused, nothing planned
        raise
    networks_ = [ipaddress.ip_network(s, strict=False) for s in subnets]

    def inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        # `in` is False across versions: an IPv4 address is never inside an IPv6 subnet.
        return any(address in n for n in networks_) and not excluded(address, exclude)

    targets = list(plan)
    assert len(targets) == plan.count
    for target in targets:
        assert target.port in ports
        assert inside(ipaddress.ip_address(target.address)), target
    assert {t.address for t in targets} == expected_addresses(subnets, exclude)

    scope = plan.scope()
    for target in targets:
        assert scope.allows(target.address)

    in_use = data.draw(st.lists(st.sampled_from(targets), max_size=4)) if targets else []
    vacated = data.draw(st.lists(st.sampled_from(targets), max_size=4)) if targets else []
    per, bound = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 32))
    hot = likely_addresses(
        plan,
        [normalised(s) for s in subnets],
        [t.address for t in in_use],
        [t.address for t in vacated],
        per,
        bound,
    )
    assert hot.size <= bound
    for target in plan_targets_of(hot, plan):
        assert inside(ipaddress.ip_address(target.address)), target
        assert target.address not in {t.address for t in in_use}


def plan_targets_of(addresses: netaddr.IPSet, plan: object) -> list[Endpoint]:
    """The hot sweep's targets as the daemon makes them: the plan narrowed to them."""
    from poller.discovery.targets import TargetPlan

    assert isinstance(plan, TargetPlan)
    return list(TargetPlan(plan.addresses & addresses, plan.ports))


def test_hot_sweeps_follow_dockers_ipv6_allocation_too() -> None:
    """Docker's IPv6 IPAM hands out addresses in order, as for IPv4."""
    plan = plan_targets(["fd00::/120"], ["fd00::1"], [3000], 65536)
    chosen = likely_addresses(plan, ["fd00::/120"], ["fd00::2", "fd00::3"], ["fd00::9"], 3, 64)
    got = [t.address for t in plan_targets_of(chosen, plan)]
    # The vacated, the three after the highest in use, the three lowest free (IPv6 keeps
    # its first address: no network or broadcast address to drop).
    assert got == ["fd00::", "fd00::4", "fd00::5", "fd00::6", "fd00::9"]
    # Below 2**32 as well: never IPv4, for the lowest free and for those after the highest.
    plan = plan_targets(["::1/128"], [], [3000], 65536)
    chosen = likely_addresses(plan, ["::1/128"], [], [], 3, 64)
    assert [t.address for t in plan_targets_of(chosen, plan)] == ["::1"]
    plan = plan_targets(["::a00:0/120"], [], [3000], 65536, allow_public=True)
    chosen = likely_addresses(plan, ["::a00:0/120"], ["::a00:0", "::a00:1", "::a00:8"], [], 2, 64)
    got = [t.address for t in plan_targets_of(chosen, plan)]
    assert got == ["::a00:2", "::a00:3", "::a00:9", "::a00:a"]


def test_a_scope_never_mixes_versions() -> None:
    v4 = Scope(netaddr.IPSet(["0.0.0.0/30"]))
    v6 = Scope(netaddr.IPSet(["::/126"]))
    assert v4.allows("0.0.0.1")
    assert not v4.allows("::1")
    assert v6.allows("::1")
    assert not v6.allows("0.0.0.1")
    assert not v4.allows("not an address")
    assert not Scope(netaddr.IPSet()).allows("127.0.0.1")


# -- the edge checks: the seat belt for the next bug of this kind ---------------------------


def ok(request: httpx.Request) -> httpx.Response:
    """A streamed 200, as from a real socket."""
    return httpx.Response(200, stream=httpx.ByteStream(b"ok"))


def test_the_prober_refuses_a_target_outside_the_plan_before_any_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside the plan: never connected, counted as `out_of_scope`, an ERROR said once
    for discovery (a bug upstream); a member check of such an address (a member from
    before a change of subnets) fails quietly, so the member leaves the pool."""
    connects: list[Endpoint] = []
    requests: list[httpx.Request] = []

    async def connect(endpoint: Endpoint) -> None:
        connects.append(endpoint)

    monkeypatch.setattr("poller.discovery.asking.connect", connect)
    transport = httpx.MockTransport(lambda r: requests.append(r) or ok(r))
    plan = plan_targets(["127.0.0.1/32"], [], [9], 16)
    outside = [Endpoint("127.0.0.2", 9), Endpoint("::1", 9), Endpoint("127.0.0.3", 9)]

    async def go() -> tuple[object, object]:
        async with Prober(ProbeSettings(), 4, plan.scope(), transport=transport) as prober:
            swept = await prober.sweep(outside, keep_all=True)
            checked = await prober.check(Endpoint("127.0.0.2", 9))
        return swept, checked

    with caplog.at_level(logging.INFO):
        swept, checked = asyncio.run(go())
    assert connects == []
    assert requests == []
    assert swept.outcomes == {"out_of_scope": 3}  # type: ignore[attr-defined]
    assert {r.outcome for r in swept.results} == {Outcome.OUT_OF_SCOPE}  # type: ignore[attr-defined]
    assert checked.outcome is Outcome.OUT_OF_SCOPE  # type: ignore[attr-defined]
    assert not checked.healthy  # type: ignore[attr-defined]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "outside the target plan" in errors[0].getMessage()


def test_the_prober_still_probes_what_is_inside_the_plan() -> None:
    transport = httpx.MockTransport(ok)
    plan = plan_targets(["127.0.0.1/32"], [], [9], 16)

    async def go() -> Outcome:
        async with Prober(ProbeSettings(), 4, plan.scope(), transport=transport) as prober:
            return (await prober.check(Endpoint("127.0.0.1", 9))).outcome

    assert asyncio.run(go()) is Outcome.OK


class RecordingArpSocket:
    """Stands in for the raw socket: records each request's target, answers nothing."""

    def __init__(self) -> None:
        self.pair = socket.socketpair()
        self.asked: list[str] = []

    def fileno(self) -> int:
        return self.pair[0].fileno()

    def recv(self, size: int) -> bytes:
        raise BlockingIOError

    def send(self, frame: bytes) -> int:
        self.asked.append(address_text(4, int.from_bytes(frame[38:42], "big")))
        return len(frame)

    def close(self) -> None:
        for end in self.pair:
            end.close()


def link() -> arp.Link:
    return arp.Link(
        "lab0", 1, b"\x02\x00\x00\x00\x00\x01", "10.9.0.1", ipaddress.IPv4Network("10.9.0.0/24")
    )


def test_the_arp_sender_refuses_addresses_outside_the_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = RecordingArpSocket()
    monkeypatch.setattr(arp, "open_socket", lambda _link: fake)
    scope = plan_targets(["10.9.0.0/30"], [], [80], 16).scope()  # .1 and .2
    wanted = [
        int(ipaddress.IPv4Address(a)) for a in ("10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.1.1")
    ]

    found = asyncio.run(arp.ask(link(), wanted, 10_000, 1, 0.01, scope=scope))
    assert fake.asked == ["10.9.0.1", "10.9.0.2"]
    assert [address_text(4, a) for a in found.refused] == ["10.9.0.3", "10.9.1.1"]
    assert found.asked == 2


def test_the_arp_sender_opens_no_socket_when_nothing_is_in_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(_link: arp.Link) -> object:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(arp, "open_socket", refuse)
    scope = plan_targets(["10.9.0.0/30"], [], [80], 16).scope()
    found = asyncio.run(
        arp.ask(link(), [int(ipaddress.IPv4Address("10.9.0.9"))], 100, 1, 0.01, scope=scope)
    )
    assert found.refused == [int(ipaddress.IPv4Address("10.9.0.9"))]
    assert found.requests_sent == 0


def test_the_whole_refusals_as_users_read_them() -> None:
    with pytest.raises(TargetsError) as public:
        plan_targets(["8.8.8.0/30"], [], [80], 16)  # refused by default
    assert str(public.value) == (
        "discovery.subnets: 8.8.8.0/30 is neither a private range (10.0.0.0/8, "
        "172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7) nor loopback: no Docker "
        "network uses it, so poller will not sweep it. If the network is yours to probe, "
        "opt in with --allow-public, discovery.allow_public: true or "
        "POLLER_DISCOVERY__ALLOW_PUBLIC=true"
    )
    with pytest.raises(TargetsError) as special:
        check_subnet("169.254.0.0/24", allow_public=True)
    assert special.value.where == "discovery.subnets"
    assert special.value.problem == (
        "169.254.0.0/24 holds link-local (169.254.0.0/16): poller never sweeps it"
    )
    with pytest.raises(TargetsError) as large:
        plan_targets(["fd00::/64", "fd01::/120"], [], [80], 65536)
    assert str(large.value) == (
        "discovery.max_targets: fd00::/64, fd01::/120 x 1 port is "
        "18,446,744,073,709,551,872 targets, more than the bound of 65,536. An IPv6 "
        "network cannot be swept whole (a /64 holds 2**64 addresses): sweep the small "
        "range its containers get addresses from (the Docker network's --ip-range, a /112 "
        "or smaller)"
    )
