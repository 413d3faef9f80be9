"""Checking the pool's members, each at its own pace, driven by due times.

The checker sleeps until the earliest member is due (or until it is woken: a new
candidate, new settings), then checks every member due by then as one batch, one HTTP
request each, and goes back to sleep at once: a batch still waiting for a slow member's
probe timeout never delays the others, and never overruns (its members are simply not
due again until it returns). So each member gets at most one connection from poller
per `pool.interval_seconds` (per `pool.rise_interval_seconds` while it rises).

A batch is accounted like a sweep (`kind="check"`): when half or more of it failed on
the poller's own side, it says nothing about the members and changes nothing.

With `pool.haproxy_checks`, a batch first asks `vouched` which of its members HAProxy's
own check passed lately; an UP member HAProxy vouches for, and whose own probe passed
within its `verify_after`, is counted as checked without a probe (`decisions.borrowable`).
Candidates, falling and down members, and members HAProxy does not vouch for are probed
as before: rise and fall count poller's own probes, and a death HAProxy's check sees is
confirmed by poller's within `fall` probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from poller.discovery.probing import Prober
from poller.endpoints import Endpoint
from poller.pool import decisions
from poller.pool.tracking import Tracker
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

FAILED_BATCH_PAUSE_SECONDS = 1.0
VERIFIED_SLACK = 64  # members gone whose last own probe is still remembered, at most


class Checker:
    """The checks of one service's members (with that service's probe)."""

    def __init__(
        self,
        tracker: Tracker,
        service: str,
        prober: Callable[[], Prober],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        vouched: Callable[[], Awaitable[Mapping[Endpoint, float]]] | None = None,
    ) -> None:
        """`vouched`: the members HAProxy's own check passed lately (None: probe all)."""
        self.tracker = tracker
        self.service = service
        self.prober = prober
        self.metrics = metrics
        self.clock = clock
        self.vouched = vouched
        self.verified: dict[Endpoint, float] = {}  # when poller's own probe last passed
        self.busy: set[Endpoint] = set()
        self.wake = asyncio.Event()
        self.queue = decisions.DueQueue()
        self._queued_with: object = None  # the settings the queue was built with
        tracker.on_members_change.append(self._changed)

    def _changed(self, service: str) -> None:
        if service == self.service:
            self._queued_with = None
            self.wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as batches:
            while True:
                self.wake.clear()
                settings = self.tracker.settings
                pool = self.tracker.pools[self.service]
                if self._queued_with is not settings:
                    # New members, or new settings (a SIGHUP): queue them all again.
                    self.queue.rebuild(pool, settings, self.busy)
                    self._queued_with = settings
                members = self.queue.pop_due(pool, settings, self.clock(), self.busy)
                if members:
                    self.busy.update(members)
                    batches.create_task(self._batch(members))
                wake_at = self.queue.wake_at()
                delay = None if wake_at is None else max(0.0, wake_at - self.clock())
                await woken(self.wake, delay)

    async def _batch(self, members: list[Endpoint]) -> None:
        try:
            probed = await self._borrow(members)
            if probed:
                async with self.prober().lease() as prober:
                    found = await prober.checks(probed, self.service)
                self.tracker.checked(self.service, found, probed)
                now = self.clock()
                for result in found.results:
                    if result.healthy:
                        self.verified[result.endpoint] = now
        except Exception:
            # A bug, not a node's doing (probes never raise for what a node does): say so
            # loudly and keep checking; the members are due again at their pace.
            log.exception("member checks failed unexpectedly")
            self.metrics.task_failures.labels(task="check").inc()
            await asyncio.sleep(FAILED_BATCH_PAUSE_SECONDS)  # no tight loop on a bug
        finally:
            self.busy.difference_update(members)
            pool, settings = self.tracker.pools[self.service], self.tracker.settings
            for endpoint in members:
                member = pool.members.get(endpoint)
                if member is not None:
                    self.queue.push(member, settings)
            self.wake.set()

    async def _borrow(self, members: list[Endpoint]) -> list[Endpoint]:
        """Count the members HAProxy's passed checks answer for; the rest, to probe."""
        if self.vouched is None:
            return members
        vouched = await self.vouched()
        pool = self.tracker.pools[self.service]
        if len(self.verified) > len(pool.members) + VERIFIED_SLACK:
            self.verified = {e: t for e, t in self.verified.items() if e in pool.members}
        borrowed, probed = decisions.borrowable(
            pool, members, vouched, self.verified, self.clock(), self.tracker.settings
        )
        if borrowed:
            self.tracker.vouched(self.service, borrowed)
        return probed


async def woken(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set or `seconds` passed (None: no timer). asyncio.timeout,
    not wait_for: 3.11's wait_for loses a cancellation that comes as the event is set, and
    the checker would outlive its shutdown."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
