"""The daemon's decisions between a probe result and a HAProxy command, in process, on fake
clocks and recording fakes: each test names the rule it pins. (The scenarios that prove
the whole run against a real HAProxy in tests/integration and tests/lab.)"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.applying.executing import Result
from poller.applying.planning import Method
from poller.config import PoolSettings, Settings, load_settings
from poller.discovery.discovering import Discoverer
from poller.endpoints import Endpoint
from poller.errors import HAProxyError, HAProxyUnavailable
from poller.haproxy.servers import ServerState
from poller.pool import decisions
from poller.pool.pools import LastProbe, Member, Origin, Pool, State
from poller.results import Outcome, ProbeResult, Sweep, SweepKind
from poller.status import views
from tests.support.activities import (
    A,
    B,
    C,
    Clock,
    FakeApplier,
    failed_sweep,
    ok,
    reconciler,
    sample,
    settings,
    sweep_of,
    tracker,
    up,
)

# -- tracking: what sweeps and checks may change --------------------------------------------


def test_a_failed_sweep_changes_no_member_and_is_said_when_it_starts_and_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    caplog.set_level(logging.DEBUG, logger="poller")
    for _ in range(3):
        made.discovered(failed_sweep())
        clock.now += 1
    assert made.pools["default"].members == {A: up(A)}
    assert made.last_success_mono is None  # a failed sweep is no success
    assert sample(made.metrics, "poller_sweeps_total", kind="discovery", result="failed") == 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("sweep failed; keeping the last pool") == 1
    made.discovered(sweep_of(ok(B)))
    made.discovered(sweep_of(ok(B)))
    assert [r.getMessage() for r in caplog.records].count("sweeps succeed again") == 1
    assert made.last_success_mono == clock.now
    assert sample(made.metrics, "poller_last_successful_sweep_timestamp_seconds") == clock.wall()


def test_a_failed_check_batch_counts_no_failure_against_the_members(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    made.checked("default", failed_sweep(1), [A])
    assert made.pools["default"].members[A].failures == 0
    assert sample(made.metrics, "poller_sweeps_total", kind="check", result="failed") == 1


def test_a_check_counts_only_for_the_members_it_asked(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    timeout = ProbeResult(A, Outcome.TIMEOUT, False, 500.0)
    stray = ProbeResult(B, Outcome.OK, True, 1.0, 200)
    made.checked("default", sweep_of(timeout, stray), [A])
    assert made.pools["default"].members[A].state is State.FALLING
    assert B not in made.pools["default"].members  # only sweeps bring candidates


def test_a_sweeps_candidates_join_the_pool_of_the_service_whose_probe_passed(
    tmp_path: Path,
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock, ("web", "api"))
    made.discovered(sweep_of(ok(A, "web"), ok(B, "api"), ok(C, "")))
    assert set(made.pools["web"].members) == {A, C}  # "" (one service) counts for all
    assert set(made.pools["api"].members) == {B, C}
    assert sample(made.metrics, "poller_sweep_found_total", kind="discovery") == 4


def test_members_already_known_are_no_candidates_again(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    made.discovered(sweep_of(ok(A), ok(B)), SweepKind.HOT)
    assert sample(made.metrics, "poller_sweep_found_total", kind="hot") == 1
    assert made.pools["default"].members[A] == up(A)  # its own checks judge it


def test_the_state_file_is_due_after_a_join_not_after_a_mere_candidate(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.discovered(sweep_of(ok(A)))  # first success: a candidate (rise 2)
    assert not made.save_due.is_set()
    clock.now += 0.1
    made.checked("default", sweep_of(ok(A)), [A])  # second: up
    assert made.pools["default"].members[A].state is State.UP
    assert made.save_due.is_set()
    made.save_now()
    assert not made.save_due.is_set()
    assert (tmp_path / "state.json").exists()


def test_forgotten_members_are_remembered_as_vacated_newest_first(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    down = {
        e: Member(
            e, None, State.DOWN, 0, 2, clock.now, LastProbe(clock.now, Outcome.REFUSED, None, None)
        )
        for e in (A, B)
    }
    made.pools["default"] = Pool(down)
    clock.now += made.settings.forget_after_seconds + 1
    failing = ProbeResult(A, Outcome.REFUSED, False, 0.1)
    made.checked("default", sweep_of(failing), [A])
    made.checked("default", sweep_of(ProbeResult(B, Outcome.REFUSED, False, 0.1)), [B])
    assert list(made.vacated) == [B.address, A.address]


# -- checking: how often a member is asked ----------------------------------------------------


@pytest.mark.parametrize(
    ("state", "last", "interval"),
    [
        (State.RISING, Outcome.OK, 0.1),  # a candidate joins after `rise` quick probes
        (State.UP, Outcome.OK, 1.0),
        (State.FALLING, Outcome.REFUSED, 0.1),  # nothing listens: confirmed quickly
        (State.FALLING, Outcome.TIMEOUT, 1.0),  # a stall must last `fall` intervals
        (State.DOWN, Outcome.REFUSED, 1.0),
    ],
)
def test_how_often_a_member_is_checked_follows_its_state_and_last_result(
    state: State, last: Outcome, interval: float
) -> None:
    pool = settings().pool
    member = Member(A, None, state, 1, 1, 0.0, LastProbe(10.0, last, None, None))
    assert decisions.check_interval(member, pool) == interval
    # Due a little early, so members whose checks fell close together share one batch.
    assert decisions.due_at(member, pool) == pytest.approx(10.0 + interval * 0.95)


def queued(
    members: Pool, pool: PoolSettings, busy: set[Endpoint] | None = None
) -> decisions.DueQueue:
    queue = decisions.DueQueue()
    queue.rebuild(members, pool, busy or set())
    return queue


def test_a_member_whose_check_is_in_flight_is_not_due_again() -> None:
    pool = settings().pool
    members = Pool({A: up(A), B: up(B)})
    assert queued(members, pool).pop_due(members, pool, 5.0, set()) == [A, B]
    assert queued(members, pool).pop_due(members, pool, 5.0, {A}) == [B]
    assert queued(members, pool, {A, B}).wake_at() is None


def test_the_queue_gives_each_due_member_once_and_wakes_when_the_first_pace_is_up() -> None:
    pool = settings().pool
    a = replace(up(A), last=LastProbe(10.0, Outcome.OK, 1.0, 200))
    b = replace(up(B), last=LastProbe(10.04, Outcome.OK, 1.0, 200))  # within 5 % of A's
    c = replace(up(C), last=LastProbe(10.5, Outcome.OK, 1.0, 200))
    members = Pool({A: a, B: b, C: c})
    queue = queued(members, pool)
    assert queue.wake_at() == pytest.approx(11.0)  # A's pace fully up
    assert queue.pop_due(members, pool, 10.9, set()) == []
    assert queue.pop_due(members, pool, 11.0, set()) == [A, B]  # one batch
    assert queue.wake_at() == pytest.approx(11.5)
    # A was checked meanwhile by someone else: its old entry is put back, not taken.
    later = Pool({**members.members, C: replace(c, last=LastProbe(11.4, Outcome.OK, 1.0, 200))})
    assert queue.pop_due(later, pool, 11.5, set()) == []
    assert queue.wake_at() == pytest.approx(12.4)
    # A member gone is dropped; pushed members come out at their new time.
    queue.push(replace(a, last=LastProbe(11.0, Outcome.OK, 1.0, 200)), pool)
    assert queue.pop_due(Pool({C: c}), pool, 13.0, set()) == [C]
    assert len(queue) == 0


def test_a_member_restored_or_adopted_is_checked_at_once() -> None:
    pool = settings().pool
    adopted = decisions.adopted([A], 2, 50.0).members[A]
    # Up, as if it had risen (`rise` successes), since now, never probed by us.
    assert adopted == Member(
        A, None, State.UP, 2, 0, 50.0, LastProbe(float("-inf"), Origin.ADOPTED, None, None)
    )
    assert queued(Pool({A: adopted}), pool).pop_due(Pool({A: adopted}), pool, 0.0, set()) == [A]


def test_haproxy_gets_a_new_member_only_after_its_own_probe_passed() -> None:
    restored = up(A, Origin.RESTORED)
    probed = up(B)
    pool = Pool({A: restored, B: probed})
    assert decisions.desired(pool) == [B]
    assert decisions.desired(pool, live={A}) == [A, B]  # already served: kept


# -- discovering: which sweep, and how an overrun is said --------------------------------------


class FakeProber:
    def __init__(self, asks: Mapping[int, Sequence[str]]) -> None:
        self._asks = asks

    def asks(self, port: int) -> list[tuple[str, object]]:
        return [(name, None) for name in self._asks.get(port, [""])]


def discoverer(tmp_path: Path, clock: Clock, services: Sequence[str] = ("default",)) -> Discoverer:
    made = tracker(tmp_path, clock, services)
    return Discoverer(made, lambda: None, lambda: FakeProber({}), made.metrics, clock)  # type: ignore[arg-type, return-value]


def test_a_full_sweep_due_makes_a_pending_hot_sweep_needless(tmp_path: Path) -> None:
    clock = Clock()
    made = discoverer(tmp_path, clock)
    kinds: list[SweepKind] = []

    async def sweep(kind: SweepKind) -> Sweep:
        kinds.append(kind)
        return Sweep()

    made._sweep = sweep  # type: ignore[method-assign]
    made._interval = lambda kind: 1.0  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(made.run())
        made.mark_hot_due()
        made.mark_due()
        for _ in range(20):
            await asyncio.sleep(0)
        made.mark_hot_due()
        for _ in range(20):
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(scenario())
    assert kinds == [SweepKind.FULL, SweepKind.HOT]


def test_an_overrun_is_said_when_it_starts_and_when_it_ends_and_counted_between(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = discoverer(tmp_path, Clock())
    caplog.set_level(logging.INFO, logger="poller")
    for overran in (True, True, True, False, False):
        made._note_overrun(SweepKind.HOT, overran)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "sweeps take longer than their interval; running them back to back",
        "sweeps fit their interval again",
    ]
    assert [getattr(r, "fields", {}) for r in caplog.records] == [{"kind": "hot"}] * 2
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert sample(made.metrics, "poller_sweep_overruns_total", kind="hot") == 3


def test_a_sweep_skips_only_endpoints_every_service_asking_their_port_knows(
    tmp_path: Path,
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock, ("web", "api"))
    made.pools["web"] = Pool({A: up(A), B: up(B)})
    made.pools["api"] = Pool({A: up(A)})
    prober = FakeProber({3000: ["web", "api"]})
    found = Discoverer(made, lambda: None, lambda: prober, made.metrics, clock)  # type: ignore[arg-type, return-value]
    # B is web's, but api (which asks port 3000 too) does not know it: asked again.
    assert found.known() == frozenset({A})


# -- reconciling: what a failure leads to ---------------------------------------------------


def test_the_same_failure_again_is_logged_once_and_backs_off_until_a_success(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    failure = Result(Method.RELOAD, error="the reload failed")
    applier = FakeApplier(failure, failure, failure, Result(Method.RUNTIME, ["n_a"]))
    made = reconciler(tmp_path, clock, applier)
    made.answered_once = True  # past the start's grace: failures are errors
    caplog.set_level(logging.DEBUG, logger="poller")
    backoffs = []
    for _ in range(3):
        asyncio.run(made.reconcile())
        backoffs.append(made.retry_at - clock.now)
    assert backoffs == [0.5, 1.0, 2.0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["HAProxy not updated; will retry"]
    assert (
        sample(made.metrics, "poller_haproxy_changes_total", method="reload", result="failed") == 3
    )
    assert made.last_change is not None
    assert made.last_change.ok is False
    asyncio.run(made.reconcile())
    assert "HAProxy in step again" in caplog.text
    assert made.retry_at == float("-inf")
    assert made.backoff == 0.5
    assert made.in_step_mono == clock.now
    assert sample(made.metrics, "poller_haproxy_changes_total", method="runtime", result="ok") == 1


def test_failures_while_haproxy_starts_are_said_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    away = Result(Method.OFFLINE, error="HAProxy's runtime API does not answer")
    made = reconciler(tmp_path, clock, FakeApplier(away))
    caplog.set_level(logging.INFO, logger="poller")
    asyncio.run(made.reconcile())
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert caplog.records[0].getMessage() == "waiting for HAProxy's runtime API"


def test_an_unreadable_runtime_api_is_a_failed_runtime_change(tmp_path: Path) -> None:
    clock = Clock()
    applier = FakeApplier()
    applier.live = HAProxyError("No such backend.")
    made = reconciler(tmp_path, clock, applier)
    asyncio.run(made.reconcile())
    assert applier.asked == []  # nothing planned on an answer that makes no sense
    assert (
        sample(made.metrics, "poller_haproxy_changes_total", method="runtime", result="failed") == 1
    )
    assert sample(made.metrics, "poller_haproxy_up") == 1
    assert made.last_change is not None
    assert (made.last_change.method, made.last_change.error) == ("runtime", "No such backend.")


def test_haproxy_away_before_its_first_answer_is_taken_as_serving_its_files_servers(
    tmp_path: Path,
) -> None:
    """The guard compares against what HAProxy serves: before it ever answered, that is
    its config file's servers, so a first start never strips it."""
    clock = Clock()
    applier = FakeApplier(Result(Method.OFFLINE, error="away"))
    applier.live = HAProxyUnavailable("no socket")
    made = reconciler(tmp_path, clock, applier)
    asyncio.run(made.reconcile())
    # B and C are in the file, not in the pool: removing both is a mass removal.
    assert applier.asked == [{"nodes": frozenset({B, C})}]
    assert made.holds["default"].held == frozenset({B, C})
    assert sample(made.metrics, "poller_haproxy_up") == 0


