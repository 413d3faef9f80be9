"""One discovery sweep of a plan (`plans.SweepPlan`): pre-sweep with ARP, pace, probe.

The glue between the plan, the ARP pre-sweep and the probing I/O. `poller scan` runs it
once; the daemon runs it on a schedule. Where the ARP pre-sweep runs, only the addresses
that answered it are probed; every other part of the plan (not on a local Ethernet
segment, IPv6, no CAP_NET_RAW) gets the paced connect sweep. Neither path drops a target
silently: addresses that stayed silent to ARP are counted as unreachable, as a connect
would have found them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection

from poller.discovery import arp
from poller.discovery.pacing import needs_pacing
from poller.discovery.plans import Segment, SweepPlan
from poller.discovery.probing import Prober
from poller.discovery.targets import address_text
from poller.endpoints import Endpoint
from poller.results import OUT_OF_SCOPE_DETAIL, Outcome, ProbeResult, Progress, Sweep

log = logging.getLogger(__name__)


async def run_sweep(
    resolved: SweepPlan,
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
                    scope=resolved.scope,
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


def _refused_once(resolved: SweepPlan, segment: Segment, refused: list[int]) -> None:
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


def _eta(resolved: SweepPlan, progress: Progress) -> Callable[[], float | None]:
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
    resolved: SweepPlan, segment: Segment, exc: BaseException, wall: float, started: float
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
