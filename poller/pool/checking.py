"""Checking the pool's members, each at its own pace, driven by due times.

The checker sleeps until the earliest member is due (or until it is woken: a new
candidate, new settings), then checks every member due by then as one batch, one HTTP
request each, and goes back to sleep at once: a batch still waiting for a slow member's
probe timeout never delays the others, and never overruns (its members are simply not
due again until it returns). So each member gets at most one connection from poller
per `pool.interval_seconds` (per `pool.rise_interval_seconds` while it rises).

A batch is accounted like a sweep (`kind="check"`): when half or more of it failed on
the poller's own side, it says nothing about the members and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from poller.discovery.probing import Prober
from poller.endpoints import Endpoint
from poller.pool import decisions
from poller.pool.tracking import Tracker
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

FAILED_BATCH_PAUSE_SECONDS = 1.0


class Checker:
    """The checks of one service's members (with that service's probe)."""

    def __init__(
        self,
        tracker: Tracker,
        service: str,
        prober: Callable[[], Prober],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.service = service
        self.prober = prober
        self.metrics = metrics
        self.clock = clock
        self.busy: set[Endpoint] = set()
        self.wake = asyncio.Event()
        tracker.on_members_change.append(self._changed)

    def _changed(self, service: str) -> None:
        if service == self.service:
            self.wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as batches:
            while True:
                self.wake.clear()
                settings = self.tracker.settings
                now = self.clock()
                pool = self.tracker.pools[self.service]
                members = decisions.due(pool, settings, now, self.busy)
                if members:
                    self.busy.update(members)
                    batches.create_task(self._batch(members))
                wake_at = decisions.next_due(pool, settings, self.busy)
                delay = None if wake_at is None else max(0.0, wake_at - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)

    async def _batch(self, members: list[Endpoint]) -> None:
        try:
            async with self.prober().lease() as prober:
                found = await prober.checks(members, self.service)
            self.tracker.checked(self.service, found, members)
        except Exception:
            # A bug, not a node's doing (probes never raise for what a node does): say so
            # loudly and keep checking; the members are due again at their pace.
            log.exception("member checks failed unexpectedly")
            self.metrics.task_failures.labels(task="check").inc()
            await asyncio.sleep(FAILED_BATCH_PAUSE_SECONDS)  # no tight loop on a bug
        finally:
            self.busy.difference_update(members)
            self.wake.set()
