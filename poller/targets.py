"""Which (address, port) pairs a sweep tries. Pure: no I/O, no clock.

Subnets become one netaddr set: duplicates and overlaps merge, the network and broadcast
addresses of IPv4 prefixes shorter than /31 are dropped, excludes are removed, and the
size is bounded *before* anything is expanded, so a typo like /8 costs nothing. Order is
deterministic: by address, then by port (all ports of one address back to back, so one
neighbour-table entry serves them all).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import netaddr

from poller.config import parse_address_set_item
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
                text = str(ipaddress.ip_address(value)) if version == 6 else v4_text(value)
                for port in ports:
                    yield Endpoint(text, port)


def v4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def plan_targets(
    subnets: Sequence[str],
    exclude: Sequence[str],
    ports: Sequence[int],
    max_targets: int,
) -> TargetPlan:
    """Expand CIDRs minus excludes into a `TargetPlan` of at most `max_targets` pairs."""
    addresses = netaddr.IPSet()
    for subnet in subnets:
        network = netaddr.IPNetwork(subnet, expand_partial=False)
        if network.version == 4 and network.prefixlen < 31:
            addresses.add(netaddr.IPRange(network.first + 1, network.last - 1))
        else:
            addresses.add(network.cidr)
    for item in exclude:
        addresses = addresses - parse_address_set_item(item)
    plan = TargetPlan(addresses, tuple(sorted(set(ports))))
    if plan.count > max_targets:
        raise TargetsError(
            "discovery.max_targets",
            f"{', '.join(subnets)} x {len(plan.ports)} port(s) is {plan.count:,} targets, "
            f"more than the bound of {max_targets:,}; narrow the subnets or raise the bound",
        )
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
