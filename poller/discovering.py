"""Discovering new members: discovery sweeps, one at a time, when they are due.

APScheduler says when a sweep is due (every `discovery.interval_seconds`, on the wall
clock, mended after clock jumps); its job only marks it due, so it never runs long and
is never skipped. This task runs the sweeps: when one takes longer than its interval,
the next runs back to back, which is counted (`poller_sweep_overruns_total`) and logged
once when it starts and once when it ends, never a line per tick. Endpoints the pool
already knows are skipped (their own checks cover them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from poller.metrics import Metrics
from poller.probing import Prober
from poller.results import Progress, Sweep
from poller.sweeping import Discovery, discover
from poller.tracking import Tracker

log = logging.getLogger("poller")

FAILED_SWEEP_PAUSE_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 10.0


class Discoverer:
    def __init__(
        self,
        tracker: Tracker,
        discovery: Callable[[], Discovery],
        prober: Callable[[], Prober],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.discovery = discovery
        self.prober = prober
        self.metrics = metrics
        self.clock = clock
        self.due = asyncio.Event()
        self.overrunning = False
        self.sweeping_since: float | None = None

    def mark_due(self) -> None:
        self.due.set()

    async def run(self) -> None:
        while True:
            await self.due.wait()
            self.due.clear()
            self.sweeping_since = self.clock()
            try:
                found = await self._sweep()
                self.tracker.discovered(found)
            except Exception:
                log.exception("discovery sweep failed unexpectedly")
                self.metrics.task_failures.labels(task="discovery").inc()
                self.metrics.sweeps.labels(kind="discovery", result="failed").inc()
                await asyncio.sleep(FAILED_SWEEP_PAUSE_SECONDS)  # no tight loop on a bug
            finally:
                self.sweeping_since = None
            self._note_overrun(self.due.is_set())

    async def _sweep(self) -> Sweep:
        """One sweep; while it lasts longer than PROGRESS_EVERY_SECONDS, a line says how
        far it has come (a first connect sweep of a /16 takes minutes)."""
        discovery = self.discovery()
        progress = Progress(discovery.plan.count, self.clock())
        known = frozenset(self.tracker.pool.members)
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(self._report(progress))
            try:
                return await discover(discovery, self.prober(), known=known, progress=progress)
            finally:
                reporter.cancel()

    async def _report(self, progress: Progress) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_SECONDS)
            eta = progress.eta()
            log.info(
                "sweep in progress",
                extra={
                    "fields": {
                        "done": progress.done,
                        "targets": progress.total,
                        "answered": progress.answered,
                        "healthy": progress.healthy,
                        "elapsed_seconds": round(self.clock() - progress.started, 1),
                        "eta_seconds": None if eta is None else round(eta, 1),
                    }
                },
            )

    def _note_overrun(self, overran: bool) -> None:
        if overran:
            self.metrics.sweep_overruns.labels(kind="discovery").inc()
        if overran and not self.overrunning:
            log.warning(
                "discovery sweeps take longer than discovery.interval_seconds; "
                "running them back to back",
                extra={"fields": {"interval_seconds": self.discovery().settings.interval_seconds}},
            )
        elif self.overrunning and not overran:
            log.info("discovery sweeps fit their interval again")
        self.overrunning = overran
