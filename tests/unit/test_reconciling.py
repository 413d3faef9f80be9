"""The reconciler (`reconciling.Reconciler`): when HAProxy is brought in step, what a
change, a failure and a guard hold leave behind (log, metrics, history), and how pool
changes are debounced. In process, on a fake clock, with a recording fake applier;
what the applier does with HAProxy is tests/unit/test_executing.py and the integration
suite's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from poller.applying.executing import Result
from poller.applying.planning import Method
from poller.applying.reconciling import BACKOFF_MAX_SECONDS, Reconciler
from poller.endpoints import Endpoint
from poller.haproxy.servers import ServerState
from poller.pool.pools import Pool
from poller.status.history import NoteKind
from tests.support.activities import (
    A,
    B,
    C,
    Clock,
    FakeApplier,
    fields,
    reconciler,
    running,
    sample,
    until,
    up,
)


def serving(endpoint: Endpoint) -> ServerState:
    return ServerState(endpoint.name, endpoint, 2, 0)


def test_a_change_is_logged_counted_and_kept_in_the_history(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    done = Result(Method.RUNTIME, ["n_a"], ["n_b"], duration_seconds=0.01234, reason="")
    made = reconciler(tmp_path, clock, FakeApplier(done))
    caplog.set_level(logging.INFO, logger="poller")
    asyncio.run(made.reconcile())
    assert fields(caplog, "HAProxy updated") == [
        {"method": "runtime", "added": ["n_a"], "removed": ["n_b"], "duration_ms": 12.3}
    ]
    change = made.last_change
    assert change is not None
    assert change.as_json() == {
        "method": "runtime",
        "result": "ok",
        "added": ["n_a"],
        "removed": ["n_b"],
        "duration_seconds": 0.012,
        "at": clock.wall(),
    }
    assert list(made.history.changes) == [change]
    metrics = made.metrics
    assert sample(metrics, "poller_haproxy_changes_total", method="runtime", result="ok") == 1
    count = "poller_haproxy_change_duration_seconds_count"
    assert sample(metrics, count, method="runtime") == 1
    assert sample(metrics, "poller_haproxy_change_duration_seconds_sum", method="runtime") == (
        pytest.approx(0.01234)
    )
    assert made.in_step_mono == clock.now
    assert sample(metrics, "poller_haproxy_last_in_step_timestamp_seconds") == clock.wall()


def test_a_reload_says_why_in_its_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    done = Result(Method.RELOAD, reason="the template or settings changed")
    made = reconciler(tmp_path, clock, FakeApplier(done))
    caplog.set_level(logging.INFO, logger="poller")
    asyncio.run(made.reconcile())
    [logged] = fields(caplog, "HAProxy updated")
    assert logged["reason"] == "the template or settings changed"


def test_haproxy_found_in_step_is_no_change_but_counts_as_in_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    made = reconciler(tmp_path, clock, FakeApplier(Result(Method.NONE)))
    caplog.set_level(logging.DEBUG, logger="poller")
    asyncio.run(made.reconcile())
    assert made.last_change is None
    assert not made.history.changes
    assert not caplog.records
    assert made.in_step_mono == clock.now
    assert sample(made.metrics, "poller_haproxy_changes_total", method="none", result="ok") == 0


def test_haproxy_is_asked_for_the_pools_serving_members_per_backend(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(Result(Method.RUNTIME, ["n_a"]), Result(Method.NONE))
    applier.live = [serving(B)]
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({A: up(A), B: up(B)})
    asyncio.run(made.reconcile())
    assert applier.asked == [{"nodes": frozenset({A, B})}]
    assert made.live == {"nodes": frozenset({A, B})}  # what HAProxy serves now
    assert sample(made.metrics, "poller_haproxy_up") == 1
    assert made.answered_once


def test_an_offline_apply_keeps_what_haproxy_served_last(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(Result(Method.OFFLINE, error="away"))
    applier.live = [serving(B)]
    made = reconciler(tmp_path, clock, applier)
    made.live = {"nodes": frozenset({C})}
    made.tracker.pools["default"] = Pool({B: up(B)})
    asyncio.run(made.reconcile())
    assert made.live == {"nodes": frozenset({C})}
    assert not made.answered_once


def test_a_failure_is_recorded_and_retried_with_a_doubling_backoff_up_to_a_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    failures = [Result(Method.RELOAD, error="the reload failed") for _ in range(8)]
    made = reconciler(tmp_path, clock, FakeApplier(*failures))
    made.answered_once = True
    caplog.set_level(logging.DEBUG, logger="poller")
    waits = []
    for _ in range(8):
        made.changed.clear()
        asyncio.run(made.reconcile())
        assert made.changed.is_set()  # the retry is scheduled
        waits.append(made.retry_at - clock.now)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert BACKOFF_MAX_SECONDS == 15.0
    assert made.failed_attempts == 8
    assert fields(caplog, "HAProxy not updated; will retry") == [
        {"error": "the reload failed", "retry_in_seconds": 0.5}
    ]
    assert fields(caplog, "HAProxy still not updated")[0] == {
        "error": "the reload failed",
        "retry_in_seconds": 1.0,
    }
    change = made.last_change
    assert change is not None
    assert change.as_json() == {
        "method": "reload",
        "result": "failed",
        "error": "the reload failed",
        "at": clock.wall(),
    }
    assert len(made.history.changes) == 8
    assert made.in_step_mono is None


def test_another_failure_after_one_is_logged_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    one, other = (Result(Method.RELOAD, error=e) for e in ("first", "second"))
    made = reconciler(tmp_path, clock, FakeApplier(one, other))
    made.answered_once = True
    asyncio.run(made.reconcile())
    asyncio.run(made.reconcile())
    assert [f["error"] for f in fields(caplog, "HAProxy not updated; will retry")] == [
        "first",
        "second",
    ]


def test_haproxy_may_take_three_reconcile_intervals_to_answer_after_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    away = [Result(Method.OFFLINE, error=f"away {i}") for i in range(2)]
    made = reconciler(
        tmp_path, clock, FakeApplier(*away), haproxy={"reconcile_interval_seconds": 2.0}
    )
    caplog.set_level(logging.INFO, logger="poller")
    clock.now += 5.9
    asyncio.run(made.reconcile())
    clock.now += 0.1  # 6 s: three intervals of 2 s
    asyncio.run(made.reconcile())
    assert fields(caplog, "waiting for HAProxy's runtime API") == [
        {"error": "away 0", "retry_in_seconds": 0.5}
    ]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "waiting for HAProxy's runtime API"),
        ("ERROR", "HAProxy not updated; will retry"),
    ]


def test_a_hold_is_said_counted_and_noted_when_it_starts_and_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(4)))
    applier.live = [serving(A), serving(B), serving(C)]
    made = reconciler(tmp_path, clock, applier)
    caplog.set_level(logging.INFO, logger="poller")
    made.tracker.pools["default"] = Pool({A: up(A)})  # two of three gone at once
    asyncio.run(made.reconcile())
    hold = made.holds["default"]
    assert hold.held == frozenset({B, C})
    [said] = fields(caplog, "guard holding removals")
    assert said == {"held": ["10.0.0.2:3000", "10.0.0.3:3000"], "reason": hold.reason}
    assert sample(made.metrics, "poller_guard_holds_total") == 1
    assert sample(made.metrics, "poller_guard_held_members") == 2
    started = "poller_guard_hold_started_timestamp_seconds"
    assert sample(made.metrics, started) == clock.wall()
    [note] = made.history.events
    assert (note.kind, note.member, note.reason, note.service, note.at) == (
        NoteKind.GUARD_HOLD,
        "10.0.0.2:3000, 10.0.0.3:3000",
        hold.reason,
        "default",
        clock.wall(),
    )
    clock.now += 1
    asyncio.run(made.reconcile())  # still holding: said once, counted once
    assert len(fields(caplog, "guard holding removals")) == 1
    assert sample(made.metrics, "poller_guard_holds_total") == 1
    assert sample(made.metrics, started) == clock.wall() - 1  # when it began
    # The members come back: the hold ends.
    made.tracker.pools["default"] = Pool({A: up(A), B: up(B), C: up(C)})
    asyncio.run(made.reconcile())
    assert made.holds == {}
    assert fields(caplog, "guard released") == [{"held": ["10.0.0.2:3000", "10.0.0.3:3000"]}]
    released = made.history.events[0]
    assert (released.kind, released.member, released.reason, released.service, released.at) == (
        NoteKind.GUARD_RELEASE,
        "10.0.0.2:3000, 10.0.0.3:3000",
        "",
        "default",
        clock.wall(),
    )
    assert sample(made.metrics, "poller_guard_held_members") == 0
    assert sample(made.metrics, started) == 0


def test_with_several_services_a_hold_names_its_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    services = {
        "services": [
            {"name": "web", "ports": [3000], "backend": "nodes", "route": {"default": True}},
            {"name": "api", "ports": [4000], "backend": "api", "route": {"path_prefix": "/api"}},
        ]
    }
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(2)))
    applier.live = [serving(A), serving(B), serving(C)]
    made = reconciler(tmp_path, clock, applier, ("web", "api"), **services)
    caplog.set_level(logging.INFO, logger="poller")
    made.tracker.pools["web"] = Pool({A: up(A)})
    asyncio.run(made.reconcile())
    [said] = fields(caplog, "guard holding removals")
    assert said["service"] == "web"
    made.tracker.pools["web"] = Pool({A: up(A), B: up(B), C: up(C)})
    asyncio.run(made.reconcile())
    assert fields(caplog, "guard released") == [
        {"service": "web", "held": ["10.0.0.2:3000", "10.0.0.3:3000"]}
    ]


# -- when: the debounce and the retry wait -------------------------------------------------


def test_changes_in_a_burst_make_one_apply_once_the_pool_is_quiet(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(3)))
    made = reconciler(
        tmp_path, clock, applier, haproxy={"min_wait_seconds": 0.2, "max_wait_seconds": 30}
    )

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(5):
            made.changed.set()
            await asyncio.sleep(0.02)
        await until(lambda: len(applier.asked) == 1)
        assert loop.time() - started >= 0.08 + 0.2  # quiet for min_wait after the last
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(applier.asked) == 1

    running(made.run, scenario)


def test_a_change_waits_no_longer_than_max_wait(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(3)))
    made = reconciler(
        tmp_path, clock, applier, haproxy={"min_wait_seconds": 30, "max_wait_seconds": 30}
    )

    async def scenario() -> None:
        made.changed.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert applier.asked == []  # waiting for quiet
        clock.now += 30  # max_wait has passed since the first change
        made.changed.set()
        await until(lambda: len(applier.asked) == 1)

    running(made.run, scenario)


def test_without_a_min_wait_a_change_is_applied_at_once(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(3)))
    made = reconciler(tmp_path, clock, applier, haproxy={"min_wait_seconds": 0})

    async def scenario() -> None:
        made.changed.set()
        await until(lambda: len(applier.asked) == 1)

    running(made.run, scenario)


def test_after_a_failure_the_next_attempt_waits_out_the_backoff(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(Result(Method.RELOAD, error="no"), Result(Method.NONE))
    made = reconciler(tmp_path, clock, applier, haproxy={"min_wait_seconds": 0})
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    async def scenario() -> None:
        made.changed.set()
        await until(lambda: len(applier.asked) == 2)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("poller.applying.reconciling.asyncio.sleep", sleep)
        running(made.run, scenario)
    assert 0.5 in sleeps  # the first backoff, waited before the retry


def test_a_reconcile_and_another_never_run_at_once(tmp_path: Path) -> None:
    clock = Clock()
    gate = asyncio.Event()
    order: list[str] = []

    class Slow(FakeApplier):
        async def apply(self, wanted: Any, live: object) -> Result:
            order.append("start")
            await gate.wait()
            order.append("end")
            return Result(Method.NONE)

    made = reconciler(tmp_path, clock, Slow(), haproxy={"min_wait_seconds": 0})

    async def scenario() -> None:
        made.changed.set()
        await until(lambda: order == ["start"])
        async with contextlib.AsyncExitStack():
            other = asyncio.create_task(_locked_reconcile(made))
            for _ in range(20):
                await asyncio.sleep(0)
            assert order == ["start"]  # the second waits for the first
            gate.set()
            await other
        assert order[:2] == ["start", "end"]

    running(made.run, scenario)


async def _locked_reconcile(made: Reconciler) -> None:
    async with made.applying:
        await made.reconcile()


def test_the_first_success_after_failures_says_how_many_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    failure = Result(Method.RELOAD, error="no")
    made = reconciler(tmp_path, clock, FakeApplier(failure, failure, Result(Method.NONE)))
    caplog.set_level(logging.INFO, logger="poller")
    for _ in range(3):
        asyncio.run(made.reconcile())
    assert fields(caplog, "HAProxy in step again") == [{"failed_attempts": 2}]
    assert (made.failing, made.failed_attempts) == (None, 0)
    assert [c.ok for c in made.history.changes] == [False, False]  # a NONE is no change
    assert made.history.changes[0].at == clock.wall()


def test_a_fresh_reconciler_has_no_failure_and_waits_for_no_backoff(tmp_path: Path) -> None:
    made = reconciler(tmp_path, Clock(), FakeApplier())
    assert (made.failing, made.failed_attempts, made.answered_once) == (None, 0, False)
    assert made.retry_at == float("-inf")
    assert made.live == {}
    assert made.holds == {}
    made.tracker.pools["default"] = Pool({A: up(A)})
    for notify in made.tracker.on_serving_change:
        notify()
    assert made.changed.is_set()  # a change in who serves asks for a reconcile


def test_haproxys_server_states_go_to_the_applier_as_read(tmp_path: Path) -> None:
    clock = Clock()
    seen: list[object] = []

    class Recording(FakeApplier):
        async def apply(self, wanted: Any, live: object) -> Result:
            seen.append(live)
            return Result(Method.NONE)

    applier = Recording()
    applier.live = [serving(A)]
    made = reconciler(tmp_path, clock, applier)
    asyncio.run(made.reconcile())
    assert seen == [{"nodes": [serving(A)]}]


def test_a_restored_member_haproxy_already_serves_is_kept(tmp_path: Path) -> None:
    """A member restored from the state file (not probed yet) stays served when HAProxy
    has it: what the reconciler hands the pool is what HAProxy serves."""
    from poller.pool.pools import Origin

    clock = Clock()
    applier = FakeApplier(Result(Method.NONE))
    applier.live = [serving(A)]
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({A: up(A, Origin.RESTORED)})
    asyncio.run(made.reconcile())
    assert applier.asked == [{"nodes": frozenset({A})}]


def test_haproxy_away_keeps_the_servers_it_served_last_for_the_guard(tmp_path: Path) -> None:
    from poller.errors import HAProxyUnavailable
    from poller.pool.pools import Origin

    clock = Clock()
    applier = FakeApplier(Result(Method.OFFLINE, error="away"))
    applier.live = HAProxyUnavailable("gone")
    made = reconciler(tmp_path, clock, applier)
    made.live = {"nodes": frozenset({A})}
    made.tracker.pools["default"] = Pool({A: up(A, Origin.RESTORED)})  # kept only if served
    seen: list[object] = []

    async def apply(wanted: Any, live: object) -> Result:
        seen.append(live)
        return Result(Method.OFFLINE, error="away")

    applier.apply = apply  # type: ignore[method-assign]
    asyncio.run(made.reconcile())
    assert seen == [None]  # no states: the applier plans for HAProxy away
    assert made.guarded["default"].servers == frozenset({A})  # not the file's B and C


# -- an operator's hand: servers set aside in HAProxy by hand --------------------------------


def test_a_server_set_aside_by_hand_is_said_noted_and_gauged_once_and_so_is_its_return(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.applying.planning import SetAside

    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(3)))
    applier.live = [serving(A), serving(B)]
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({A: up(A), B: up(B)})
    caplog.set_level(logging.INFO, logger="poller")
    applier.aside = {("nodes", A.name): SetAside("nodes", A, "drain")}
    asyncio.run(made.reconcile())
    asyncio.run(made.reconcile())
    assert fields(caplog, "server set aside by hand; poller leaves it alone") == [
        {"server": f"nodes/{A.name}", "state": "drain"}
    ]
    gauge = "poller_servers_set_aside"
    assert sample(made.metrics, gauge, service="default", state="drain") == 1
    assert sample(made.metrics, gauge, service="default", state="maint") == 0
    [note] = made.history.events
    assert (note.kind, note.member, note.reason, note.service, note.at) == (
        NoteKind.SET_ASIDE,
        str(A),
        "drain",
        "default",
        clock.wall(),
    )
    applier.aside = {}
    asyncio.run(made.reconcile())
    assert fields(caplog, "server handed back; poller manages it again") == [
        {"server": f"nodes/{A.name}"}
    ]
    back = made.history.events[0]
    assert (back.kind, back.member, back.reason, back.service, back.at) == (
        NoteKind.HANDED_BACK,
        str(A),
        "",
        "default",
        clock.wall(),
    )
    registry = made.metrics.registry
    for state in ("maint", "drain"):  # both gauged, at 0 now
        assert registry.get_sample_value(gauge, {"service": "default", "state": state}) == 0
    assert made.aside == {}


def test_servers_set_aside_by_hand_are_kept_out_of_the_guards_arithmetic(
    tmp_path: Path,
) -> None:
    """Three servers, two of them set aside by hand and then stopped by the operator:
    their leaving is the operator's doing, not a mass removal the guard should hold."""
    from poller.applying.planning import SetAside

    clock = Clock()
    applier = FakeApplier(Result(Method.NONE))
    applier.live = [serving(A), serving(B), serving(C)]
    applier.aside = {
        ("nodes", B.name): SetAside("nodes", B, "maint"),
        ("nodes", C.name): SetAside("nodes", C, "maint"),
    }
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({A: up(A)})
    asyncio.run(made.reconcile())
    assert made.holds == {}
    assert applier.asked == [{"nodes": frozenset({A})}]
    assert applier.asked_aside == [{"nodes": [serving(A), serving(B), serving(C)]}]


