"""Which (address, port) pairs a sweep tries, and which addresses poller may ever send a
packet to. Pure: no I/O, no clock.

Subnets are checked first (`check_subnet`: only ranges a Docker network can use, unless the
user opts in), then become one netaddr set: duplicates and overlaps merge, the network and
broadcast addresses of IPv4 prefixes shorter than /31 are dropped, excludes are removed,
and the size is bounded *before* anything is expanded, so a typo like /8 costs nothing.
Order is deterministic: by address, then by port (all ports of one address back to back,
so one neighbour-table entry serves them all). Numbers become address text in one place
(`address_text`), always in the subnet's own IP version; `Scope` is the plan's addresses
in the form the edge checks (the prober and the ARP sender) ask before any socket opens.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import netaddr

from poller.endpoints import Endpoint
from poller.errors import TargetsError


@dataclass(frozen=True)
class TargetPlan:
    """A bounded, lazily expanded set of targets."""

    addresses: netaddr.IPSet
    ports: tuple[int, ...]

    @property
    def count(self) -> int:
        return int(self.addresses.size) * len(self.ports)

    def __len__(self) -> int:
        return self.count  # bounded by max_targets, so it fits

    def __iter__(self) -> Iterator[Endpoint]:
        ports = sorted(self.ports)
        for cidr in self.addresses.iter_cidrs():
            version = cidr.version
            for value in range(cidr.first, cidr.last + 1):
                text = address_text(version, value)
                for port in ports:
                    yield Endpoint(text, port)

    def scope(self) -> Scope:
        return Scope(self.addresses)


def parse_address_set_item(item: str) -> netaddr.IPSet:
    """One `exclude` entry (address, CIDR or `first-last` range) as an IPSet."""
    try:
        if "-" in item:
            first, last = (part.strip() for part in item.split("-", 1))
            return netaddr.IPSet(netaddr.IPRange(first, last))
        return netaddr.IPSet([network_of(item)])
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise ValueError(f"{item!r} is not an address, CIDR or range") from exc


def address_text(version: int, value: int) -> str:
    """Address number `value` of IP `version` as canonical text: the one way numbers become
    addresses. The version is never guessed from the value: `ipaddress.ip_address(1)` is
    0.0.0.1, so an IPv6 subnet under 2**32 (`::1`, `::a00:0/126`) once became IPv4
    targets, and a probe left the machine."""
    if version == 4:
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{value} is not an IPv4 address")
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    if version == 6:
        return str(ipaddress.IPv6Address(value))
    raise ValueError(f"IP version {version} is neither 4 nor 6")


class Scope:
    """The addresses poller may send a packet to (a plan's), asked by address text or by
    (version, number) in O(log ranges): the edge checks run once per target."""

    def __init__(self, addresses: netaddr.IPSet) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for span in addresses.iter_ipranges():  # sorted, merged, one version each
            self._starts[span.version].append(span.first)
            self._ends[span.version].append(span.last)

    def holds(self, version: int, value: int) -> bool:
        starts = self._starts[version]
        at = bisect_right(starts, value) - 1
        return at >= 0 and value <= self._ends[version][at]

    def allows(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return self.holds(parsed.version, int(parsed))


# The ranges Docker networks are made from (its default pools and the private ranges users
# give it) and loopback (the demo, the tests). Anything else needs the user's word.
PRIVATE = netaddr.IPSet(
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]
)
LOOPBACK = netaddr.IPSet(["127.0.0.0/8", "::1/128"])
# Ranges no sweep has any business in, opt-in or not.
SPECIAL = (
    (netaddr.IPNetwork("0.0.0.0/8"), "the 'this network' range 0.0.0.0/8"),
    (netaddr.IPNetwork("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (netaddr.IPNetwork("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (netaddr.IPNetwork("240.0.0.0/4"), "reserved or broadcast (240.0.0.0/4)"),
    (netaddr.IPNetwork("::/128"), "the unspecified address ::"),
    (
        netaddr.IPNetwork("::ffff:0:0/96"),
        "IPv4-mapped (::ffff:0:0/96; its packets are IPv4: give the IPv4 subnet itself)",
    ),
    (netaddr.IPNetwork("fe80::/10"), "link-local (fe80::/10)"),
    (netaddr.IPNetwork("ff00::/8"), "multicast (ff00::/8)"),
)
ALLOW_PUBLIC_HOW = (
    "--allow-public, discovery.allow_public: true or POLLER_DISCOVERY__ALLOW_PUBLIC=true"
)


def network_of(subnet: str) -> netaddr.IPNetwork:
    """A CIDR as netaddr reads it, partial addresses (`10.0/16`) refused."""
    return netaddr.IPNetwork(subnet, expand_partial=False)


def check_subnet(subnet: str, allow_public: bool, field: str = "discovery.subnets") -> None:
    """Refuse a subnet no Docker network uses: special ranges always, public ones unless
    `allow_public` (the user says they own it). Private and loopback ranges pass."""
    network = network_of(subnet)
    for special, what in SPECIAL:
        if special.version == network.version and (
            network.first <= special.last and special.first <= network.last
        ):
            raise TargetsError(field, f"{subnet} holds {what}: poller never sweeps it")
    inside = netaddr.IPSet([network.cidr])
    if inside.issubset(PRIVATE) or inside.issubset(LOOPBACK) or allow_public:
        return
    raise TargetsError(
        field,
        f"{subnet} is neither a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
        "100.64.0.0/10, fc00::/7) nor loopback: no Docker network uses it, so poller will "
        f"not sweep it. If the network is yours to probe, opt in with {ALLOW_PUBLIC_HOW}",
    )


def host_bits_set(subnet: str) -> bool:
    """`127.0.0.5/28`: a CIDR naming an address inside the network, not the network."""
    network = network_of(subnet)
    return bool(network.ip != network.network)


def normalised(subnet: str) -> str:
    """`127.0.0.5/28` -> `127.0.0.0/28`, `FD00:0::/126` -> `fd00::/126`: the network a
    CIDR means, in canonical text."""
    network = network_of(subnet)
    return f"{address_text(network.version, network.first)}/{network.prefixlen}"


def plan_targets(
    subnets: Sequence[str],
    exclude: Sequence[str],
    ports: Sequence[int],
    max_targets: int,
    allow_public: bool = False,
) -> TargetPlan:
    """Expand CIDRs minus excludes into a `TargetPlan` of at most `max_targets` pairs;
    every subnet passes `check_subnet` first."""
    addresses = netaddr.IPSet()
    for subnet in subnets:
        check_subnet(subnet, allow_public)
        network = network_of(subnet)
        if network.version == 4 and network.prefixlen < 31:
            addresses.add(netaddr.IPRange(network.first + 1, network.last - 1))
        else:
            addresses.add(network.cidr)
    for item in exclude:
        addresses = addresses - parse_address_set_item(item)
    plan = TargetPlan(addresses, tuple(sorted(set(ports))))
    if plan.count > max_targets:
        ports_text = "1 port" if len(plan.ports) == 1 else f"{len(plan.ports)} ports"
        problem = (
            f"{', '.join(subnets)} x {ports_text} is {plan.count:,} targets, more than the "
            f"bound of {max_targets:,}; narrow the subnets, or raise the bound "
            "(discovery.max_targets, POLLER_DISCOVERY__MAX_TARGETS)"
        )
        if any(network_of(s).version == 6 for s in subnets):
            problem = (
                f"{', '.join(subnets)} x {ports_text} is {plan.count:,} targets, more than "
                f"the bound of {max_targets:,}. An IPv6 network cannot be swept whole (a /64 "
                "holds 2**64 addresses): sweep the small range its containers get addresses "
                "from (the Docker network's --ip-range, a /112 or smaller)"
            )
        raise TargetsError("discovery.max_targets", problem)
    return plan


def likely_addresses(
    plan: TargetPlan,
    subnets: Sequence[str],
    in_use: Collection[str],
    vacated: Sequence[str],
    per_subnet: int,
    bound: int,
) -> netaddr.IPSet:
    """Where new containers are likely to appear first, at most `bound` addresses of the
    plan. Docker does not scatter addresses: its IPAM hands out the next one after the last
    (serially, wrapping around: Swarm overlays) or the first free one (bridges). So, per
    subnet: the addresses most recently vacated (newest first), the `per_subnet` after the
    highest one in use (wrapping to the subnet's start), and the `per_subnet` lowest free.
    Addresses in use are left out: their members' own checks cover them."""
    used = {netaddr.IPAddress(a) for a in in_use}
    chosen: list[netaddr.IPAddress] = []

    def take(address: netaddr.IPAddress) -> bool:
        """Choose a free address of the plan (once); whether it was a free one."""
        if address in used or address not in plan.addresses:
            return False
        if address not in chosen:
            chosen.append(address)
        return True

    for subnet in subnets:
        network = netaddr.IPNetwork(subnet)
        for address in vacated:
            if netaddr.IPAddress(address) in network:
                take(netaddr.IPAddress(address))
        mine = [a for a in used if a in network]
        if mine:
            span, offset = network.size, int(max(mine)) - network.first
            taken = 0
            for step in range(1, min(span, 4 * per_subnet)):
                if taken >= per_subnet:
                    break
                value = network.first + (offset + step) % span
                taken += take(netaddr.IPAddress(value, network.version))
        taken = 0
        for cidr in (plan.addresses & netaddr.IPSet([network])).iter_cidrs():
            for value in range(cidr.first, cidr.last + 1):
                if taken >= per_subnet:
                    break
                taken += take(netaddr.IPAddress(value, network.version))
    return netaddr.IPSet(chosen[:bound])
