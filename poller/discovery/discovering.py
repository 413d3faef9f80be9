"""Discovering new members: discovery sweeps, one at a time, when they are due.

Two kinds. A full sweep asks the whole plan (every `discovery.full_interval_seconds`);
a hot sweep (every `discovery.interval_seconds`, when that is shorter) asks only where
new containers are likely to appear: Docker's IPAM hands out the next address after the
last or the first free one, so the addresses after the highest in use, the lowest free
and the recently vacated ones (`targets.likely_addresses`). Both go through the same
probing, pacing and ARP rules; a full sweep makes a pending hot one needless.

APScheduler says when each is due (on the wall clock, mended after clock jumps); its jobs
only mark them due, so they never run long and are never skipped. This task runs the
sweeps: when one takes longer than its interval, the next of its kind runs back to back,
which is counted (`poller_sweep_overruns_total`) and logged once when it starts and once
when it ends, never a line per tick. Endpoints the pool already knows are skipped (their
own checks cover them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from poller.discovery.plans import SweepPlan
from poller.discovery.probing import Prober
from poller.discovery.sweeping import run_sweep
from poller.discovery.targets import likely_addresses
from poller.endpoints import Endpoint
from poller.pool.tracking import Tracker
from poller.results import Progress, Sweep, SweepKind
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

FAILED_SWEEP_PAUSE_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 10.0


class Discoverer:
    def __init__(
        self,
        tracker: Tracker,
        discovery: Callable[[], SweepPlan],
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
        self.pending: set[SweepKind] = set()  # the kinds due
        self.overrunning: set[SweepKind] = set()
        self.sweeping_since: float | None = None

    def mark_due(self) -> None:
        """A full sweep is due."""
        self.pending.add(SweepKind.FULL)
        self.due.set()

    def mark_hot_due(self) -> None:
        self.pending.add(SweepKind.HOT)
        self.due.set()

    async def run(self) -> None:
        while True:
            await self.due.wait()
            self.due.clear()
            kind = SweepKind.FULL if SweepKind.FULL in self.pending else SweepKind.HOT
            # A full sweep also asks every address a hot one would.
            self.pending -= {SweepKind.FULL, SweepKind.HOT} if kind is SweepKind.FULL else {kind}
            started = self.sweeping_since = self.clock()
            try:
                found = await self._sweep(kind)
                self.tracker.discovered(found, kind)
            except Exception:
                log.exception(
                    "discovery sweep failed unexpectedly", extra={"fields": {"kind": kind}}
                )
                self.metrics.task_failures.labels(task="discovery").inc()
                self.metrics.sweeps.labels(kind=kind, result="failed").inc()
                await asyncio.sleep(FAILED_SWEEP_PAUSE_SECONDS)  # no tight loop on a bug
            finally:
                self.sweeping_since = None
            # Only a sweep longer than its interval overran: one that merely started late
            # (a hot sweep queued behind a full one) met the next tick without overrunning.
            self._note_overrun(kind, self.clock() - started > self._interval(kind))
            if self.pending:
                self.due.set()

    def hot_plan(self) -> SweepPlan:
        """The likely addresses, as a discovery of its own (same pacer, same links)."""
        discovery = self.discovery()
        settings = discovery.settings
        addresses = likely_addresses(
            discovery.plan,
            discovery.subnets,
            self.tracker.addresses(),
            list(self.tracker.vacated),
            settings.hot_per_subnet,
            settings.hot_max_targets,
        )
        return discovery.subset(addresses)

    async def _sweep(self, kind: SweepKind) -> Sweep:
        """One sweep; while it lasts longer than PROGRESS_EVERY_SECONDS, a line says how
        far it has come (a first connect sweep of a /16 takes minutes)."""
        discovery = self.discovery() if kind is SweepKind.FULL else self.hot_plan()
        progress = Progress(discovery.plan.count, self.clock())
        known = self.known()
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(self._report(progress))
            try:
                async with self.prober().lease() as prober:
                    return await run_sweep(discovery, prober, known=known, progress=progress)
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

    def known(self) -> frozenset[Endpoint]:
        """Endpoints a sweep can skip: members of every service that asks their port
        (their own checks cover them); one a service does not know yet is asked again."""
        prober = self.prober()
        pools = self.tracker.pools
        every = {e for pool in pools.values() for e in pool.members}
        return frozenset(
            e
            for e in every
            if all(e in pools[name].members for name, _ in prober.asks(e.port) if name in pools)
        )

    def _interval(self, kind: SweepKind) -> float:
        settings = self.discovery().settings
        if kind is SweepKind.FULL and settings.full_interval_seconds is not None:
            return settings.full_interval_seconds
        return settings.interval_seconds

    def _note_overrun(self, kind: SweepKind, overran: bool) -> None:
        if overran:
            self.metrics.sweep_overruns.labels(kind=kind).inc()
        if overran and kind not in self.overrunning:
            self.overrunning.add(kind)
            log.warning(
                "sweeps take longer than their interval; running them back to back",
                extra={"fields": {"kind": kind}},
            )
        elif not overran and kind in self.overrunning:
            self.overrunning.discard(kind)
            log.info("sweeps fit their interval again", extra={"fields": {"kind": kind}})
