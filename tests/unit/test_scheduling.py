"""The periodic jobs (`scheduling.Schedule`), on a real APScheduler in process: which jobs
exist for which settings, how they are timed, that they only mark work due (in the event
loop's thread), and that a clock jump's mending makes every one due at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from poller.config import Settings, load_settings
from poller.daemon.scheduling import Schedule

DEADLINE_SECONDS = 5.0


def settings(**discovery: Any) -> Settings:
    return load_settings(
        None,
        environ={},
        overrides={
            "discovery": {"subnets": ["10.0.0.0/24"], **discovery},
            "haproxy": {"reconcile_interval_seconds": 7.0},
        },
    )


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, name: str) -> Callable[[], None]:
        return lambda: self.seen.append((name, threading.get_ident()))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


def schedule(calls: Calls) -> Schedule:
    return Schedule(calls("sweep"), calls("hot"), calls("reconcile"))


def jobs(made: Schedule) -> dict[str, tuple[timedelta, bool, Any, int]]:
    return {
        job.id: (job.trigger.interval, job.coalesce, job.misfire_grace_time, job.max_instances)
        for job in made.scheduler.get_jobs()
    }


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_one_interval_makes_a_full_sweep_job_and_a_reconcile_job_never_skipped() -> None:
    made = schedule(Calls())
    made.configure(settings(interval_seconds=2.0))
    # Coalesced, never given up on (no misfire limit), a few instances allowed: a job
    # only marks work due, so a late one is harmless and none is lost.
    assert jobs(made) == {
        "discover": (timedelta(seconds=2), True, None, 4),
        "reconcile": (timedelta(seconds=7), True, None, 4),
    }


def test_full_sweeps_further_apart_add_a_hot_sweep_job_at_the_short_interval() -> None:
    made = schedule(Calls())
    made.configure(settings(interval_seconds=2.0, full_interval_seconds=60.0))
    assert jobs(made) == {
        "discover": (timedelta(seconds=60), True, None, 4),
        "hot": (timedelta(seconds=2), True, None, 4),
        "reconcile": (timedelta(seconds=7), True, None, 4),
    }
    # New settings replace the jobs; the hot one goes when it is no longer needed.
    made.configure(settings(interval_seconds=2.0, full_interval_seconds=2.0))
    assert set(jobs(made)) == {"discover", "reconcile"}


def test_jobs_run_in_the_event_loops_thread_and_the_first_sweep_at_once() -> None:
    calls = Calls()
    made = schedule(calls)

    async def scenario() -> None:
        assert made.next_sweep_at() is None  # not running yet
        made.start(settings(interval_seconds=30.0))
        try:
            await until(lambda: "sweep" in calls.names())
            assert calls.seen[0][1] == threading.get_ident()
            at = made.next_sweep_at()
            assert at is not None
            assert 25 < at - time.time() <= 30
            assert "reconcile" not in calls.names()  # its first run is an interval away
            made.all_due_now()
            await until(lambda: "reconcile" in calls.names())
            assert calls.names().count("sweep") == 2
        finally:
            made.shutdown()
        await until(lambda: not made.scheduler.running)  # the stop runs in the loop
        made.shutdown()  # a second stop is harmless
        assert made.next_sweep_at() is None

    asyncio.run(scenario())


def test_a_schedule_never_started_stops_without_error() -> None:
    made = schedule(Calls())
    made.shutdown()
    assert not made.scheduler.running


@pytest.mark.parametrize("seconds", [1.5, 3.0])
def test_the_sweep_job_follows_the_discovery_interval(seconds: float) -> None:
    made = schedule(Calls())
    made.configure(settings(interval_seconds=seconds))
    assert jobs(made)["discover"][0] == timedelta(seconds=seconds)
