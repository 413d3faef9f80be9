"""The tracker (`tracking.Tracker`): what each probe result leaves in the pool, the log, the
metrics and the history, who hears of a change, and the state file's writes. In process,
on a fake clock (the rules themselves are `pools`: tests/unit/test_pools.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pytest

from poller.pool.pools import Pool, State
from poller.pool.tracking import Tracker
from poller.results import Outcome, ProbeResult, Sweep, SweepKind
from poller.status.history import EventKind
from tests.support.activities import (
    A,
    B,
    Clock,
    failed_sweep,
    fields,
    ok,
    sample,
    sweep_of,
    tracker,
    up,
)

DEADLINE_SECONDS = 5.0


def levels(caplog: pytest.LogCaptureFixture, message: str) -> list[str]:
    return [r.levelname for r in caplog.records if r.getMessage() == message]


def test_a_sweep_is_measured_and_kept_for_the_status_page(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    found = sweep_of(ok(A), ProbeResult(B, Outcome.REFUSED, False, 0.2))
    found.duration_seconds = 0.25
    made.discovered(found)
    metrics = made.metrics
    assert sample(metrics, "poller_probes_total", result="ok") == 1
    assert sample(metrics, "poller_probes_total", result="refused") == 1
    duration = "poller_sweep_duration_seconds_sum"
    assert sample(metrics, duration, kind="discovery") == pytest.approx(0.25)
    assert sample(metrics, "poller_sweeps_total", kind="discovery", result="ok") == 1
    assert made.history.last_sweep is not None
    assert made.history.last_sweep.targets == 2
    assert made.last_success_wall == clock.wall()
    made.discovered(sweep_of(), SweepKind.HOT)
    assert made.history.last_hot_sweep is not None


def test_member_checks_are_measured_but_not_kept_as_a_sweep(tmp_path: Path) -> None:
    made = tracker(tmp_path, Clock())
    made.pools["default"] = Pool({A: up(A)})
    made.checked("default", sweep_of(ok(A)), [A])
    assert sample(made.metrics, "poller_sweeps_total", kind="check", result="ok") == 1
    assert made.history.last_sweep is None


def test_a_failed_sweep_is_an_error_with_its_kind_and_reason_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poller")
    made = tracker(tmp_path, Clock())
    made.discovered(failed_sweep(), SweepKind.HOT)
    made.discovered(failed_sweep(), SweepKind.HOT)
    error = "4 of 4 probes failed on the poller's side (no route)"
    assert fields(caplog, "sweep failed; keeping the last pool") == [
        {"kind": SweepKind.HOT, "error": error}
    ]
    assert levels(caplog, "sweep failed; keeping the last pool") == ["ERROR"]
    # Another kind failing is said for itself.
    made.discovered(failed_sweep())
    assert len(fields(caplog, "sweep failed; keeping the last pool")) == 2
    made.discovered(sweep_of(), SweepKind.HOT)
    assert fields(caplog, "sweeps succeed again") == [{"kind": SweepKind.HOT}]
    assert levels(caplog, "sweeps succeed again") == ["INFO"]
    assert made.failing == {SweepKind.FULL}
    assert made.last_success_mono is not None


def test_a_join_is_logged_saved_and_heard_by_the_checker_and_the_reconciler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poller")
    clock = Clock()
    made = tracker(tmp_path, clock)
    members: list[str] = []
    serving: list[bool] = []
    made.on_members_change.append(members.append)
    made.on_serving_change.append(lambda: serving.append(True))
    made.discovered(sweep_of(ok(A, identity="c1")))
    assert members == ["default"]  # a new candidate: the checker must ask it
    assert serving == []
    assert not made.save_due.is_set()  # a candidate is not worth a write
    assert levels(caplog, "member candidate") == ["DEBUG"]
    clock.now += 0.1
    made.checked("default", sweep_of(ok(A, identity="c1")), [A])
    assert made.pools["default"].members[A].state is State.UP
    assert serving == [True]
    assert members == ["default"]  # the same members
    assert made.save_due.is_set()
    assert fields(caplog, "member up") == [
        {"member": "10.0.0.1:3000", "identity": "c1", "previous_identity": None, "reason": None}
    ]
    assert levels(caplog, "member up") == ["INFO"]
    assert sample(made.metrics, "poller_members", service="default", state="up") == 1
    assert sample(made.metrics, "poller_members", service="default", state="rising") == 0
    [event] = made.history.events
    assert (event.kind, event.member, event.at) == (EventKind.UP, "10.0.0.1:3000", clock.wall())
    assert list(made.history.latencies[("default", A)]) == [1.0, 1.0]


def test_with_several_services_a_members_log_line_names_its_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="poller")
    made = tracker(tmp_path, Clock(), ("web", "api"))
    made.discovered(sweep_of(ok(A, "web")))
    assert fields(caplog, "member candidate")[0]["service"] == "web"
    assert made.history.latencies.keys() == {("web", A)}


def test_a_failed_probe_keeps_no_latency_and_a_forgotten_member_leaves_the_history(
    tmp_path: Path,
) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A), B: up(B)})
    made.checked("default", sweep_of(ProbeResult(A, Outcome.TIMEOUT, False, 500.0)), [A])
    assert list(made.history.latencies[("default", A)]) == [None]
    made.checked("default", sweep_of(ok(B)), [B])
    assert list(made.history.latencies[("default", B)]) == [1.0]
    assert made.addresses() == {A.address, B.address}
    assert made.members() == [("default", made.pools["default"].members[e]) for e in (A, B)]


def test_the_members_gauge_counts_every_state_of_every_service(tmp_path: Path) -> None:
    made = tracker(tmp_path, Clock(), ("web", "api"))
    made.pools["web"] = Pool({A: up(A), B: up(B)})
    made.gauge_members()
    assert sample(made.metrics, "poller_members", service="web", state="up") == 2
    for state in State:
        assert (
            made.metrics.registry.get_sample_value(
                "poller_members", {"service": "api", "state": str(state)}
            )
            == 0
        )


def test_the_state_file_is_written_off_the_loop_when_due(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.pools["default"] = Pool({A: up(A)})
    path = tmp_path / "state.json"

    async def scenario() -> None:
        task = asyncio.create_task(made.saving())
        try:
            made.save()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_SECONDS
            while not path.exists():
                assert loop.time() < deadline
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    saved = json.loads(path.read_text())
    [member] = saved["services"]["default"]["members"]
    assert (member["address"], member["port"], member["state"]) == ("10.0.0.1", 3000, "up")
    assert saved["saved_at"] == clock.wall()
    assert not made.save_due.is_set()


def test_a_state_file_that_cannot_be_written_is_an_error_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    blocker = tmp_path / "file"
    blocker.write_text("")
    made = Tracker(
        ["default"],
        tracker(tmp_path, clock).settings,
        blocker / "state.json",  # a directory that is a file
        tracker(tmp_path, clock).metrics,
        tracker(tmp_path, clock).history,
        clock,
        clock.wall,
    )
    made.save_now()
    [said] = fields(caplog, "cannot save state")
    assert str(blocker) in said["error"]
    assert levels(caplog, "cannot save state") == ["ERROR"]
    # An older snapshot finishing late is not written over it.
    made._write(1, {}, 0.0, 0.0)
    assert len(fields(caplog, "cannot save state")) == 1


def test_new_settings_and_state_path_take_effect(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock)
    other = tmp_path / "other.json"
    settings = made.settings.model_copy(update={"rise": 1})
    made.configure(settings, other)
    made.discovered(sweep_of(ok(A)))
    assert made.pools["default"].members[A].state is State.UP  # rise 1
    made.save_now()
    assert other.exists()
    assert made.services == ["default"]


def test_an_empty_sweep_changes_nothing_and_tells_nobody(tmp_path: Path) -> None:
    made = tracker(tmp_path, Clock())
    heard: list[object] = []
    made.on_members_change.append(heard.append)
    made.on_serving_change.append(lambda: heard.append("serving"))
    made.discovered(Sweep())
    assert heard == []
    assert sample(made.metrics, "poller_sweep_found_total", kind="discovery") == 0


def test_the_pool_settings_rules_apply_fall_and_forget_after(tmp_path: Path) -> None:
    clock = Clock()
    made = tracker(tmp_path, clock, ("web", "api"))
    made.configure(
        made.settings.model_copy(update={"fall": 1, "forget_after_seconds": 5.0}),
        tmp_path / "state.json",
    )
    made.pools["web"] = Pool({A: up(A)})
    made.checked("web", sweep_of(ProbeResult(A, Outcome.REFUSED, False, 0.1)), [A])
    assert made.pools["web"].members[A].state is State.DOWN  # fall 1: one failure
    [event] = made.history.events
    assert (event.kind, event.service) == (EventKind.DOWN, "web")
    clock.now += 5.1
    made.checked("web", sweep_of(ProbeResult(A, Outcome.REFUSED, False, 0.1)), [A])
    assert A not in made.pools["web"].members  # forgotten after 5 s down
    assert list(made.vacated) == [A.address]


def test_a_new_replica_at_an_address_dns_said_was_leaving_is_served_at_once(
    tmp_path: Path,
) -> None:
    """Swarm reuses addresses, and lists a new task in its DNS only once its HEALTHCHECK
    passed: the leaving mark goes with the replica it was about (down, or another node
    answering there), so the new one is served after `rise` probes, not after DNS."""
    clock = Clock()
    made = tracker(tmp_path, clock)
    made.configure(made.settings.model_copy(update={"fall": 1}), tmp_path / "state.json")
    made.pools["default"] = Pool({A: up(A), B: up(B)})
    made.announced({"tasks.web": frozenset({A.address, B.address})})
    made.announced({"tasks.web": frozenset({B.address})})
    assert made.desired("default") == [B]
    made.checked("default", sweep_of(ProbeResult(A, Outcome.TIMEOUT, False, 0.1)), [A])
    assert made.pools["default"].members[A].state is State.DOWN
    assert made.leaving == frozenset()
    assert sample(made.metrics, "poller_members_leaving") == 0
    for _ in range(made.settings.rise):  # a new task at A: DNS does not list it yet
        clock.now += 1
        made.checked("default", sweep_of(ok(A)), [A])
        made.announced({"tasks.web": frozenset({B.address})})
    assert made.desired("default") == [A, B]