def test_an_unexpected_error_is_counted_under_what_the_applier_was_doing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    applier = FakeApplier()
    applier.attempt = Method.RELOAD

    async def broken(*args: object) -> Result:
        raise RuntimeError("a bug")

    applier.apply = broken  # type: ignore[method-assign]
    made = reconciler(tmp_path, clock, applier)
    made.answered_once = True
    asyncio.run(made.reconcile())
    assert (
        sample(made.metrics, "poller_haproxy_changes_total", method="reload", result="failed") == 1
    )
    assert sample(made.metrics, "poller_task_failures_total", task="apply") == 1
    # Logged once, with its traceback (not a second time as a failed apply), and retried.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "HAProxy not updated: unexpected error; will retry")
    ]
    assert caplog.records[0].exc_info is not None
    assert made.failing == "unexpected error: RuntimeError('a bug')"
    assert made.last_change is not None
    assert made.last_change.error == "unexpected error: RuntimeError('a bug')"
    assert made.changed.is_set()
    assert made.retry_at == clock.now + 0.5


# -- /healthz: what it says before, after a failure, after recovery ----------------------------


def snapshot(**fields: Any) -> views.Snapshot:
    base: dict[str, Any] = {
        "mono": 100.0,
        "wall": 1000.0,
        "members": [],
        "latencies": {},
        "discovery": {},
    }
    return views.Snapshot(**{**base, **fields})


