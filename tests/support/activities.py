"""Helpers for the in-process tests of the daemon's activities (tests/unit): a fake
clock, settings for a 10.0.0.0/24 lab that is never swept, trackers, probe results."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from poller.applying.executing import Result
from poller.applying.planning import Method
from poller.applying.reconciling import Reconciler
from poller.config import Settings, load_settings
from poller.endpoints import Endpoint
from poller.haproxy.servers import ServerState
from poller.pool.pools import LastProbe, Member, Origin, State
from poller.pool.tracking import Tracker
from poller.results import Outcome, ProbeResult, Sweep
from poller.status.history import History
from poller.status.metrics import Metrics

A, B, C = (Endpoint(f"10.0.0.{i}", 3000) for i in (1, 2, 3))


class Clock:
    """A fake monotonic clock (and a wall clock 1,000,000 s ahead of it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + 1_000_000.0


def settings(**sections: Mapping[str, Any]) -> Settings:
    return load_settings(
        None, environ={}, overrides={"discovery": {"subnets": ["10.0.0.0/24"]}, **sections}
    )


def tracker(tmp_path: Path, clock: Clock, services: Sequence[str] = ("default",)) -> Tracker:
    s = settings()
    return Tracker(
        services, s.pool, tmp_path / "state.json", Metrics(), History(), clock, clock.wall
    )


def ok(endpoint: Endpoint, service: str = "", identity: str | None = None) -> ProbeResult:
    return ProbeResult(endpoint, Outcome.OK, True, 1.0, 200, identity, service=service)


def failed_sweep(targets: int = 4) -> Sweep:
    """A sweep that failed on the poller's own side: most probes could not even start."""
    found = Sweep(targets=targets)
    found.outcomes[Outcome.LOCAL_ERROR] = targets
    found.results.append(ProbeResult(A, Outcome.LOCAL_ERROR, False, 0.0, detail="no route"))
    return found


def sweep_of(*results: ProbeResult) -> Sweep:
    found = Sweep(targets=len(results), results=list(results))
    for result in results:
        found.outcomes[result.outcome] += 1
    return found


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def up(endpoint: Endpoint, last: Outcome | Origin = Outcome.OK) -> Member:
    return Member(endpoint, None, State.UP, 2, 0, 0.0, LastProbe(0.0, last, 1.0, 200))


class FakeApplier:
    """The applier as the reconciler sees it: records what it was asked, answers with the
    results it is given, one per apply."""

    def __init__(self, *results: Result) -> None:
        self.results = list(results)
        self.asked: list[Mapping[str, frozenset[Endpoint]]] = []
        self.live: list[ServerState] | Exception = []
        self.attempt = Method.FILE
        self.aside: dict[tuple[str, str], object] = {}  # servers an operator set aside
        self.asked_aside: list[object] = []  # the states it was asked about

    async def live_servers(self) -> dict[str, list[ServerState]]:
        if isinstance(self.live, Exception):
            raise self.live
        return {"nodes": self.live}

    def live_file_servers(self) -> dict[str, list[Endpoint]]:
        return {"nodes": [B, C]}

    def set_aside(self, live: object) -> dict[tuple[str, str], object]:
        self.asked_aside.append(live)
        return dict(self.aside)

    async def apply(self, wanted: Mapping[str, frozenset[Endpoint]], live: object) -> Result:
        self.asked.append(wanted)
        return self.results.pop(0)


def reconciler(
    tmp_path: Path,
    clock: Clock,
    applier: FakeApplier,
    names: Sequence[str] = ("default",),
    **sections: Any,
) -> Reconciler:
    made = tracker(tmp_path, clock, names)
    chosen = settings(**sections)
    return Reconciler(chosen, made, applier, made.metrics, made.history, clock, clock.wall)  # type: ignore[arg-type]


DEADLINE_SECONDS = 5.0


async def until(condition: Callable[[], object]) -> None:
    """Let the event loop run until `condition` holds (bounded: a failure says so)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def running(loop_of: Callable[[], Coroutine[Any, Any, None]], scenario: Callable[[], Any]) -> None:
    """Run an activity's loop as a task while `scenario` runs; cancel it at the end."""

    async def main() -> None:
        task = asyncio.create_task(loop_of())
        try:
            await scenario()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def fields(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The structured fields of each log record with `message`, in order."""
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == message]
