"""Nothing in `poller run` dies silently: an exception injected into each of its tasks, in
process, and what the daemon does about it (logged at ERROR with the traceback, counted,
then retried, or `poller run` ends with exit 1).

The daemon runs for real on loopback (its sweeps and checks reach 127.0.9.0/30, where
nothing listens); HAProxy is absent, and `haproxy -c` is `true`, so the applier installs
files it cannot hand to anyone: these tests are about the daemon's own machinery.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller import cli
from poller.config import Settings, load_settings
from poller.daemon.runner import Daemon
from poller.errors import DaemonFailed
from poller.status import views
from tests.support.labs import free_port

INTERVAL = 0.2


def settings_file(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    document: dict[str, dict[str, Any]] = {
        "discovery": {"subnets": ["127.0.9.0/30"], "exclude": [], "interval_seconds": INTERVAL},
        "probe": {"timeout_seconds": 0.1},
        "pool": {"interval_seconds": INTERVAL, "rise_interval_seconds": 0.05},
        "haproxy": {
            "binary": "true",
            "config_path": str(tmp_path / "haproxy.cfg"),
            "admin_socket": str(tmp_path / "admin.sock"),
            "master_socket": str(tmp_path / "master.sock"),
            "reconcile_interval_seconds": INTERVAL,
        },
        "status": {"listen": f"127.0.0.1:{free_port()}"},
        "state": {"path": str(tmp_path / "state.json")},
    }
    for section, values in sections.items():
        document[section].update(values)
    path = tmp_path / "poller.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(settings_file(tmp_path), environ={})


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="poller")
    return caplog


def run_for(
    daemon: Daemon, condition: Callable[[], bool], timeout: float = 10.0
) -> BaseException | None:
    """Run the daemon until `condition` holds (then stop it, like SIGTERM would) or it
    ends by itself; the exception it ended with, if any."""

    async def scenario() -> BaseException | None:
        task = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + timeout
        while not task.done() and not condition():
            if time.monotonic() > deadline:
                daemon.stopping.set()
                await task
                raise AssertionError("the condition did not hold in time")
            await asyncio.sleep(0.02)
        daemon.stopping.set()
        try:
            await task
        except Exception as exc:
            return exc
        return None

    return asyncio.run(scenario())


def failures(daemon: Daemon, task: str) -> float:
    return daemon.metrics.task_failures.labels(task=task)._value.get()


def errors_with_traceback(caplog: pytest.LogCaptureFixture, message: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and message in r.getMessage() and r.exc_info
    ]


def test_an_unexpected_error_in_an_apply_is_logged_counted_and_retried_with_backoff(
    settings: Settings, logged: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(settings, lambda: settings)
    attempts: list[float] = []

    async def broken(*args: object) -> object:
        attempts.append(time.monotonic())
        raise RuntimeError("injected")

    daemon.applier.apply = broken  # type: ignore[method-assign]
    assert run_for(daemon, lambda: len(attempts) >= 4) is None
    assert errors_with_traceback(logged, "HAProxy not updated: unexpected error; will retry")
    assert "injected" in logged.text
    assert failures(daemon, "apply") >= 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Backoff: 0.5 s, then 1 s, then 2 s (reconcile ticks come on top of the first).
    assert gaps[-1] >= 1.5 * min(gaps[:-1]), gaps
    assert daemon.reconciler.last_change is not None
    assert daemon.reconciler.last_change.ok is False


def test_an_unexpected_error_in_member_checks_is_logged_and_checking_goes_on(
    tmp_path: Path, logged: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "haproxy.cfg").write_text(
        "backend nodes\n    server n_127_0_9_1_3000 127.0.9.1:3000\n"
    )
    settings = load_settings(settings_file(tmp_path), environ={})
    daemon = Daemon(settings, lambda: settings)
    real = daemon.prober.checks
    calls = []

    async def flaky(endpoints: Any, service: str = "") -> Any:
        calls.append(endpoints)
        if len(calls) == 1:
            raise RuntimeError("injected into a check")
        return await real(endpoints, service)

    daemon.prober.checks = flaky  # type: ignore[method-assign]
    ok = daemon.metrics.sweeps.labels(kind="check", result="ok")
    assert run_for(daemon, lambda: ok._value.get() >= 1) is None
    assert errors_with_traceback(logged, "member checks failed unexpectedly")
    assert failures(daemon, "check") == 1


def test_an_unexpected_error_in_a_discovery_sweep_is_logged_and_sweeping_goes_on(
    settings: Settings, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from poller.discovery import discovering

    real = discovering.run_sweep
    calls = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("injected into a sweep")
        return await real(*args, **kwargs)

    monkeypatch.setattr(discovering, "run_sweep", flaky)
    daemon = Daemon(settings, lambda: settings)
    ok = daemon.metrics.sweeps.labels(kind="discovery", result="ok")
    assert run_for(daemon, lambda: ok._value.get() >= 2) is None
    assert errors_with_traceback(logged, "discovery sweep failed unexpectedly")
    assert failures(daemon, "discovery") == 1


async def _raises() -> None:
    await asyncio.sleep(0.3)
    raise RuntimeError("injected: the task dies")


async def _returns() -> None:
    await asyncio.sleep(0.3)


@pytest.mark.parametrize("task", ["checker", "discoverer", "reconciler", "clock"])
@pytest.mark.parametrize("ending", [_raises, _returns])
def test_a_task_that_ends_ends_the_daemon_loudly(
    settings: Settings,
    logged: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    ending: Callable[[], Awaitable[None]],
) -> None:
    daemon = Daemon(settings, lambda: settings)
    if task == "clock":
        monkeypatch.setattr("poller.daemon.runner.clocks.watch", lambda *args: ending())
    else:
        owner = daemon.checkers[0] if task == "checker" else getattr(daemon, task)
        monkeypatch.setattr(owner, "run", ending)
    error = run_for(daemon, lambda: False)
    assert isinstance(error, DaemonFailed)
    assert task in str(error)
    records = [r for r in logged.records if r.getMessage() == "task ended unexpectedly; stopping"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].fields == {"task": task}  # type: ignore[attr-defined]
    if ending is _raises:
        assert records[0].exc_info is not None  # the traceback is in the log
    assert failures(daemon, task) == 1
    assert "stopped" in logged.text  # it still shut down in order


def test_a_dead_task_is_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from poller.pool.checking import Checker

    monkeypatch.setattr(Checker, "run", lambda self: _raises())
    code = cli.main(["run", "--config", str(settings_file(tmp_path))])
    assert code == 1


def test_a_failing_view_answers_500_and_the_server_goes_on(
    settings: Settings, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error
    import urllib.request

    daemon = Daemon(settings, lambda: settings)

    def broken(snapshot: views.Snapshot) -> dict[str, Any]:
        raise RuntimeError("injected into a view")

    monkeypatch.setattr(views, "pool", broken)
    answers: list[int] = []

    def fetch() -> bool:
        for path in ("/pool", "/metrics"):
            url = f"http://{settings.status.listen}{path}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    answers.append(response.status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
            except OSError:
                return False
        return True

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            if await asyncio.to_thread(fetch):
                break
            await asyncio.sleep(0.02)
        daemon.stopping.set()
        await task

    asyncio.run(scenario())
    assert answers == [500, 200]
    assert errors_with_traceback(logged, "status request failed")
    assert failures(daemon, "status") == 1


def test_healthz_says_so_when_haproxy_is_not_kept_in_step(settings: Settings) -> None:
    daemon = Daemon(settings, lambda: settings)  # HAProxy's sockets do not exist

    def unhealthy_for_haproxy() -> bool:
        healthy, body = views.health(daemon.snapshot())
        return not healthy and any("HAProxy" in p for p in body["problems"])

    assert run_for(daemon, unhealthy_for_haproxy) is None
    _, body = views.health(daemon.snapshot())
    # Sweeps work (loopback, nothing listens): only HAProxy is named.
    assert len(body["problems"]) == 1
    assert body["haproxy_in_step_age_seconds"] > body["haproxy_limit_seconds"]


def test_a_sighup_during_a_slow_sweep_neither_breaks_it_nor_pauses_supervision(
    tmp_path: Path, logged: pytest.LogCaptureFixture
) -> None:
    """Four listeners that accept and never answer make each sweep last four probe
    deadlines (one probe at a time). A SIGHUP early in one must let it finish on the
    prober it started with (probes start after the old one's deadline has passed): no
    closed-client error, no task failure, no ERROR line."""
    port = free_port()
    silent = []
    for address in ("127.0.9.1", "127.0.9.2", "127.0.9.3", "127.0.9.4"):
        listener = socket.socket()
        listener.bind((address, port))
        listener.listen(16)  # the kernel accepts; nobody ever reads or answers
        silent.append(listener)
    path = settings_file(
        tmp_path,
        discovery={
            "subnets": ["127.0.9.0/29"],
            "ports": [port],
            "concurrency": 1,
            "interval_seconds": 3.0,
        },
        probe={"timeout_seconds": 0.5},
        pool={"interval_seconds": 3.0},
        haproxy={"reconcile_interval_seconds": 30.0},  # HAProxy is absent: no retries logged
    )
    settings = load_settings(path, environ={})
    daemon = Daemon(settings, lambda: load_settings(path, environ={}))
    swept = daemon.metrics.sweeps.labels(kind="discovery", result="ok")

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 15.0
        while not condition():
            assert time.monotonic() < deadline, f"{what} did not happen in time"
            await asyncio.sleep(0.01)

    async def scenario() -> float:
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.discoverer.sweeping_since is not None, "a sweep")
            before = swept._value.get()
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: "configuration reloaded" in logged.text, "the reload")
            await until(lambda: swept._value.get() >= before + 2, "two more sweeps")
            return before
        finally:
            daemon.stopping.set()
            await task

    try:
        before = asyncio.run(scenario())
    finally:
        for listener in silent:
            listener.close()
    assert swept._value.get() >= before + 2
    assert [r.getMessage() for r in logged.records if r.levelno >= logging.ERROR] == []
    failed = daemon.metrics.registry.get_sample_value
    assert all(
        not failed("poller_task_failures_total", {"task": name})
        for name in ("discovery", "check", "apply", "reconfigure", "status")
    )