def test_healthz_before_the_first_sweep_says_so() -> None:
    healthy, body = views.health(snapshot(started_mono=99.0))
    assert not healthy
    assert body["problems"] == ["no successful sweep yet"]


def test_healthz_counts_haproxy_from_the_start_until_its_first_apply() -> None:
    fresh = snapshot(started_mono=90.0, last_success_mono=99.9)
    assert views.health(fresh)[0]  # 10 s after the start: within 3 reconcile intervals
    late = snapshot(started_mono=60.0, last_success_mono=99.9)
    healthy, body = views.health(late)
    assert not healthy
    assert body["problems"] == ["HAProxy not brought in step for 40.0 s (limit 30 s)"]


def test_healthz_fails_after_stale_sweeps_and_recovers_with_a_fresh_one() -> None:
    stale = snapshot(started_mono=0.0, last_success_mono=96.0, in_step_mono=99.0)
    healthy, body = views.health(stale)
    assert not healthy
    assert body["problems"] == ["no successful sweep for 4.0 s (limit 3 s)"]
    recovered = snapshot(started_mono=0.0, last_success_mono=99.5, in_step_mono=99.0)
    assert views.health(recovered) == (True, {**views.health(recovered)[1], "problems": []})


# -- SIGHUP: what it changes and what it must keep ------------------------------------------


