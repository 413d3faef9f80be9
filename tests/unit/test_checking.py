"""The member checker's loop (`checking.Checker`): who is checked, in which batch, with
which service's probe, and what a slow or broken batch may not do. In process, with a
recording fake prober; the pace itself is `decisions` (tests/unit/test_activities.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from poller.endpoints import Endpoint
from poller.pool import checking
from poller.pool.checking import Checker
from poller.pool.pools import LastProbe, Pool, State
from poller.results import Outcome, ProbeResult, Sweep
from tests.support.activities import (
    A,
    B,
    C,
    Clock,
    ok,
    running,
    sample,
    sweep_of,
    tracker,
    until,
    up,
)


class FakeProber:
    """Records each batch (members, service); `gate` holds a batch until it is set."""

    def __init__(self, answer: Callable[[Endpoint], ProbeResult] = ok) -> None:
        self.answer = answer
        self.batches: list[tuple[list[Endpoint], str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fails: BaseException | None = None
        self.leases = 0

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[FakeProber]:
        self.leases += 1
        yield self

    async def checks(self, members: Sequence[Endpoint], service: str) -> Sweep:
        self.batches.append((list(members), service))
        await self.gate.wait()
        if self.fails is not None:
            raise self.fails
        return sweep_of(*(self.answer(member) for member in members))


def test_the_members_due_are_checked_in_one_batch_with_their_services_probe(
    tmp_path: Path,
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock, ("web", "api"))
    made.pools["web"] = Pool({A: up(A), B: up(B)})
    made.pools["api"] = Pool({C: up(C)})
    prober = FakeProber(answer=lambda e: ProbeResult(e, Outcome.TIMEOUT, False, 500.0))
    checker = Checker(made, "web", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]

    async def scenario() -> None:
        await until(lambda: made.pools["web"].members[A].state is State.FALLING)
        assert prober.batches == [([A, B], "web")]
        assert made.pools["web"].members[B].state is State.FALLING
        assert made.pools["api"].members[C].state is State.UP  # not this checker's
        assert not checker.busy

    running(checker.run, scenario)
    assert prober.leases == 1


def test_a_member_is_not_checked_again_while_its_check_is_in_flight(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    prober = FakeProber()
    prober.gate.clear()
    checker = Checker(made, "default", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]

    async def scenario() -> None:
        await until(lambda: len(prober.batches) == 1)
        assert checker.busy == {A}
        clock.now += 10  # long overdue, but still in flight
        checker.wake.set()
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(prober.batches) == 1
        prober.gate.set()
        await until(lambda: not checker.busy)
        assert len(prober.batches) == 1  # just checked: due an interval from now
        clock.now += 1
        checker.wake.set()
        await until(lambda: len(prober.batches) == 2)

    running(checker.run, scenario)


def test_a_slow_member_never_delays_another_ones_check(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    prober = FakeProber()
    prober.gate.clear()  # A's batch hangs (a member that takes its timeout)
    checker = Checker(made, "default", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]

    async def scenario() -> None:
        await until(lambda: len(prober.batches) == 1)
        made.pools["default"] = Pool({**made.pools["default"].members, B: up(B)})
        for tell in made.on_members_change:
            tell("default")
        await until(lambda: len(prober.batches) == 2)
        assert prober.batches[1] == ([B], "default")
        prober.gate.set()

    running(checker.run, scenario)


def test_a_change_in_another_services_members_does_not_wake_the_checker(
    tmp_path: Path,
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock, ("web", "api"))
    checker = Checker(made, "web", FakeProber, made.metrics, clock)  # type: ignore[arg-type]
    for tell in made.on_members_change:
        tell("api")
    assert not checker.wake.is_set()
    for tell in made.on_members_change:
        tell("web")
    assert checker.wake.is_set()


def recording_waits(
    expire: bool,
) -> tuple[list[float | None], Callable[[Any, float | None], Coroutine[Any, Any, Any]]]:
    """A stand-in for the checker's `woken` that records each timeout; with `expire`, a
    timed wait ends at once (the test moves the fake clock instead)."""
    waits: list[float | None] = []
    real_woken = checking.woken

    async def stand_in(event: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        waits.append(timeout)
        await asyncio.sleep(0)
        return await real_woken(event, 0 if expire and timeout else timeout)

    return waits, stand_in


def test_the_checker_sleeps_until_the_next_member_is_due(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    # Last probed now, interval 1 s: the checker wakes when its pace is up, 1 s later
    # (and takes every member due by then: within 5 % of its own pace).
    made.pools["default"] = Pool(
        {A: replace(up(A), last=LastProbe(clock.now, Outcome.OK, 1.0, 200))}
    )
    prober = FakeProber()
    checker = Checker(made, "default", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]
    waits, stand_in = recording_waits(expire=True)

    async def scenario() -> None:
        await until(lambda: len(waits) >= 1)
        assert waits[0] == pytest.approx(1.0)
        assert prober.batches == []
        clock.now += 1.0
        await until(lambda: len(prober.batches) == 1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checking, "woken", stand_in)
        running(checker.run, scenario)


def test_with_no_members_the_checker_waits_to_be_woken(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    prober = FakeProber()
    checker = Checker(made, "default", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]
    waits, stand_in = recording_waits(expire=False)

    async def scenario() -> None:
        await until(lambda: len(waits) == 1)
        assert waits == [None]  # no timer: only a new member wakes it
        made.pools["default"] = Pool({A: up(A)})
        for tell in made.on_members_change:
            tell("default")
        await until(lambda: len(prober.batches) == 1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checking, "woken", stand_in)
        running(checker.run, scenario)


def broken_checks(tmp_path: Path) -> tuple[Checker, FakeProber]:
    """A checker of member A whose every batch raises (a bug, not A's doing)."""
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    prober = FakeProber()
    prober.fails = RuntimeError("a bug")
    return Checker(made, "default", lambda: prober, made.metrics, clock), prober  # type: ignore[arg-type, return-value]


def test_a_batch_that_raises_is_logged_counted_and_its_members_checked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checking, "FAILED_BATCH_PAUSE_SECONDS", 0.01)
    checker, prober = broken_checks(tmp_path)
    made = checker.tracker

    async def scenario() -> None:
        await until(lambda: len(prober.batches) == 2)  # due again after the pause

    running(checker.run, scenario)
    failures = [r for r in caplog.records if r.getMessage() == "member checks failed unexpectedly"]
    assert failures
    assert failures[0].levelname == "ERROR"
    assert failures[0].exc_info is not None
    assert sample(made.metrics, "poller_task_failures_total", task="check") >= 1
    assert made.pools["default"].members[A] == up(A)  # a bug is no verdict on the member


