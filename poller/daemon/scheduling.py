"""The periodic jobs, on APScheduler: a full sweep is due, a hot sweep is due (when full
sweeps are further apart than `discovery.interval_seconds`), a reconcile is due.

Both jobs only mark work as due (an event the discoverer or the reconciler waits on), so
they never run long and none is ever skipped; an instance more (a clock jump can make
APScheduler submit one twice) is harmless. They are coroutines: APScheduler runs plain
functions in a thread, and an asyncio.Event must be set from the loop's own thread.
APScheduler times them on the wall clock; `all_due_now` mends the schedule after a jump.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from poller.config import Settings


class Schedule:
    def __init__(
        self,
        sweep_due: Callable[[], None],
        hot_due: Callable[[], None],
        reconcile_due: Callable[[], None],
    ) -> None:
        self.scheduler = AsyncIOScheduler()
        self.sweep_due = _in_loop(sweep_due)
        self.hot_due = _in_loop(hot_due)
        self.reconcile_due = _in_loop(reconcile_due)

    def start(self, settings: Settings) -> None:
        self.configure(settings)
        self.scheduler.start()

    def configure(self, settings: Settings) -> None:
        for job in self.scheduler.get_jobs():
            job.remove()
        common: dict[str, Any] = {
            "coalesce": True,
            "misfire_grace_time": None,
            "max_instances": 4,
        }
        discovery = settings.discovery
        full = discovery.full_interval_seconds or discovery.interval_seconds
        self.scheduler.add_job(
            self.sweep_due,
            "interval",
            seconds=full,
            id="discover",
            next_run_time=datetime.now(UTC),
            **common,
        )
        if full > discovery.interval_seconds:
            self.scheduler.add_job(
                self.hot_due, "interval", seconds=discovery.interval_seconds, id="hot", **common
            )
        self.scheduler.add_job(
            self.reconcile_due,
            "interval",
            seconds=settings.haproxy.reconcile_interval_seconds,
            id="reconcile",
            **common,
        )

    def all_due_now(self) -> None:
        for job in self.scheduler.get_jobs():
            job.modify(next_run_time=datetime.now(UTC))
        self.scheduler.wakeup()

    def next_sweep_at(self) -> float | None:
        """Unix time of the next discovery sweep, when known."""
        job = self.scheduler.get_job("discover") if self.scheduler.running else None
        return job.next_run_time.timestamp() if job and job.next_run_time else None

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)


def _in_loop(action: Callable[[], None]) -> Callable[[], Coroutine[Any, Any, None]]:
    """`action` as a coroutine function, so the scheduler calls it in the event loop."""

    async def job() -> None:
        action()

    return job