def daemon_settings(tmp_path: Path, subnet: str, **more: Mapping[str, Any]) -> Settings:
    sections: dict[str, Any] = {
        "discovery": {"subnets": [subnet]},
        "haproxy": {"config_path": str(tmp_path / "haproxy.cfg")},
        "state": {"path": str(tmp_path / "state.json")},
        **more,
    }
    return load_settings(None, environ={}, overrides=sections)


def test_a_sighup_takes_new_settings_keeps_the_pool_and_retires_the_old_prober(
    tmp_path: Path,
) -> None:
    from poller.daemon.runner import Daemon

    new = daemon_settings(tmp_path, "10.0.1.0/24", pool={"fall": 5})
    daemon = Daemon(daemon_settings(tmp_path, "10.0.0.0/24"), lambda: new)
    pool = Pool({A: up(A)})
    daemon.tracker.pools["default"] = pool
    old = daemon.prober

    async def scenario() -> None:
        async with old.lease():  # a sweep under way on the old prober
            await daemon._reconfigure()
            assert not old.client.is_closed  # not under the sweep's feet
        assert old.client.is_closed  # closed when its last user ended
        await daemon.prober.aclose()

    asyncio.run(scenario())
    assert daemon.settings is new
    assert daemon.discovery.subnets == ("10.0.1.0/24",)
    assert daemon.prober is not old
    assert daemon.prober.scope.allows("10.0.1.7")
    assert not daemon.prober.scope.allows("10.0.0.7")
    assert daemon.tracker.settings.fall == 5
    assert daemon.tracker.pools["default"] is pool  # the pool is kept as it is
    assert all(checker.wake.is_set() for checker in daemon.checkers)
    assert daemon.reconciler.changed.is_set()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"services": [{"name": "web", "ports": [3000]}]}, "restart poller to apply that"),
        ({"discovery": {"subnets": ["8.8.8.0/30"]}}, "is neither a private range"),
    ],
)
def test_a_sighup_that_cannot_be_applied_keeps_the_old_settings_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any], reason: str
) -> None:
    from poller.daemon.runner import Daemon

    first = daemon_settings(tmp_path, "10.0.0.0/24")
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"discovery": {"subnets": ["10.0.0.0/24"]}, **change}))
    daemon = Daemon(first, lambda: load_settings(changed, environ={}))
    prober = daemon.prober
    asyncio.run(daemon._reconfigure())
    assert daemon.settings is first
    assert daemon.prober is prober
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["new configuration rejected; keeping the old one"]
    assert reason in str(errors[0].fields)  # type: ignore[attr-defined]
    asyncio.run(prober.aclose())


