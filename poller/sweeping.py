"""One discovery sweep from settings: resolve the targets, pace, probe.

The glue between the pure target planning, the host's interfaces and neighbour limits,
and the probing I/O. `poller scan` runs it once; the daemon runs it on a schedule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from poller.config import DiscoverySettings, ProbeSettings
from poller.interfaces import auto_subnets
from poller.pacing import NeighbourLimits, NeighbourPacer, neighbour_limits
from poller.probing import Sweep, sweep
from poller.targets import TargetPlan, plan_targets

log = logging.getLogger(__name__)


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


def resolve(discovery: DiscoverySettings) -> Discovery:
    """Turn the discovery settings into a bounded plan (reads interfaces for `auto`)."""
    subnets, exclude = list(discovery.subnets), list(discovery.exclude)
    if subnets == ["auto"]:
        subnets, own = auto_subnets()
        exclude += own  # never probe ourselves
        log.info("subnets detected", extra={"fields": {"subnets": subnets, "own": own}})
    plan = plan_targets(subnets, exclude, discovery.ports, discovery.max_targets)
    limits = neighbour_limits(table_limit=discovery.neighbour_table_limit)
    pacer = NeighbourPacer(limits.budget, limits.hold_seconds)
    return Discovery(tuple(subnets), tuple(exclude), plan, limits, pacer)


async def discover(
    resolved: Discovery, probe: ProbeSettings, concurrency: int, keep_all: bool = False
) -> Sweep:
    log.debug(
        "sweep starting",
        extra={
            "fields": {
                "targets": resolved.plan.count,
                "neighbour_budget": resolved.limits.budget,
                "neighbour_hold_seconds": round(resolved.limits.hold_seconds, 3),
                "table_limit_source": resolved.limits.table_limit_source,
            }
        },
    )
    return await sweep(resolved.plan, probe, concurrency, pacer=resolved.pacer, keep_all=keep_all)
