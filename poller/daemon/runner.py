"""`poller run`: the daemon's wiring, its signals and the supervision of its tasks.

Long-lived tasks do the work: the checkers (members, each at its own pace), the
discoverer (sweeps for newcomers), the reconciler (HAProxy in step), the clock watcher,
the reconfigurer (SIGHUP) and the state writer (the state file, off the loop);
APScheduler times the periodic jobs (a discovery sweep is due, a reconcile is due); the
status server answers from snapshots. Every task is supervised, and supervision never
pauses (a SIGHUP is the reconfigurer's to handle): a task that ends for any reason but
shutdown is logged at ERROR with its traceback, counted, and ends `poller run` with an
error (exit 1), never a silent stop; failures inside a task's own cycle are that task's
to log, count and retry. Signals only set events: SIGTERM/SIGINT stop (an apply under
way finishes, bounded), SIGHUP re-reads the settings and the template (a bad one is
reported and the old kept; sweeps and checks under way finish on the prober they began
with, which closes after its last user).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from poller.applying.borrowing import HAProxyChecks
from poller.applying.executing import Applier
from poller.applying.reconciling import Reconciler
from poller.config import Settings
from poller.daemon import clocks
from poller.daemon.scheduling import Schedule
from poller.discovery.departing import DepartureWatcher
from poller.discovery.discovering import Discoverer
from poller.discovery.plans import SweepPlan, plan_sweep
from poller.discovery.probing import Prober
from poller.endpoints import Endpoint
from poller.errors import ConfigError, DaemonFailed, PollerError
from poller.haproxy.rendering import load_template
from poller.pool.checking import Checker
from poller.pool.restoring import restore
from poller.pool.tracking import Tracker
from poller.status import views
from poller.status.history import History, SweepRecord
from poller.status.metrics import Metrics
from poller.status.server import StatusServer

log = logging.getLogger("poller")

STOP_GRACE_SECONDS = 10.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        reload_settings: Callable[[], Settings],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.reload_settings = reload_settings
        self.metrics = metrics or Metrics()
        self.history = History()
        self.discovery: SweepPlan = plan_sweep(settings.discovery, settings.ports())
        self.prober = _prober(settings, self.discovery)
        self.applier = Applier(
            settings, load_template(settings.haproxy.template, settings.haproxy.mode)
        )
        names = [service.name for service in settings.resolved_services]
        self.tracker = Tracker(
            names, settings.pool, settings.state.path, self.metrics, self.history
        )
        self.haproxy_checks = HAProxyChecks(lambda: self.applier.runtime, _max_age(settings))
        self.checkers = [
            Checker(
                self.tracker,
                n,
                lambda: self.prober,
                self.metrics,
                vouched=lambda n=n: self._vouched(n),  # type: ignore[misc]
            )
            for n in names
        ]
        self.discoverer = Discoverer(
            self.tracker, lambda: self.discovery, lambda: self.prober, self.metrics
        )
        self.departures = DepartureWatcher(
            self.tracker, self.metrics, lambda: self.settings.discovery
        )
        self.reconciler = Reconciler(
            settings, self.tracker, self.applier, self.metrics, self.history
        )
        self.schedule = Schedule(
            self.discoverer.mark_due, self.discoverer.mark_hot_due, self.reconciler.changed.set
        )
        self.status: StatusServer | None = None
        self.stopping = asyncio.Event()
        self.hup = asyncio.Event()
        self.started_mono = time.monotonic()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.hup.set)
        self.tracker.pools = await restore(self.settings, self.applier)
        self.tracker.gauge_members()
        if self.settings.status.enabled:
            await self._serve_status()
        self.schedule.start(self.settings)
        self._export_settings()
        tasks = {
            *(self._task(_checker_name(c, len(self.checkers)), c.run()) for c in self.checkers),
            self._task("discoverer", self.discoverer.run()),
            self._task("departures", self.departures.run()),
            self._task("reconciler", self.reconciler.run()),
            self._task(
                "clock", clocks.watch(self.metrics, self.history, self.schedule.all_due_now)
            ),
            self._task("reconfigurer", self._reconfigurer()),
            self._task("state writer", self.tracker.saving()),
        }
        members = len(self.tracker.members())
        fields = {**self.discovery.summary(), "members": members}
        if len(self.checkers) > 1:
            fields["services"] = self.tracker.services
        log.info("poller running", extra={"fields": fields})
        self.reconciler.changed.set()
        try:
            await self._supervise(tasks)
        finally:
            await self._shut_down(tasks)

    def _task(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(work, name=name)

    async def _supervise(self, tasks: set[asyncio.Task[None]]) -> None:
        """Until a stop, watch the tasks: one that ends is a failure. (A SIGHUP is the
        reconfigurer's: supervision never pauses for it.)"""
        stop = self._task("stop", _wait(self.stopping))
        try:
            done, _ = await asyncio.wait(tasks | {stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        for task in done & tasks:
            error = task.exception() if not task.cancelled() else None
            self.metrics.task_failures.labels(task=task.get_name()).inc()
            log.error(
                "task ended unexpectedly; stopping",
                exc_info=error,
                extra={"fields": {"task": task.get_name()}},
            )
            raise DaemonFailed(f"the {task.get_name()} task ended: {error!r}") from error

    async def _reconfigurer(self) -> None:
        """Each SIGHUP re-reads the settings and the template (a bad one is reported and
        the old kept). A bug in it is logged and counted, and the old settings stay."""
        while True:
            await self.hup.wait()
            self.hup.clear()
            try:
                await self._reconfigure()
            except Exception:
                log.exception("reconfiguration failed unexpectedly; keeping the old settings")
                self.metrics.task_failures.labels(task="reconfigure").inc()

    async def _shut_down(self, tasks: set[asyncio.Task[None]]) -> None:
        log.info("stopping")
        self.schedule.shutdown()
        # An apply under way finishes (bounded): HAProxy and its file stay in step.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reconciler.applying.acquire(), STOP_GRACE_SECONDS)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task failed while stopping", exc_info=task.exception())
        self.tracker.save_now()
        if self.status is not None:
            await self.status.close()
        await self.prober.aclose()
        log.info("stopped")

    async def _serve_status(self) -> None:
        self.metrics.registry.register(views.HealthCollector(self.snapshot))
        routes = views.routes(self.snapshot, self.metrics.registry)
        failed = self.metrics.task_failures.labels(task="status").inc
        self.status = StatusServer(self.settings.status.listen, routes, failed)
        try:
            await self.status.start()
        except OSError as exc:
            listen = self.settings.status.listen
            raise ConfigError("status.listen", f"cannot listen on {listen}: {exc}") from exc
        where = f"{self.status.host}:{self.status.port}"
        log.info("status server listening", extra={"fields": {"listen": where}})

    async def _reconfigure(self) -> None:
        """SIGHUP: take new settings and template only if all of them are valid."""
        try:
            settings = self.reload_settings()
            template = load_template(settings.haproxy.template, settings.haproxy.mode)
            discovery = plan_sweep(settings.discovery, settings.ports())
            if _shape(settings) != _shape(self.settings):
                raise ConfigError(
                    "services", "names or backends changed: restart poller to apply that"
                )
        except PollerError as exc:
            log.error(
                "new configuration rejected; keeping the old one",
                extra={"fields": {"error": str(exc)}},
            )
            return
        old = self.prober
        self.settings, self.discovery = settings, discovery
        self.prober = _prober(settings, self.discovery)
        self.applier.configure(settings, template)
        self.haproxy_checks.max_age = _max_age(settings)
        self.tracker.configure(settings.pool, settings.state.path)
        self.reconciler.settings = settings
        self.schedule.configure(settings)
        self._export_settings()
        log.info("configuration reloaded", extra={"fields": {"targets": discovery.plan.count}})
        for checker in self.checkers:
            checker.wake.set()
        self.reconciler.changed.set()
        # Sweeps and checks under way still use the old prober: it closes after the last.
        await old.retire()

    async def _vouched(self, service: str) -> Mapping[Endpoint, float]:
        """The members of `service` HAProxy's own check passed lately: none when the
        settings say not to borrow, or its probe reads a body HAProxy's check does not."""
        settings = self.settings
        wanted = [s for s in settings.resolved_services if s.name == service]
        if not settings.pool.haproxy_checks or not wanted or wanted[0].probe.expect_body:
            return {}
        return await self.haproxy_checks.passed(wanted[0].backend)

    def _export_settings(self) -> None:
        s = self.settings
        self.metrics.settings(
            s.discovery.interval_seconds,
            s.haproxy.reconcile_interval_seconds,
            s.guard.max_hold_seconds,
        )

    def snapshot(self) -> views.Snapshot:
        holds = self.reconciler.holds
        backends = {s.name: s.backend for s in self.settings.resolved_services}
        live = self.reconciler.live
        return views.Snapshot(
            mono=time.monotonic(),
            wall=time.time(),
            members=self.tracker.members(),
            latencies=self.history.latencies,
            discovery={
                **self.discovery.summary(),
                "interval_seconds": self.settings.discovery.interval_seconds,
                "full_interval_seconds": self.settings.discovery.full_interval_seconds,
                "last_sweep": _json(self.history.last_sweep),
                "last_hot_sweep": _json(self.history.last_hot_sweep),
                "next_sweep_at": self.schedule.next_sweep_at(),
            },
            held=frozenset((n, e) for n, hold in holds.items() for e in hold.held),
            leaving=self.tracker.leaving,
            hold_reason="; ".join(
                f"{n}: {h.reason}" if len(backends) > 1 else h.reason for n, h in holds.items()
            )
            or None,
            live=frozenset(
                (n, e) for n, backend in backends.items() for e in live.get(backend, ())
            ),
            set_aside={
                (n, held.endpoint): held.state
                for n, backend in backends.items()
                for held in self.reconciler.aside.values()
                if held.backend == backend
            },
            services=[
                {"name": s.name, "backend": s.backend, "ports": list(s.ports)}
                for s in self.settings.resolved_services
            ],
            last_change=self.reconciler.last_change,
            changes=list(self.history.changes),
            events=list(self.history.events),
            stats_port=views.port_of(self.settings.haproxy.stats_bind),
            last_success_mono=self.tracker.last_success_mono,
            last_success_wall=self.tracker.last_success_wall,
            sweep_interval_seconds=self.settings.discovery.interval_seconds,
            in_step_mono=self.reconciler.in_step_mono,
            started_mono=self.started_mono,
            reconcile_interval_seconds=self.settings.haproxy.reconcile_interval_seconds,
        )


def _json(record: SweepRecord | None) -> dict[str, Any] | None:
    return None if record is None else record.as_json()


def _max_age(settings: Settings) -> float:
    """How old a read of HAProxy's checks may be: half a member's interval, so a failed
    HAProxy check is seen by the member's next due check."""
    return settings.pool.interval_seconds / 2


def _checker_name(checker: Checker, count: int) -> str:
    return f"checker {checker.service}" if count > 1 else "checker"


def _prober(settings: Settings, discovery: SweepPlan) -> Prober:
    return Prober(
        settings.probe,
        settings.discovery.concurrency,
        discovery.scope,
        services=settings.resolved_services,
    )


def _shape(settings: Settings) -> list[tuple[str, str]]:
    """What a SIGHUP cannot change: the services and their backends."""
    return [(s.name, s.backend) for s in settings.resolved_services]


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def run_daemon(settings: Settings, reload_settings: Callable[[], Settings]) -> None:
    await Daemon(settings, reload_settings).run()
