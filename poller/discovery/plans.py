"""The plan of a discovery sweep, resolved from the settings: what `auto` became, the
bounded targets, the neighbour-table pacing, and which parts of the plan are asked with
ARP first (the local Ethernet segments a raw socket can reach) or swept with connects.
Reads the host's interfaces and limits; sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import netaddr

from poller.config import DiscoverySettings
from poller.discovery import arp
from poller.discovery.interfaces import auto_subnets
from poller.discovery.pacing import NeighbourLimits, NeighbourPacer, neighbour_limits
from poller.discovery.targets import Scope, TargetPlan, host_bits_set, normalised, plan_targets
from poller.errors import ConfigError, TargetsError

log = logging.getLogger(__name__)


NO_SUBNET = (
    "no subnet to sweep: poller probes only what it is told to. Give one with --subnet CIDR "
    "(scan), POLLER_DISCOVERY__SUBNETS, or discovery.subnets in the --config file; inside "
    "the sidecar container, `auto` sweeps the container's own networks"
)


@dataclass(frozen=True)
class SweepPlan:
    """The resolved plan: what `auto` became, what will be probed, and how fast.

    The pacer lives as long as the plan: the neighbour table does not forget the addresses
    of one sweep when the next begins, so neither may the pacing."""

    subnets: tuple[str, ...]
    exclude: tuple[str, ...]
    plan: TargetPlan
    limits: NeighbourLimits
    pacer: NeighbourPacer
    settings: DiscoverySettings
    # The whole plan's addresses: the prober and the ARP sender check every address
    # against it (a hot sweep's plan is a subset; its scope stays the whole plan's).
    scope: Scope
    segments: tuple[Segment, ...] = ()  # the parts of the plan asked with ARP first
    rest: TargetPlan | None = None  # the parts swept with connects (None: the whole plan)
    method_note: str = ""  # why ARP is not used where it could have been
    # A hot sweep asks a few likely addresses: there, silence is just empty addresses
    # (whether the segment answers ARP at all is the full sweeps' call).
    hot: bool = False
    # Segments found not answering ARP (said once, not at every sweep).
    silent_segments: set[str] = field(default_factory=set, compare=False)
    # Subnets given with host bits set, and the network they were taken as.
    normalised: tuple[tuple[str, str], ...] = ()
    # Interfaces where the edge check refused an ARP request already (an error said once).
    refusals: set[str] = field(default_factory=set, compare=False)

    @property
    def method(self) -> str:
        if not self.segments:
            return "connect"
        return "arp" if self.rest is None or self.rest.count == 0 else "arp+connect"

    def subset(self, addresses: netaddr.IPSet) -> SweepPlan:
        """The same discovery over only `addresses` (a hot sweep), sharing the pacer."""
        plan = TargetPlan(self.plan.addresses & addresses, self.plan.ports)
        segments = tuple(
            Segment(segment.link, segment.addresses & addresses)
            for segment in self.segments
            if segment.addresses & addresses
        )
        rest = (
            None if self.rest is None else TargetPlan(self.rest.addresses & addresses, plan.ports)
        )
        return replace(self, plan=plan, segments=segments, rest=rest, hot=True)

    @property
    def ipv6(self) -> bool:
        """Whether part of the plan is IPv6 (swept with connects: ARP is IPv4's)."""
        return any(cidr.version == 6 for cidr in self.plan.addresses.iter_cidrs())

    def summary(self) -> dict[str, Any]:
        """What is swept and how, for logs, `/pool` and `scan --json`."""
        found: dict[str, Any] = {
            "subnets": list(self.subnets),
            "ports": list(self.plan.ports),
            "targets": self.plan.count,
            "method": self.method,
        }
        if self.normalised:
            found["normalised"] = dict(self.normalised)
        return found


@dataclass(frozen=True)
class Segment:
    """Addresses of the plan that sit on one local Ethernet link."""

    link: arp.Link
    addresses: netaddr.IPSet


def plan_sweep(discovery: DiscoverySettings, ports: Sequence[int] | None = None) -> SweepPlan:
    """Turn the discovery settings into a bounded plan (reads interfaces for `auto`, and
    for the ARP pre-sweep, which links hold the subnets and whether raw sockets work).
    `ports`: every service's (`Settings.ports()`); default: `discovery.ports`."""
    subnets, exclude = list(discovery.subnets), list(discovery.exclude)
    if not subnets:
        raise ConfigError("discovery.subnets", NO_SUBNET)
    if subnets == ["auto"]:
        subnets, own = auto_subnets()
        exclude += own  # never probe ourselves
        log.info("subnets detected", extra={"fields": {"subnets": subnets, "own": own}})
    ports = discovery.ports if ports is None else ports
    plan = plan_targets(subnets, exclude, ports, discovery.max_targets, discovery.allow_public)
    changed = tuple((s, normalised(s)) for s in subnets if host_bits_set(s))
    subnets = [normalised(s) for s in subnets]
    limits = neighbour_limits(table_limit=discovery.neighbour_table_limit)
    pacer = NeighbourPacer(limits.budget, limits.hold_seconds)
    base = SweepPlan(
        tuple(subnets),
        tuple(exclude),
        plan,
        limits,
        pacer,
        discovery,
        plan.scope(),
        normalised=changed,
    )
    if discovery.method == "connect":
        return base
    segments, note = _segments(subnets, plan, discovery.method == "arp")
    if not segments:
        log.debug("discovery by connect sweep", extra={"fields": {"why": note}})
        return replace(base, method_note=note)
    rest = netaddr.IPSet(plan.addresses)
    for segment in segments:
        rest -= segment.addresses
    return replace(
        base, segments=tuple(segments), rest=TargetPlan(rest, plan.ports), method_note=note
    )


def _segments(subnets: list[str], plan: TargetPlan, required: bool) -> tuple[list[Segment], str]:
    """The plan's addresses per local Ethernet link, when a raw socket can be opened."""
    by_link: dict[str, Segment] = {}
    notes = []
    for subnet in subnets:
        if ":" in subnet:
            if required:
                raise TargetsError(
                    "discovery.method",
                    f"`arp` is IPv4's and {subnet} is IPv6: use `auto` or `connect`",
                )
            notes.append(f"{subnet} is IPv6: swept with connects (no ARP)")
            continue
        link = arp.usable_link(subnet)
        if link is None:
            if required:
                raise TargetsError(
                    "discovery.method",
                    f"`arp` needs an Ethernet interface whose network holds {subnet}; "
                    "none of this host's has one (use `auto` or `connect`)",
                )
            notes.append(f"{subnet} is not on a local Ethernet link")
            continue
        addresses = plan.addresses & netaddr.IPSet([subnet])
        if link.interface in by_link:
            addresses |= by_link[link.interface].addresses
        by_link[link.interface] = Segment(link, addresses)
    for segment in by_link.values():
        try:
            arp.open_socket(segment.link).close()
        except arp.ArpUnavailable as exc:
            if required:
                raise TargetsError("discovery.method", f"`arp` cannot run: {exc}") from exc
            # Worth saying at info: the sweep will be much slower than it could be.
            log.info(
                "ARP pre-sweep unavailable; connect sweep", extra={"fields": {"why": str(exc)}}
            )
            return [], f"ARP pre-sweep unavailable: {exc}"
    return list(by_link.values()), "; ".join(notes)