# -- restoring: the pool a (re)started poller begins with ------------------------------------


class RestoringApplier:
    def __init__(self, tmp_path: Path, live: list[Endpoint] | None, file: list[Endpoint]) -> None:
        from poller.applying.journal import Journal

        self.journal = Journal(tmp_path / "state.json.reload-pending")
        self.live, self.file = live, file

    async def live_servers(self) -> dict[str, list[ServerState]]:
        if self.live is None:
            raise HAProxyUnavailable("no socket")
        return {"nodes": [ServerState(e.name, e, 2, 0) for e in self.live]}

    def live_file_servers(self) -> dict[str, list[Endpoint]]:
        return {"nodes": self.file}


@pytest.mark.parametrize(
    ("live", "file", "adopted"),
    [
        ([A, B], [C], {A, B}),  # HAProxy answers: what it serves
        (None, [C], {C}),  # HAProxy away: what its config file lists
    ],
)
def test_a_first_start_adopts_what_haproxy_serves_as_members_to_check_at_once(
    tmp_path: Path, live: list[Endpoint] | None, file: list[Endpoint], adopted: set[Endpoint]
) -> None:
    from poller.pool.restoring import restore

    s = daemon_settings(tmp_path, "10.0.0.0/24")
    pools = asyncio.run(restore(s, RestoringApplier(tmp_path, live, file)))  # type: ignore[arg-type]
    members = pools["default"].members
    assert set(members) == adopted
    assert {m.state for m in members.values()} == {State.UP}
    assert {m.last.outcome for m in members.values()} == {Origin.ADOPTED}