def test_how_far_haproxy_is_behind_the_pool_is_a_metric_per_service_with_its_start(
    tmp_path: Path,
) -> None:
    """The divergence of this load balancer: servers to add plus servers to remove, from
    the moment the pool changed until HAProxy is known to serve the desired set (a
    failed change leaves it behind, since the first moment)."""
    clock = Clock()
    failed = Result(Method.RUNTIME, error="HAProxy refused to delete nodes/n_b")
    applier = FakeApplier(Result(Method.RUNTIME, ["n_a"]), failed)
    applier.live = [serving(B)]
    made = reconciler(tmp_path, clock, applier)

    def changed(pool: Pool) -> None:
        made.tracker.pools["default"] = pool
        for callback in made.tracker.on_serving_change:
            callback()

    def behind() -> tuple[float, float]:
        metrics = made.metrics
        return (
            sample(metrics, "poller_haproxy_behind_servers", service="default"),
            sample(metrics, "poller_haproxy_behind_since_timestamp_seconds", service="default"),
        )

    changed(Pool({A: up(A), B: up(B)}))
    assert behind() == (2, clock.wall())  # nothing known of HAProxy yet
    asyncio.run(made.reconcile())  # HAProxy served B; A added
    assert behind() == (0, 0)
    clock.now += 5
    changed(Pool({A: up(A)}))  # B left the pool
    left = clock.wall()
    assert behind() == (1, left)
    clock.now += 1
    applier.live = [serving(A), serving(B)]
    asyncio.run(made.reconcile())  # its removal failed: still behind, since it left
    assert behind() == (1, left)


