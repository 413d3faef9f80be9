"""The discovery task (`discovering.Discoverer`): which plan each kind of sweep asks, what
it skips, how a long sweep reports and what a broken one may not do. In process, on a
fake clock, with the sweep itself replaced by a recording fake (tests/unit/test_sweeping.py
pins the sweep)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

import netaddr
import pytest

from poller.config import load_settings
from poller.discovery import discovering
from poller.discovery.discovering import Discoverer
from poller.discovery.plans import SweepPlan, plan_sweep
from poller.endpoints import Endpoint
from poller.pool.pools import Pool
from poller.results import Progress, Sweep, SweepKind
from tests.support.activities import A, B, Clock, ok, running, sample, sweep_of, tracker, until, up


class FakeProber:
    def __init__(self) -> None:
        self.leased = 0

    def asks(self, port: int) -> list[tuple[str, object]]:
        return [("default", None)]

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[FakeProber]:
        self.leased += 1
        yield self


def resolved(**discovery: Any) -> SweepPlan:
    settings = load_settings(
        None,
        environ={},
        overrides={"discovery": {"subnets": ["10.0.0.0/24"], "method": "connect", **discovery}},
    )
    return plan_sweep(settings.discovery)


class Sweeps:
    """A recording fake of `run_sweep`."""

    def __init__(self, found: Callable[[], Sweep] = Sweep) -> None:
        self.found = found
        self.asked: list[tuple[SweepPlan, Any, Collection[Endpoint], Progress | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(
        self,
        plan: SweepPlan,
        prober: Any,
        keep_all: bool = False,
        known: Collection[Endpoint] = frozenset(),
        progress: Progress | None = None,
    ) -> Sweep:
        self.asked.append((plan, prober, known, progress))
        await self.gate.wait()
        return self.found()


def made(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, sweeps: Sweeps, **discovery: Any
) -> tuple[Discoverer, FakeProber]:
    plan = resolved(**discovery)
    prober = FakeProber()
    monkeypatch.setattr(discovering, "run_sweep", sweeps)
    pool = tracker(tmp_path, clock)
    return Discoverer(pool, lambda: plan, lambda: prober, pool.metrics, clock), prober  # type: ignore[arg-type, return-value]


def test_a_full_sweep_asks_the_whole_plan_skipping_known_members_on_a_leased_prober(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    sweeps = Sweeps(lambda: sweep_of(ok(B)))
    found, prober = made(tmp_path, clock, monkeypatch, sweeps)
    found.tracker.pools["default"] = Pool({A: up(A)})

    async def scenario() -> None:
        found.mark_due()
        await until(lambda: B in found.tracker.pools["default"].members)

    running(found.run, scenario)
    [(plan, used, known, progress)] = sweeps.asked
    assert plan is found.discovery()
    assert used is prober
    assert prober.leased == 1
    assert known == frozenset({A})
    assert progress is not None
    assert progress.total == plan.plan.count == 254
    assert progress.started == clock.now
    assert found.sweeping_since is None
    assert sample(found.metrics, "poller_sweeps_total", kind="discovery", result="ok") == 1


def test_a_hot_sweep_asks_only_the_likely_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    sweeps = Sweeps()
    found, _ = made(tmp_path, clock, monkeypatch, sweeps, hot_per_subnet=2, hot_max_targets=2)
    found.tracker.pools["default"] = Pool({e: up(e) for e in (A, B)})  # .1 and .2
    found.tracker.vacated.appendleft("10.0.0.200")

    def counted() -> float:
        return sample(found.metrics, "poller_sweeps_total", kind="hot", result="ok")

    async def scenario() -> None:
        found.mark_hot_due()
        await until(lambda: counted() == 1)  # asked, answered and counted

    running(found.run, scenario)
    [(plan, _, known, progress)] = sweeps.asked
    assert plan.hot
    # Vacated first, then after the highest in use: bounded by hot_max_targets.
    assert plan.plan.addresses == netaddr.IPSet(["10.0.0.200", "10.0.0.3"])
    assert progress is not None
    assert progress.total == 2
    assert known == frozenset({A, B})


def test_found_is_busy_while_a_sweep_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sweeps = Sweeps()
    sweeps.gate.clear()
    found, _ = made(tmp_path, clock, monkeypatch, sweeps)

    async def scenario() -> None:
        found.mark_due()
        await until(lambda: len(sweeps.asked) == 1)
        assert found.sweeping_since == clock.now
        sweeps.gate.set()
        await until(lambda: found.sweeping_since is None)

    running(found.run, scenario)


def test_a_sweep_that_raises_is_logged_counted_failed_and_paused_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(discovering, "FAILED_SWEEP_PAUSE_SECONDS", 30.0)
    clock = Clock()

    def broken() -> Sweep:
        raise RuntimeError("a bug")

    sweeps = Sweeps(broken)
    found, _ = made(tmp_path, clock, monkeypatch, sweeps)

    async def scenario() -> None:
        found.mark_due()
        await until(lambda: sample(found.metrics, "poller_task_failures_total", task="discovery"))
        found.mark_due()
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(sweeps.asked) == 1  # paused: no tight loop on a bug

    running(found.run, scenario)
    [record] = [
        r for r in caplog.records if r.getMessage() == "discovery sweep failed unexpectedly"
    ]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert getattr(record, "fields", {}) == {"kind": SweepKind.FULL}
    assert sample(found.metrics, "poller_sweeps_total", kind="discovery", result="failed") == 1
    assert found.sweeping_since is None


def test_after_a_broken_sweep_the_pending_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovering, "FAILED_SWEEP_PAUSE_SECONDS", 0.0)
    clock = Clock()
    results = [RuntimeError("a bug"), Sweep()]

    def next_result() -> Sweep:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    sweeps = Sweeps(next_result)
    found, _ = made(tmp_path, clock, monkeypatch, sweeps)

    async def scenario() -> None:
        found.mark_due()
        found.mark_hot_due()  # the full one covers it
        await until(lambda: len(sweeps.asked) == 1)
        found.mark_hot_due()
        await until(lambda: len(sweeps.asked) == 2)

    running(found.run, scenario)
    assert [plan.hot for plan, *_ in sweeps.asked] == [False, True]


def test_a_long_sweep_says_how_far_it_has_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(discovering, "PROGRESS_EVERY_SECONDS", 0.001)
    caplog.set_level(logging.INFO, logger="poller")
    clock = Clock()
    sweeps = Sweeps()
    sweeps.gate.clear()
    found, _ = made(tmp_path, clock, monkeypatch, sweeps)

    def said() -> list[dict[str, Any]]:
        return [
            getattr(r, "fields", {})
            for r in caplog.records
            if r.getMessage() == "sweep in progress"
        ]

    async def scenario() -> None:
        found.mark_due()
        await until(lambda: len(sweeps.asked) == 1)
        progress = sweeps.asked[0][3]
        assert progress is not None
        progress.done, progress.answered, progress.healthy = 10, 3, 2
        progress.eta = lambda: 12.345
        clock.now += 2.04
        await until(lambda: len(said()) >= 1)
        sweeps.gate.set()
        await until(lambda: found.sweeping_since is None)
        count = len(said())
        for _ in range(50):
            await asyncio.sleep(0.001)
        assert len(said()) == count  # the reporter ends with the sweep

    running(found.run, scenario)
    assert said()[-1] == {
        "done": 10,
        "targets": 254,
        "answered": 3,
        "healthy": 2,
        "elapsed_seconds": 2.0,
        "eta_seconds": 12.3,
    }


def test_a_progress_without_an_estimate_says_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poller")
    monkeypatch.setattr(discovering, "PROGRESS_EVERY_SECONDS", 0.001)
    found, _ = made(tmp_path, Clock(), monkeypatch, Sweeps())

    async def scenario() -> None:
        task = asyncio.create_task(found._report(Progress(5, found.clock())))
        await until(lambda: "sweep in progress" in caplog.text)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert getattr(caplog.records[0], "fields", {})["eta_seconds"] is None


@pytest.mark.parametrize(
    ("settings", "full", "hot"),
    [
        ({"interval_seconds": 2.0}, 2.0, 2.0),
        ({"interval_seconds": 2.0, "full_interval_seconds": 30.0}, 30.0, 2.0),
    ],
)
def test_each_kind_is_measured_against_its_own_interval(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, float],
    full: float,
    hot: float,
) -> None:
    found, _ = made(tmp_path, Clock(), monkeypatch, Sweeps(), **settings)
    assert found._interval(SweepKind.FULL) == full
    assert found._interval(SweepKind.HOT) == hot


def test_a_sweep_longer_than_its_interval_is_an_overrun_and_a_late_start_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()

    def slow() -> Sweep:
        clock.now += 1.5
        return Sweep()

    sweeps = Sweeps(slow)
    found, _ = made(tmp_path, clock, monkeypatch, sweeps, interval_seconds=1.0)

    async def scenario() -> None:
        found.mark_due()
        await until(lambda: sample(found.metrics, "poller_sweep_overruns_total", kind="discovery"))
        sweeps.found = Sweep
        found.mark_due()
        await until(lambda: len(sweeps.asked) == 2 and found.sweeping_since is None)

    running(found.run, scenario)
    assert sample(found.metrics, "poller_sweep_overruns_total", kind="discovery") == 1
    assert found.overrunning == set()