def test_a_restart_takes_the_saved_pool_and_haproxy_is_not_asked(tmp_path: Path) -> None:
    from poller.pool import statefile
    from poller.pool.restoring import restore

    s = daemon_settings(tmp_path, "10.0.0.0/24")
    falling = Member(
        B, "b", State.FALLING, 0, 1, 50.0, LastProbe(50.0, Outcome.TIMEOUT, None, None)
    )
    statefile.save(s.state.path, {"default": Pool({A: up(A), B: falling})}, 60.0, 1060.0)
    applier = RestoringApplier(tmp_path, [C], [C])
    pools = asyncio.run(restore(s, applier))  # type: ignore[arg-type]
    members = pools["default"].members
    assert set(members) == {A, B}  # saved, not adopted
    assert members[B].state is State.FALLING  # states and counts survive
    assert members[B].failures == 1
    assert {m.last.outcome for m in members.values()} == {Origin.RESTORED}  # probed again first
    assert decisions.desired(pools["default"]) == []  # nothing new goes to HAProxy unprobed


def test_a_state_write_that_finishes_late_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    from poller.pool import statefile

    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    older = made._snapshot()  # a write begun before shutdown, still in its thread
    made.pools["default"] = Pool({A: up(A), B: up(B)})
    made.save_now()  # the final write
    made._write(*older)  # the old write finishes after it
    saved = statefile.load(made.state_path, clock.now, clock.wall(), ["default"])
    assert saved is not None
    assert set(saved.pools["default"].members) == {A, B}


def test_a_start_removes_the_staged_copies_a_killed_writer_left_and_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.pool.restoring import restore

    caplog.set_level(logging.INFO, logger="poller")
    s = daemon_settings(tmp_path, "10.0.0.0/24")
    for name in (".haproxy.cfg.1.tmp", ".state.json.2.staged"):
        (tmp_path / name).write_text("half a write")
    (tmp_path / ".state.json.keep").write_text("not ours to remove")
    asyncio.run(restore(s, RestoringApplier(tmp_path, [], [])))  # type: ignore[arg-type]
    said = [getattr(r, "fields", {}) for r in caplog.records if "staged copies" in r.getMessage()]
    assert said == [{"files": [".haproxy.cfg.1.tmp"]}, {"files": [".state.json.2.staged"]}]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state.json.keep"]


def test_a_corrupt_state_file_is_an_error_and_haproxys_servers_are_adopted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.pool.restoring import restore

    caplog.set_level(logging.INFO, logger="poller")
    s = daemon_settings(tmp_path, "10.0.0.0/24", pool={"rise": 3})
    s.state.path.write_text("{not json")
    pools = asyncio.run(restore(s, RestoringApplier(tmp_path, [A], [])))  # type: ignore[arg-type]
    [error] = [r for r in caplog.records if r.getMessage() == "state file ignored"]
    assert error.levelname == "ERROR"
    assert str(s.state.path) in getattr(error, "fields", {})["error"]
    assert pools["default"].members[A].successes == 3  # adopted as fully risen
    adopted = [
        getattr(r, "fields", {}) for r in caplog.records if r.getMessage().startswith("adopted")
    ]
    assert adopted == [{"members": 1, "source": "runtime"}]