SIX = [Endpoint(f"10.0.0.{i}", 3000) for i in range(1, 7)]


def test_members_dns_says_are_leaving_go_at_once_and_the_guard_judges_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scale 6 -> 2 announced by DNS (discovery.dns_names): the 4 leave HAProxy at the
    next apply, with no hold and while their probes still pass; the 2 kept failing
    together afterwards are held, as they would be with no scale-down."""
    clock = Clock()
    applier = FakeApplier(*(Result(Method.NONE) for _ in range(3)))
    applier.live = [serving(e) for e in SIX]
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({e: up(e) for e in SIX})
    told: list[int] = []
    made.tracker.on_serving_change.append(lambda: told.append(1))
    caplog.set_level(logging.INFO, logger="poller")
    name = "tasks.web"
    made.tracker.announced({name: frozenset(e.address for e in SIX)})
    assert told == []
    made.tracker.announced({name: frozenset({"10.0.0.1", "10.0.0.2"})})
    assert told == [1]  # the reconciler hears of it at once
    [said] = fields(caplog, "members leaving, as DNS says")
    assert said == {"addresses": [f"10.0.0.{i}" for i in range(3, 7)], "names": [name]}
    assert sample(made.metrics, "poller_members_leaving") == 4
    asyncio.run(made.reconcile())
    assert applier.asked[-1] == {"nodes": frozenset(SIX[:2])}
    assert made.holds == {}
    # The two that stay fail together: held, judged against the 2 meant to stay.
    applier.live = [serving(e) for e in SIX[:2]]
    made.tracker.pools["default"] = Pool({e: up(e) for e in SIX[2:]})
    clock.now += 1
    asyncio.run(made.reconcile())
    assert made.holds["default"].held == frozenset(SIX[:2])
    assert "2 of 2 members would leave" in made.holds["default"].reason


def test_without_dns_word_the_same_scale_down_is_held(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier(Result(Method.NONE))
    applier.live = [serving(e) for e in SIX]
    made = reconciler(tmp_path, clock, applier)
    made.tracker.pools["default"] = Pool({e: up(e) for e in SIX[:2]})  # 4 failed probes
    asyncio.run(made.reconcile())
    assert applier.asked[-1] == {"nodes": frozenset(SIX)}
    assert made.holds["default"].held == frozenset(SIX[2:])