def test_the_pause_after_a_broken_batch_keeps_its_members_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checking, "FAILED_BATCH_PAUSE_SECONDS", 60.0)
    checker, prober = broken_checks(tmp_path)
    made = checker.tracker

    async def scenario() -> None:
        await until(lambda: sample(made.metrics, "poller_task_failures_total", task="check") == 1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert checker.busy == {A}
        assert len(prober.batches) == 1  # no tight loop on a bug

    running(checker.run, scenario)


# -- HAProxy's own checks answering for members (`pool.haproxy_checks`) -------------------


def borrowing(tmp_path: Path, vouched: set[Endpoint]) -> tuple[Clock, Checker, FakeProber]:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A), B: up(B)})
    prober = FakeProber()

    async def haproxy_vouches() -> dict[Endpoint, float]:
        return {e: 0.0 for e in vouched}  # up in HAProxy since before the test

    checker = Checker(
        made,
        "default",
        lambda: prober,  # type: ignore[arg-type, return-value]
        made.metrics,
        clock,
        vouched=haproxy_vouches,
    )
    return clock, checker, prober


def test_a_member_haproxy_vouches_for_is_probed_once_then_only_to_verify(
    tmp_path: Path,
) -> None:
    vouched = {A, B}
    clock, checker, prober = borrowing(tmp_path, vouched)
    made = checker.tracker
    interval = made.settings.interval_seconds

    async def scenario() -> None:
        # Restored or adopted members were never probed by this process: probed first.
        await until(lambda: len(prober.batches) == 1)
        assert prober.batches == [([A, B], "default")]
        # Then, while HAProxy's check passes, each interval is HAProxy's word.
        for _ in range(5):
            clock.now += interval
            checker.wake.set()
            await until(lambda: made.pools["default"].members[A].last.at == clock.now)
        assert len(prober.batches) == 1
        assert sample(made.metrics, "poller_checks_borrowed_total", service="default") == 10
        assert made.pools["default"].members[A].last.latency_ms == 1.0  # its own probe's
        # HAProxy's check of B fails: B is probed at its next due time, A is not.
        vouched.discard(B)
        clock.now += interval
        checker.wake.set()
        await until(lambda: len(prober.batches) == 2)
        assert prober.batches[1] == ([B], "default")
        # Past its verify interval, A is probed by poller itself again.
        clock.now += made.settings.verify_interval_seconds
        checker.wake.set()
        await until(lambda: len(prober.batches) == 3)
        assert prober.batches[2] == ([A, B], "default")

    running(checker.run, scenario)


def test_a_falling_member_is_probed_even_when_haproxy_vouches_for_it(tmp_path: Path) -> None:
    clock, checker, prober = borrowing(tmp_path, {A, B})
    prober.answer = lambda e: ProbeResult(e, Outcome.TIMEOUT, False, 500.0)
    made = checker.tracker

    async def scenario() -> None:
        await until(lambda: made.pools["default"].members[A].state is State.FALLING)
        prober.answer = ok
        clock.now += made.settings.interval_seconds
        checker.wake.set()
        await until(lambda: len(prober.batches) == 2)
        assert prober.batches[1] == ([A, B], "default")  # hysteresis counts own probes
        await until(lambda: made.pools["default"].members[A].state is State.UP)

    running(checker.run, scenario)


def test_without_a_voucher_every_member_is_probed_each_interval(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    prober = FakeProber()
    checker = Checker(made, "default", lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]

    async def scenario() -> None:
        for count in (1, 2, 3):
            await until(lambda c=count: len(prober.batches) == c)  # type: ignore[misc]
            clock.now += made.settings.interval_seconds
            checker.wake.set()

    running(checker.run, scenario)