def test_a_first_start_with_haproxy_away_says_it_adopted_the_config_files_servers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.pool.restoring import restore

    caplog.set_level(logging.INFO, logger="poller")
    s = daemon_settings(tmp_path, "10.0.0.0/24")
    asyncio.run(restore(s, RestoringApplier(tmp_path, None, [B, C])))  # type: ignore[arg-type]
    adopted = [
        getattr(r, "fields", {}) for r in caplog.records if r.getMessage().startswith("adopted")
    ]
    assert adopted == [{"members": 2, "source": "config file"}]


def test_a_first_start_with_nothing_to_adopt_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.pool.restoring import restore

    caplog.set_level(logging.DEBUG, logger="poller")
    s = daemon_settings(tmp_path, "10.0.0.0/24")
    pools = asyncio.run(restore(s, RestoringApplier(tmp_path, [], [])))  # type: ignore[arg-type]
    assert pools == {"default": Pool()}
    assert caplog.records == []


def test_a_saved_pool_with_no_members_is_no_pool_to_restore(tmp_path: Path) -> None:
    from poller.pool import statefile
    from poller.pool.restoring import restore

    s = daemon_settings(tmp_path, "10.0.0.0/24")
    statefile.save(s.state.path, {"default": Pool()}, 60.0, 1060.0)
    pools = asyncio.run(restore(s, RestoringApplier(tmp_path, [A], [])))  # type: ignore[arg-type]
    assert set(pools["default"].members) == {A}  # adopted from HAProxy


def test_a_restored_pool_is_counted_in_the_log_and_a_new_service_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.pool import statefile
    from poller.pool.restoring import restore

    caplog.set_level(logging.INFO, logger="poller")
    s = daemon_settings(tmp_path, "10.0.0.0/24")
    rising = Member(B, None, State.RISING, 1, 0, 50.0, LastProbe(50.0, Outcome.OK, 1.0, 200))
    statefile.save(s.state.path, {"default": Pool({A: up(A), B: rising})}, 60.0, 1060.0)
    asyncio.run(restore(s, RestoringApplier(tmp_path, [], [])))  # type: ignore[arg-type]
    said = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "state restored"]
    assert said == [{"members": 2, "serving": 1}]


def test_a_reload_owed_by_an_old_poller_is_kept_owed(tmp_path: Path) -> None:
    from poller.pool.restoring import restore

    s = daemon_settings(tmp_path, "10.0.0.0/24")
    old = {"version": 1, "saved_at": 1000.0, "pending_reload": True, "members": []}
    s.state.path.write_text(json.dumps(old))
    applier = RestoringApplier(tmp_path, [], [])
    asyncio.run(restore(s, applier))  # type: ignore[arg-type]
    assert applier.journal.pending


def test_a_probe_result_is_observed_with_everything_it_said() -> None:
    from poller.pool.pools import Observation

    result = ProbeResult(A, Outcome.UNEXPECTED_STATUS, False, 12.5, 503, "c1", service="web")
    assert decisions.observation(result) == Observation(
        A, False, "c1", Outcome.UNEXPECTED_STATUS, 12.5, 503
    )


# -- borrowing HAProxy's checks ------------------------------------------------------------


def test_the_verify_interval_is_spread_over_its_last_quarter() -> None:
    pool = settings().pool
    endpoints = [Endpoint(f"10.0.{i // 250}.{i % 250}", 3000) for i in range(1000)]
    afters = [decisions.verify_after(e, pool) for e in endpoints]
    longest = pool.verify_interval_seconds
    shortest = longest * (1 - decisions.VERIFY_SPREAD)
    assert all(shortest <= a <= longest for a in afters)
    # spread, not bunched: every tenth of the span holds some
    span = longest - shortest
    assert {min(9, int((a - shortest) / span * 10)) for a in afters} == set(range(10))


