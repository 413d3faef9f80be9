"""`poller run`: the daemon. Schedules the sweeps, keeps the pool, applies it to HAProxy.

APScheduler jobs (max_instances=1, coalesce=True): `check` probes known members, each at
its own pace (pool.interval_seconds, or pool.rise_interval_seconds while rising or just
refused), `discover` sweeps the whole subnet for new candidates every
discovery.interval_seconds, and `reconcile` wakes the applier now and then. Pool changes
wake the applier too; it debounces, guards against mass removals and makes HAProxy agree.
Failures are logged, counted and retried with backoff while the last good state stays
live. Signals only set flags: SIGTERM/SIGINT stop,
SIGHUP re-reads the settings and the template (a bad one is reported and the old kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import generate_latest

from poller import files, states
from poller.applying import Applier, Change, servers_in_file
from poller.config import Settings
from poller.errors import ConfigError, HAProxyUnavailable, PollerError, StateError
from poller.guards import Hold, guard
from poller.haproxy.runtime import ServerState
from poller.history import History
from poller.metrics import Metrics
from poller.pools import EventKind, LastProbe, Member, Observation, Pool, Rules, State, step
from poller.probing import Outcome, ProbeResult, Sweep, make_client, sweep
from poller.rendering import Server, Template, load_template, sort_servers
from poller.status import Response, StatusServer, page_routes
from poller.sweeping import Discovery, discover, resolve
from poller.targets import Target

log = logging.getLogger("poller")

STOP_GRACE_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0
# Reconcile now and then even without pool changes: catches HAProxy restarts and drift.
RECONCILE_EVERY_SECONDS = 10.0
CLOCK_CHECK_SECONDS = 1.0
CLOCK_JUMP_SECONDS = 2.0  # more than the event loop's own lateness under load


def _fields(**values: Any) -> dict[str, Any]:
    return {"fields": values}


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
        self.template: Template = load_template(settings.haproxy.template)
        self.discovery: Discovery = resolve(settings.discovery)
        self.pool = Pool()
        self.applier = Applier(settings, self.template, journal=self._journal)
        self.hold: Hold | None = None
        self.live: frozenset[Server] = frozenset()
        self.changed = asyncio.Event()
        self.stopping = asyncio.Event()
        self.hup = asyncio.Event()
        self.last_success_wall: float | None = None
        self.last_success_mono: float | None = None  # for ages: wall clocks jump
        self.last_change: dict[str, Any] | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.status: StatusServer | None = None
        self._client = make_client(settings.probe, settings.discovery.concurrency)
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = BACKOFF_FIRST_SECONDS
        self._applying = asyncio.Lock()
        self.history = History()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.hup.set)
        self._restore()
        # A poller killed mid-write leaves staged copies; this sidecar is their only writer.
        for path in (self.settings.haproxy.config_path, self.settings.state.path):
            removed = files.remove_stale(path)
            if removed:
                log.info("removed staged copies left by a stop", extra=_fields(files=removed))
        if self.settings.status.enabled:
            self.status = StatusServer(self.settings.status.listen, self._routes())
            try:
                await self.status.start()
            except OSError as exc:
                raise ConfigError(
                    "status.listen", f"cannot listen on {self.settings.status.listen}: {exc}"
                ) from exc
            log.info(
                "status server listening",
                extra=_fields(listen=f"{self.status.host}:{self.status.port}"),
            )
        await self._adopt()
        self._gauge_members()
        self.scheduler = AsyncIOScheduler()
        self._schedule()
        self.scheduler.start()
        applier = asyncio.create_task(self._apply_loop(), name="applier")
        watcher = asyncio.create_task(self._watch_clock(), name="clock")
        log.info(
            "poller running",
            extra=_fields(
                subnets=list(self.discovery.subnets),
                ports=list(self.discovery.plan.ports),
                targets=self.discovery.plan.count,
                method=self.discovery.method,
                members=len(self.pool.members),
            ),
        )
        self.changed.set()
        try:
            while not self.stopping.is_set():
                hup = asyncio.create_task(self.hup.wait())
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({hup, stop}, return_when=asyncio.FIRST_COMPLETED)
                hup.cancel()
                stop.cancel()
                if self.hup.is_set() and not self.stopping.is_set():
                    self.hup.clear()
                    self._reconfigure()
        finally:
            log.info("stopping")
            self.scheduler.shutdown(wait=False)
            # An apply under way finishes (bounded): HAProxy and its file stay in step.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applying.acquire(), STOP_GRACE_SECONDS)
            for task in (applier, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._retry is not None:
                self._retry.cancel()
            self._save()
            if self.status is not None:
                await self.status.close()
            await self._client.aclose()
            log.info("stopped")

    def _schedule(self) -> None:
        assert self.scheduler is not None
        for job in self.scheduler.get_jobs():
            job.remove()
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        # Ticks at half the rise interval, so each member is probed close to its own pace.
        self.scheduler.add_job(
            self.check,
            "interval",
            seconds=self.settings.pool.rise_interval_seconds / 2,
            id="check",
            **common,
        )
        self.scheduler.add_job(
            self.discover,
            "interval",
            seconds=self.settings.discovery.interval_seconds,
            id="discover",
            next_run_time=_now_dt(),
            **common,
        )
        self.scheduler.add_job(
            self.changed.set,
            "interval",
            seconds=RECONCILE_EVERY_SECONDS,
            id="reconcile",
            **common,
        )

    async def _watch_clock(self) -> None:
        """APScheduler times its jobs on the wall clock: set backwards, every job would
        wait out the jump (a stall); set forwards, it would work through the missed runs.
        Pool timing is monotonic, so only the schedule needs mending: when the wall clock
        moves away from the monotonic one, every job is due now and paces itself again."""
        mono, wall = time.monotonic(), time.time()
        while True:
            await asyncio.sleep(CLOCK_CHECK_SECONDS)
            now_mono, now_wall = time.monotonic(), time.time()
            jump = (now_wall - wall) - (now_mono - mono)
            mono, wall = now_mono, now_wall
            if abs(jump) < CLOCK_JUMP_SECONDS or self.scheduler is None:
                continue
            log.warning(
                "wall clock jumped; jobs rescheduled", extra=_fields(seconds=round(jump, 3))
            )
            self.history.note("clock_jump", now_wall, f"{jump:+.1f} s", [])
            self.metrics.clock_jumps.inc()
            for job in self.scheduler.get_jobs():
                job.modify(next_run_time=_now_dt())
            self.scheduler.wakeup()

    def _reconfigure(self) -> None:
        """SIGHUP: take new settings and template only if all of them are valid."""
        try:
            settings = self.reload_settings()
            template = load_template(settings.haproxy.template)
            discovery = resolve(settings.discovery)
        except PollerError as exc:
            log.error(
                "new configuration rejected; keeping the old one", extra=_fields(error=str(exc))
            )
            return
        old_client = self._client
        self.settings, self.template, self.discovery = settings, template, discovery
        self._client = make_client(settings.probe, settings.discovery.concurrency)
        asyncio.get_running_loop().create_task(old_client.aclose())
        self.applier.configure(settings, template)
        self._schedule()
        log.info("configuration reloaded", extra=_fields(targets=discovery.plan.count))
        self.changed.set()

    # -- state -------------------------------------------------------------------------

    def _restore(self) -> None:
        try:
            saved = states.load(self.settings.state.path, time.monotonic(), time.time())
        except StateError as exc:
            log.error("state file ignored", extra=_fields(error=str(exc)))
            return
        if saved is None:
            return
        self.pool = saved.pool
        self.applier.pending_reload = saved.pending_reload
        log.info(
            "state restored",
            extra=_fields(members=len(saved.pool.members), serving=len(saved.pool.serving())),
        )

    async def _adopt(self) -> None:
        """No saved pool: start from what HAProxy serves (or its file), not from nothing,
        so a first start or a lost state file never strips HAProxy while sweeps begin."""
        if self.pool.members:
            return
        try:
            servers = [Server(s.address, s.port) for s in await self.applier.live_servers()]
            source = "runtime"
        except PollerError:
            try:
                text = self.applier.config_path.read_text()
            except (OSError, UnicodeDecodeError):
                text = ""
            servers, source = servers_in_file(text), "config file"
        now = time.monotonic()
        members = {
            (s.address, s.port): Member(
                s.address,
                s.port,
                None,
                State.UP,
                self.settings.pool.rise,
                0,
                now,
                LastProbe(float("-inf"), "adopted", None, None),
            )
            for s in servers
        }
        self.pool = Pool(members)
        if members:
            log.info(
                "adopted HAProxy's servers", extra=_fields(members=len(members), source=source)
            )

    def _journal(self, pending_reload: bool) -> None:
        self._save(pending_reload)

    def _save(self, pending_reload: bool | None = None) -> None:
        pending = self.applier.pending_reload if pending_reload is None else pending_reload
        try:
            states.save(self.settings.state.path, self.pool, pending, time.monotonic(), time.time())
        except PollerError as exc:
            log.error("cannot save state", extra=_fields(error=str(exc)))

    # -- sweeps ------------------------------------------------------------------------

    def _rules(self) -> Rules:
        pool = self.settings.pool
        return Rules(pool.rise, pool.fall, pool.forget_after_seconds)

    def _due(self, member: Member, now: float) -> bool:
        pool = self.settings.pool
        # Candidates are re-probed quickly so they join soon. A member whose port refused
        # (nothing listens: the process is gone) is confirmed as quickly. Other failures,
        # timeouts above all, keep the normal pace, so a stall must last `fall` intervals
        # to evict a member (HAProxy's own checks keep a dead one out of rotation meanwhile).
        quick = member.state is State.RISING or (
            member.state is State.FALLING and member.last.outcome == Outcome.REFUSED
        )
        pace = pool.rise_interval_seconds if quick else pool.interval_seconds
        return now - member.last.at >= pace * 0.95

    async def check(self) -> None:
        """Probe the known members that are due."""
        now = time.monotonic()
        due = [m for m in self.pool.all() if self._due(m, now)]
        if not due:
            return
        targets = [Target(m.address, m.port) for m in due]
        found = await sweep(
            targets,
            self.settings.probe,
            self.settings.discovery.concurrency,
            keep_all=True,
            client=self._client,
        )
        self._account("check", found)
        if found.failure is not None:
            return
        known = {m.key for m in due}
        self._observe([_observation(r) for r in found.results if _key(r) in known])

    async def discover(self) -> None:
        """Sweep the whole subnet for candidates the pool does not know yet."""
        found = await discover(
            self.discovery, self.settings.probe, self.settings.discovery.concurrency
        )
        self._account("discovery", found)
        if found.failure is not None:
            return
        known = set(self.pool.members)
        fresh = [_observation(r) for r in found.results if r.healthy and _key(r) not in known]
        if fresh:
            self._observe(fresh)

    def _account(self, kind: str, found: Sweep) -> None:
        self.metrics.sweep_duration.labels(kind=kind).observe(found.duration_seconds)
        for outcome, count in found.outcomes.items():
            self.metrics.probes.labels(result=str(outcome)).inc(count)
        if found.failure is not None:
            if kind == "discovery":
                self.history.sweep(found)
            self.metrics.sweeps.labels(kind=kind, result="failed").inc()
            self.metrics.sweep_failures.labels(kind=kind).inc()
            log.error(
                "sweep failed; keeping the last pool",
                extra=_fields(kind=kind, error=found.failure),
            )
            return
        if kind == "discovery":
            self.history.sweep(found)
        self.metrics.sweeps.labels(kind=kind, result="ok").inc()
        self.last_success_wall = time.time()
        self.last_success_mono = time.monotonic()
        self.metrics.last_success.set(self.last_success_wall)

    def _observe(self, observations: list[Observation]) -> None:
        before = {m.key for m in self.pool.serving()}
        self.pool, events = step(self.pool, observations, time.monotonic(), self._rules())
        for seen in observations:
            if seen.key in self.pool.members:
                self.history.probe(seen.key, seen.latency_ms if seen.healthy else None)
        self.history.keep_only(self.pool.members)
        self.history.member_events(events, time.time())
        for event in events:
            level = (
                logging.DEBUG
                if event.kind in (EventKind.CANDIDATE, EventKind.DROPPED)
                else logging.INFO
            )
            log.log(
                level,
                f"member {event.kind}",
                extra=_fields(
                    member=f"{event.address}:{event.port}",
                    identity=event.identity,
                    previous_identity=event.previous_identity,
                    reason=event.reason or None,
                ),
            )
        self._gauge_members()
        if any(e.kind not in (EventKind.CANDIDATE, EventKind.DROPPED) for e in events):
            self._save()
        if {m.key for m in self.pool.serving()} != before:
            self.changed.set()

    def _gauge_members(self) -> None:
        counts = Counter(m.state for m in self.pool.members.values())
        for state in State:
            self.metrics.members.labels(state=str(state)).set(counts.get(state, 0))

    # -- applying ----------------------------------------------------------------------

    async def _apply_loop(self) -> None:
        while True:
            await self.changed.wait()
            await self._debounce()
            async with self._applying:
                await self._reconcile()

    async def _debounce(self) -> None:
        haproxy = self.settings.haproxy
        first = time.monotonic()
        while True:
            self.changed.clear()
            left = first + haproxy.max_wait_seconds - time.monotonic()
            quiet = min(haproxy.min_wait_seconds, left)
            if quiet <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), quiet)
            except TimeoutError:
                return

    async def _reconcile(self) -> None:
        desired = [Server(m.address, m.port) for m in self.pool.serving()]
        started = time.monotonic()
        try:
            states: list[ServerState] | None
            try:
                states = await self.applier.live_servers()
                live = frozenset(Server(s.address, s.port) for s in states)
                self.metrics.haproxy_up.set(1)
            except HAProxyUnavailable:
                states, live = None, self.live
                self.metrics.haproxy_up.set(0)
            servers, hold = guard(desired, live, self.settings.guard, time.monotonic(), self.hold)
            self._report_hold(hold)
            change = await self.applier.apply(servers, states)
        except PollerError as exc:
            method = "reload" if self.applier.pending_reload else "runtime"
            self.metrics.changes.labels(method=method, result="failed").inc()
            self.last_change = {
                "method": method,
                "result": "failed",
                "error": str(exc),
                "at": time.time(),
            }
            self.history.change(self.last_change)
            log.error(
                "HAProxy not updated; will retry",
                extra=_fields(error=str(exc), retry_in_seconds=self._backoff),
            )
            self._schedule_retry()
            return
        self._backoff = BACKOFF_FIRST_SECONDS
        self.live = frozenset(servers)
        if change.method != "none":
            self._report_change(change, time.monotonic() - started)

    def _report_hold(self, hold: Hold | None) -> None:
        if hold is not None and self.hold is None:
            self.metrics.guard_holds.inc()
            held = [s.endpoint for s in sort_servers(hold.held)]
            self.history.note("guard_hold", time.time(), hold.reason, held)
            log.warning(
                "guard holding removals",
                extra=_fields(held=[s.endpoint for s in sorted(hold.held)], reason=hold.reason),
            )
        elif hold is None and self.hold is not None:
            released = [s.endpoint for s in sort_servers(self.hold.held)]
            self.history.note("guard_release", time.time(), "", released)
            log.info(
                "guard released", extra=_fields(held=[s.endpoint for s in sorted(self.hold.held)])
            )
        self.hold = hold
        self.metrics.guard_held.set(len(hold.held) if hold else 0)

    def _report_change(self, change: Change, seconds: float) -> None:
        self.metrics.changes.labels(method=change.method, result="ok").inc()
        self.metrics.change_duration.labels(method=change.method).observe(seconds)
        self.last_change = {
            "method": change.method,
            "result": "ok",
            "added": change.added,
            "removed": change.removed,
            "duration_seconds": round(seconds, 3),
            "at": time.time(),
        }
        self.history.change(self.last_change)
        log.info(
            "HAProxy updated",
            extra=_fields(
                method=change.method,
                added=change.added,
                removed=change.removed,
                duration_ms=round(seconds * 1000, 1),
            ),
        )

    def _schedule_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(self._backoff, self.changed.set)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_SECONDS)

    # -- status ------------------------------------------------------------------------

    def _routes(self) -> dict[str, Callable[[], Response]]:
        routes = {
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            "/pool": self._pool_json,
            "/events": self._events_json,
        }
        routes.update(page_routes())
        return routes

    def _events_json(self) -> Response:
        return Response(200, "application/json", _json({"events": list(self.history.events)}))

    def _healthz(self) -> Response:
        limit = 3 * self.settings.discovery.interval_seconds
        age = None if self.last_success_mono is None else time.monotonic() - self.last_success_mono
        healthy = age is not None and age <= limit
        body = {
            "healthy": healthy,
            "last_successful_sweep_age_seconds": age,
            "limit_seconds": limit,
        }
        return Response(200 if healthy else 503, "application/json", _json(body))

    def _metrics(self) -> Response:
        return Response(
            200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.metrics.registry)
        )

    def _pool_json(self) -> Response:
        now_mono, now_wall = time.monotonic(), time.time()
        held = {(s.address, s.port) for s in self.hold.held} if self.hold else set()
        live = {(s.address, s.port) for s in self.live}
        members = [
            {
                "address": m.address,
                "port": m.port,
                "state": str(m.state),
                "serving": m.serving,
                "held": m.key in held,
                # Left the pool, still in HAProxy: being drained (or held by the guard).
                "draining": not m.serving and m.key in live,
                "latency_history": list(self.history.latencies.get(m.key, ())),
                "identity": m.identity,
                "since": round(now_wall - (now_mono - m.since), 3),
                "last_result": m.last.outcome,
                "last_status": m.last.status,
                "latency_ms": m.last.latency_ms,
            }
            for m in self.pool.all()
        ]
        job = self.scheduler.get_job("discover") if self.scheduler is not None else None
        next_run = job.next_run_time.timestamp() if job and job.next_run_time else None
        body = {
            "members": members,
            "discovery": {
                "subnets": list(self.discovery.subnets),
                "ports": list(self.discovery.plan.ports),
                "targets": self.discovery.plan.count,
                "method": self.discovery.method,
                "interval_seconds": self.settings.discovery.interval_seconds,
                "last_sweep": self.history.last_sweep,
                "next_sweep_at": next_run,
            },
            "guard": {
                "holding": self.hold is not None,
                "reason": self.hold.reason if self.hold else None,
            },
            "haproxy": {
                "live": [s.endpoint for s in sort_servers(self.live)],
                "last_change": self.last_change,
                "changes": list(self.history.changes),
                "stats_port": _port(self.settings.haproxy.stats_bind),
            },
            "last_successful_sweep": self.last_success_wall,
        }
        return Response(200, "application/json", _json(body))


def _port(bind: str) -> int | None:
    tail = bind.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _json(value: Any) -> bytes:
    return (json.dumps(value, default=str) + "\n").encode()


def _observation(result: ProbeResult) -> Observation:
    return Observation(
        result.target.address,
        result.target.port,
        result.healthy,
        result.identity,
        str(result.outcome),
        result.latency_ms,
        result.status,
    )


def _key(result: ProbeResult) -> tuple[str, int]:
    return result.target.address, result.target.port


def _now_dt() -> datetime:
    return datetime.now(UTC)


async def run_daemon(settings: Settings, reload_settings: Callable[[], Settings]) -> None:
    await Daemon(settings, reload_settings).run()
