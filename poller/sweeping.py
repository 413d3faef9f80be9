"""One discovery sweep from settings: resolve the targets, pre-sweep with ARP, pace, probe.

The glue between the pure target planning, the host's interfaces and neighbour limits,
the ARP pre-sweep and the probing I/O. `poller scan` runs it once; the daemon runs it on
a schedule. Where the ARP pre-sweep runs, only the addresses that answered it are probed;
every other part of the plan (not on a local Ethernet segment, IPv6, no CAP_NET_RAW) gets
the paced connect sweep. Neither path drops a target silently: addresses that stayed
silent to ARP are counted as unreachable, as a connect would have found them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import netaddr

from poller import arp
from poller.config import DiscoverySettings
from poller.endpoints import Endpoint
from poller.errors import ConfigError, TargetsError
from poller.interfaces import auto_subnets
from poller.pacing import NeighbourLimits, NeighbourPacer, needs_pacing, neighbour_limits
from poller.probing import Prober
from poller.results import OUT_OF_SCOPE_DETAIL, Outcome, ProbeResult, Progress, Sweep
from poller.targets import (
    Scope,
    TargetPlan,
    address_text,
    host_bits_set,
    normalised,
    plan_targets,
)

log = logging.getLogger(__name__)


NO_SUBNET = (
    "no subnet to sweep: poller probes only what it is told to. Give one with --subnet CIDR "
    "(scan), POLLER_DISCOVERY__SUBNETS, or discovery.subnets in the --config file; inside "
    "the sidecar container, `auto` sweeps the container's own networks"
)


@dataclass(frozen=True)
class Discovery:
    """The resolved plan: what `auto` became, what will be probed, and how fast.

    The pacer lives as long as the plan: the neighbour table does not forget the addresses
    of one sweep when the next begins, so neither may the pacing."""

    subnets: tuple[str, ...]
    exclude: tuple[str, ...]
    plan: TargetPlan
    limits: NeighbourLimits
    pacer: NeighbourPacer
    settings: DiscoverySettings
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
    # The whole plan's addresses, which the ARP sender checks each request against (a hot
    # sweep's plan is a subset; its scope stays the whole plan's).
    scope: Scope | None = field(default=None, compare=False)
    # Interfaces where the edge check refused an ARP request already (an error said once).
    refusals: set[str] = field(default_factory=set, compare=False)

    @property
    def method(self) -> str:
        if not self.segments:
            return "connect"
        return "arp" if self.rest is None or self.rest.count == 0 else "arp+connect"

    def subset(self, addresses: netaddr.IPSet) -> Discovery:
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


def resolve(discovery: DiscoverySettings, ports: Sequence[int] | None = None) -> Discovery:
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
    base = Discovery(
        tuple(subnets),
        tuple(exclude),
        plan,
        limits,
        pacer,
        discovery,
        normalised=changed,
        scope=plan.scope(),
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


async def discover(
    resolved: Discovery,
    prober: Prober,
    keep_all: bool = False,
    known: Collection[Endpoint] = frozenset(),
    progress: Progress | None = None,
) -> Sweep:
    """One discovery sweep of the plan; `known` endpoints (the pool's members, which their
    own checks cover) are skipped, with neither a connect nor a request. `progress`, when
    given, follows it (its `eta` is set here, from the plan)."""
    log.debug(
        "sweep starting",
        extra={
            "fields": {
                "targets": resolved.plan.count,
                "method": resolved.method,
                "neighbour_budget": resolved.limits.budget,
                "neighbour_hold_seconds": round(resolved.limits.hold_seconds, 3),
                "table_limit_source": resolved.limits.table_limit_source,
            }
        },
    )
    if progress is not None:
        progress.eta = _eta(resolved, progress)
    if not resolved.segments:
        return await prober.sweep(resolved.plan, resolved.pacer, keep_all, known, progress)
    started_wall, started = time.time(), time.perf_counter()
    ports = resolved.plan.ports
    silent: list[int] = []
    refused: list[int] = []
    settings = resolved.settings
    scope = resolved.scope if resolved.scope is not None else resolved.plan.scope()
    # Probing starts at each address's first ARP reply, while the asking goes on: the
    # probe deadline of a slow node then overlaps the pre-sweep instead of following it.
    queue: asyncio.Queue[Endpoint | None] = asyncio.Queue()
    probing = asyncio.create_task(prober.sweep(queue, resolved.pacer, keep_all, known, progress))

    def enqueue(value: int) -> None:
        for port in ports:
            queue.put_nowait(Endpoint(address_text(4, value), port))

    try:
        for segment in resolved.segments:
            addresses = [
                value
                for cidr in segment.addresses.iter_cidrs()
                for value in range(cidr.first, cidr.last + 1)
            ]
            try:
                asked = await arp.ask(
                    segment.link,
                    addresses,
                    settings.arp_rate_per_second,
                    settings.arp_attempts,
                    settings.arp_reply_wait_seconds,
                    on_answer=enqueue,
                    scope=scope,
                )
            except (arp.ArpUnavailable, OSError) as exc:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing
                return _failed(resolved, segment, exc, started_wall, started)
            if asked.refused:
                refused += asked.refused
                _refused_once(resolved, segment, asked.refused)
            log.debug(
                "arp pre-sweep",
                extra={
                    "fields": {
                        "interface": segment.link.interface,
                        "asked": asked.asked,
                        "answered": len(asked.answered),
                        "requests": asked.requests_sent,
                        "seconds": round(asked.duration_seconds, 3),
                    }
                },
            )
            if not asked.answered and addresses and not resolved.hot:
                # Not one reply, not even a gateway's: this segment does not answer ARP
                # (an overlay or a filter), so silence proves nothing. Connect instead.
                if segment.link.interface not in resolved.silent_segments:
                    resolved.silent_segments.add(segment.link.interface)
                    log.warning(
                        "no ARP reply on the segment; sweeping it with connects",
                        extra={"fields": {"interface": segment.link.interface}},
                    )
                for value in addresses:
                    enqueue(value)
                continue
            if asked.answered and segment.link.interface in resolved.silent_segments:
                resolved.silent_segments.discard(segment.link.interface)
                log.info(
                    "the segment answers ARP again",
                    extra={"fields": {"interface": segment.link.interface}},
                )
            quiet = [value for value in addresses if value not in asked.answered]
            silent += quiet
            if progress is not None:
                progress.done += len(quiet) * len(ports)
        for target in resolved.rest or ():
            queue.put_nowait(target)
        queue.put_nowait(None)
        found = await probing
    finally:
        probing.cancel()
    silent_targets = [Endpoint(address_text(4, value), port) for value in silent for port in ports]
    for endpoint in silent_targets:
        found.targets += 1
        if endpoint in known:
            found.known += 1
            continue
        found.outcomes[Outcome.UNREACHABLE] += 1
        if keep_all:
            found.results.append(
                ProbeResult(endpoint, Outcome.UNREACHABLE, False, 0.0, detail="no ARP reply")
            )
    for value in refused:
        for port in ports:
            found.targets += 1
            found.outcomes[Outcome.OUT_OF_SCOPE] += 1
            endpoint = Endpoint(address_text(4, value), port)
            found.results.append(
                ProbeResult(endpoint, Outcome.OUT_OF_SCOPE, False, 0.0, detail=OUT_OF_SCOPE_DETAIL)
            )
    found.results.sort(key=lambda r: r.endpoint)
    found.started_at = started_wall
    found.duration_seconds = time.perf_counter() - started
    return found


def _refused_once(resolved: Discovery, segment: Segment, refused: list[int]) -> None:
    """An ARP request outside the plan was about to be sent: a bug. Said once per link."""
    if segment.link.interface in resolved.refusals:
        return
    resolved.refusals.add(segment.link.interface)
    log.error(
        "refused to ask addresses outside the target plan (a bug: please report it)",
        extra={
            "fields": {
                "interface": segment.link.interface,
                "refused": len(refused),
                "first": address_text(4, refused[0]),
                "subnets": list(resolved.subnets),
            }
        },
    )


def _eta(resolved: Discovery, progress: Progress) -> Callable[[], float | None]:
    """How long the rest of a sweep should take, from its plan: the ARP request rate for
    the segments asked first, the neighbour pacing (or, on loopback, the pace so far) for
    the connect sweep."""
    settings = resolved.settings
    asked = sum(int(segment.addresses.size) for segment in resolved.segments)
    arp_seconds = settings.arp_attempts * (
        asked / settings.arp_rate_per_second + settings.arp_reply_wait_seconds
    )
    connect = resolved.rest if resolved.segments else resolved.plan
    paced = connect is not None and any(
        needs_pacing(str(cidr.ip)) for cidr in connect.addresses.iter_cidrs()
    )
    per_address = len(resolved.plan.ports)

    def eta() -> float | None:
        now = time.monotonic()
        elapsed = now - progress.started
        left = progress.total - progress.done
        if left <= 0:
            return 0.0
        if resolved.segments and elapsed < arp_seconds:
            return arp_seconds - elapsed
        if paced:
            return resolved.pacer.finish(math.ceil(left / per_address), now) - now
        if progress.done:
            return elapsed / progress.done * left
        return None

    return eta


def _failed(
    resolved: Discovery, segment: Segment, exc: BaseException, wall: float, started: float
) -> Sweep:
    """The pre-sweep broke on our side (link down, socket gone): the sweep means nothing."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    first = next(iter(resolved.plan))
    detail = f"ARP on {segment.link.interface}: {reason}"
    found = Sweep(targets=resolved.plan.count, started_at=wall)
    found.outcomes[Outcome.LOCAL_ERROR] = resolved.plan.count
    found.results.append(ProbeResult(first, Outcome.LOCAL_ERROR, False, 0.0, detail=detail))
    found.duration_seconds = time.perf_counter() - started
    return found