def test_only_up_members_haproxy_vouches_for_and_lately_verified_are_borrowed() -> None:
    pool_settings = settings().pool
    rising = Member(B, None, State.RISING, 1, 0, 0.0, LastProbe(0.0, Outcome.OK, 1.0, 200))
    falling = Member(C, None, State.FALLING, 0, 1, 0.0, LastProbe(0.0, Outcome.TIMEOUT, None, None))
    d = Endpoint("10.0.0.4", 3000)
    e = Endpoint("10.0.0.5", 3000)
    f = Endpoint("10.0.0.6", 3000)
    members = {A: _up(A), B: rising, C: falling, d: _up(d), e: _up(e), f: _up(f)}
    now = 1000.0
    verified = {A: now - 1, B: now - 1, C: now - 1, d: now - 1, e: now - 100}  # f: never
    g = Endpoint("10.0.0.7", 3000)
    members[g] = _up(g)
    verified[g] = now - 1
    # not d; g went down and up again in HAProxy after its own probe (a restart)
    vouched = {A: 0.0, B: 0.0, C: 0.0, e: 0.0, f: 0.0, g: now - 0.5}
    borrowed, probed = decisions.borrowable(
        Pool(members), sorted(members), vouched, verified, now, pool_settings
    )
    assert borrowed == [A]
    assert probed == [B, C, d, e, f, g]


def _up(endpoint: Endpoint) -> Member:
    return Member(endpoint, "x", State.UP, 2, 0, 0.0, LastProbe(0.0, Outcome.OK, 1.0, 200))


class _Runtime:
    def __init__(self, rows: list[ServerState] | Exception) -> None:
        self.rows = rows
        self.asked = 0

    async def servers(self, backend: str) -> list[ServerState]:
        self.asked += 1
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows


def test_haproxys_checks_are_read_at_most_once_per_max_age_and_failures_vouch_for_none() -> None:
    from poller.applying.borrowing import HAProxyChecks

    now = [0.0]
    passed = ServerState("a", A, 2, 0, 3, 6, since_change=40)
    failed = ServerState("b", B, 0, 0, 2, 6)
    running = ServerState("a", A, 2, 0, 0, 7, since_change=40)  # a check under way
    runtime = _Runtime([passed, failed])
    checks = HAProxyChecks(lambda: runtime, 0.5, lambda: now[0])  # type: ignore[arg-type, return-value]

    async def scenario() -> None:
        assert await checks.passed("nodes") == {A: -40.0}  # up for 40 s
        now[0] = 0.4
        assert await checks.passed("nodes") == {A: -40.0}
        assert runtime.asked == 1  # shared within max_age
        now[0] = 0.5
        runtime.rows = [running, failed]
        assert await checks.passed("nodes") == {A: -40.0}  # the last verdict stands
        now[0] = 1.0
        runtime.rows = HAProxyUnavailable("admin.sock: connection refused")
        assert await checks.passed("nodes") == {}  # nobody: poller probes all
        assert runtime.asked == 3

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("sections", "borrowed"),
    [
        ({}, True),
        ({"pool": {"haproxy_checks": False}}, False),
        ({"probe": {"expect_body": "hello"}}, False),  # HAProxy's check reads no body
    ],
)
def test_whose_members_haproxys_checks_may_answer_for(
    sections: dict[str, Any], borrowed: bool, tmp_path: Path
) -> None:
    from poller.daemon.runner import Daemon

    made = settings(state={"path": str(tmp_path / "state.json")}, **sections)
    daemon = Daemon(made, lambda: made)
    asked: list[str] = []

    async def passed(backend: str) -> dict[Endpoint, float]:
        asked.append(backend)
        return {A: 0.0}

    daemon.haproxy_checks.passed = passed  # type: ignore[method-assign]
    answer = asyncio.run(daemon._vouched("default"))
    assert answer == ({A: 0.0} if borrowed else {})
    assert asked == (["nodes"] if borrowed else [])
