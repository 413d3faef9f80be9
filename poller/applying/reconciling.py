"""Bringing HAProxy in step with the pool: when the serving set changes (debounced), and
now and then to catch drift (a HAProxy restart, a reload by someone else).

One reconcile reads HAProxy's servers, lets the guard hold removals that look like the
poller's own fault, and has the applier plan and carry out the change. Servers an
operator put aside by hand (maintenance or drain) are theirs: said once when seen and
once when handed back, gauged, and kept out of the guard's arithmetic (their leaving is
no sign of a fault of poller's). A failed apply
(HAProxy away, a rejected config, a failed reload, an unexpected exception) is logged
with the reason, counted, and retried with backoff (0.5 s doubling to 15 s) while the
last good state stays live. `in_step_mono` is when HAProxy was last brought or found in
step: `/healthz` turns 503 when that is too long ago.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from poller.applying.executing import Applier, Result
from poller.applying.planning import Key, Method, SetAside
from poller.config import Settings
from poller.endpoints import Endpoint, ordered
from poller.errors import HAProxyError, HAProxyUnavailable
from poller.haproxy.servers import ServerState
from poller.pool.guards import Guarded, Hold, guard
from poller.pool.tracking import Tracker
from poller.status.history import ChangeRecord, History, NoteKind
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        tracker: Tracker,
        applier: Applier,
        metrics: Metrics,
        history: History,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.applier = applier
        self.metrics = metrics
        self.history = history
        self.clock = clock
        self.wall = wall
        self.changed = asyncio.Event()
        self.applying = asyncio.Lock()
        self.guarded: dict[str, Guarded] = {}  # by service: each has its own guard
        self.live: dict[str, frozenset[Endpoint]] = {}  # by backend: what HAProxy serves
        # By backend: what HAProxy serves as far as poller knows for sure (read, or applied).
        self.known: dict[str, frozenset[Endpoint]] = {}
        self.last_change: ChangeRecord | None = None
        self.in_step_mono: float | None = None
        self.backoff = BACKOFF_FIRST_SECONDS
        self.retry_at = float("-inf")  # after a failure, no attempt before this
        self.failing: str | None = None  # the error of the failures in a row, if any
        self.failed_attempts = 0
        self.answered_once = False  # HAProxy's runtime API answered since the start
        self.aside: dict[Key, SetAside] = {}  # servers an operator put aside, by hand
        self.started = clock()
        self.behind_since: dict[str, float] = {}  # by service: when HAProxy fell behind
        tracker.on_serving_change.append(self.changed.set)
        tracker.on_serving_change.append(self.gauge_behind)

    async def run(self) -> None:
        while True:
            await self.changed.wait()
            await self._debounce()
            # Pool changes and periodic ticks wait out the backoff too.
            wait = self.retry_at - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self.applying:
                await self.reconcile()

    async def _debounce(self) -> None:
        haproxy = self.settings.haproxy
        first = self.clock()
        while True:
            self.changed.clear()
            left = first + haproxy.max_wait_seconds - self.clock()
            quiet = min(haproxy.min_wait_seconds, left)
            if quiet <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), quiet)
            except TimeoutError:
                return

    async def reconcile(self) -> None:
        """One attempt; never raises but for cancellation."""
        try:
            result = await self._attempt()
        except Exception as exc:
            # A bug: the traceback goes to the log; the apply is retried like any other.
            log.exception("HAProxy not updated: unexpected error; will retry")
            self.metrics.task_failures.labels(task="apply").inc()
            result = Result(self.applier.attempt, error=f"unexpected error: {exc!r}")
            self._failed(result, logged=True)
            return
        self.gauge_behind()
        if result.method is not Method.OFFLINE:
            self.answered_once = True
        if result.ok:
            if self.failed_attempts:
                log.info(
                    "HAProxy in step again",
                    extra={"fields": {"failed_attempts": self.failed_attempts}},
                )
            self.failing, self.failed_attempts = None, 0
            self.backoff = BACKOFF_FIRST_SECONDS
            self.retry_at = float("-inf")
            self.in_step_mono = self.clock()
            self.metrics.haproxy_in_step.set(self.wall())
            if result.method is not Method.NONE:
                self._report_change(result)
        else:
            self._failed(result)

    async def _attempt(self) -> Result:
        states: dict[str, list[ServerState]] | None
        try:
            states = await self.applier.live_servers()
            live = {b: frozenset(s.endpoint for s in servers) for b, servers in states.items()}
            self.metrics.haproxy_up.set(1)
        except HAProxyUnavailable:
            # What it served last; before the first answer, what its config file lists.
            states = None
            file = {b: frozenset(e) for b, e in self.applier.live_file_servers().items()}
            live = self.live or file
            self.metrics.haproxy_up.set(0)
        except HAProxyError as exc:  # it answered, but not as expected (no such backend)
            self.metrics.haproxy_up.set(1)
            # Reading the runtime API's servers: a failure of the runtime path.
            return Result(Method.RUNTIME, error=str(exc))
        self._report_aside(self.applier.set_aside(states))
        servers: dict[str, frozenset[Endpoint]] = {}
        for service in self.settings.resolved_services:
            have = live.get(service.backend, frozenset())
            desired = self.tracker.desired(service.name, have)
            # The operator's servers are left as they are, so they count neither way.
            mine = self._aside_in(service.backend)
            previous = self.guarded.get(service.name)
            leaving = self.tracker.leaving
            guarded = guard(
                [e for e in desired if e not in mine],
                have - mine,
                self.settings.guard,
                self.clock(),
                previous,
                announced=[e for e in have if e.address in leaving],
            )
            self._report_hold(service.name, guarded.hold)
            self.guarded[service.name] = guarded
            servers[service.backend] = guarded.servers
        self._gauge_holds()
        if states is not None:
            self.known = live
        result = await self.applier.apply(servers, states)
        if result.method is not Method.OFFLINE:
            self.live = servers  # what HAProxy serves now, even if the file is behind
        if result.ok:
            self.known = servers
        return result

    def _aside_in(self, backend: str) -> set[Endpoint]:
        """The servers of `backend` an operator put aside: they count neither way."""
        return {a.endpoint for a in self.aside.values() if a.backend == backend}

    def gauge_behind(self) -> None:
        """How far what HAProxy serves (as last read or made) is from the pool's desired
        set, per service, and since when: the divergence of this load balancer, seen
        from its own poller. The operator's servers count neither way."""
        for service in self.settings.resolved_services:
            have = self.known.get(service.backend, frozenset())
            mine = self._aside_in(service.backend)
            desired = set(self.tracker.desired(service.name, have)) - mine
            behind = len(desired ^ (have - mine))
            if not behind:
                self.behind_since.pop(service.name, None)
            elif service.name not in self.behind_since:
                self.behind_since[service.name] = self.wall()
            self.metrics.behind.labels(service=service.name).set(behind)
            since = self.behind_since.get(service.name, 0.0)
            self.metrics.behind_since.labels(service=service.name).set(since)

    def _failed(self, result: Result, logged: bool = False) -> None:
        self.metrics.changes.labels(method=result.method, result="failed").inc()
        self.last_change = ChangeRecord(self.wall(), result.method, False, error=result.error)
        self.history.change(self.last_change)
        self.failed_attempts += 1
        if not logged:
            fields = {"error": result.error, "retry_in_seconds": self.backoff}
            if result.error == self.failing:
                # The same failure again: counted (poller_haproxy_changes_total), and
                # logged once when it starts and once when it ends, not at every retry.
                log.debug("HAProxy still not updated", extra={"fields": fields})
            elif not self.answered_once and self.clock() - self.started < self._grace():
                # A sidecar often starts before HAProxy has opened its socket.
                log.info("waiting for HAProxy's runtime API", extra={"fields": fields})
            else:
                log.error("HAProxy not updated; will retry", extra={"fields": fields})
        self.failing = result.error
        self.retry_at = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_SECONDS)
        self.changed.set()  # the retry

    def _grace(self) -> float:
        """How long HAProxy may take to answer after the poller starts."""
        return 3 * self.settings.haproxy.reconcile_interval_seconds

    @property
    def holds(self) -> dict[str, Hold]:
        """The services whose guard holds removals now."""
        return {
            name: guarded.hold for name, guarded in self.guarded.items() if guarded.hold is not None
        }

    def _report_hold(self, service: str, hold: Hold | None) -> None:
        before = self.holds.get(service)
        several = len(self.settings.resolved_services) > 1
        if hold is not None and before is None:
            self.metrics.guard_holds.inc()
            held = [str(e) for e in ordered(hold.held)]
            fields = {"held": held, "reason": hold.reason}
            if several:
                fields = {"service": service, **fields}
            self.history.note(NoteKind.GUARD_HOLD, self.wall(), hold.reason, held, service)
            log.warning("guard holding removals", extra={"fields": fields})
        elif hold is None and before is not None:
            released = [str(e) for e in ordered(before.held)]
            fields = {"service": service, "held": released} if several else {"held": released}
            self.history.note(NoteKind.GUARD_RELEASE, self.wall(), "", released, service)
            log.info("guard released", extra={"fields": fields})

    def _report_aside(self, aside: dict[Key, SetAside]) -> None:
        """Say once when an operator puts a server aside and once when they hand it back."""
        services = {s.backend: s.name for s in self.settings.resolved_services}
        for key in sorted(aside.keys() - self.aside.keys()):
            held = aside[key]
            fields = {"server": f"{held.backend}/{key[1]}", "state": held.state}
            self.history.note(
                NoteKind.SET_ASIDE,
                self.wall(),
                held.state,
                [str(held.endpoint)],
                services.get(held.backend),
            )
            log.info("server set aside by hand; poller leaves it alone", extra={"fields": fields})
        for key in sorted(self.aside.keys() - aside.keys()):
            held = self.aside[key]
            self.history.note(
                NoteKind.HANDED_BACK,
                self.wall(),
                "",
                [str(held.endpoint)],
                services.get(held.backend),
            )
            log.info(
                "server handed back; poller manages it again",
                extra={"fields": {"server": f"{held.backend}/{key[1]}"}},
            )
        self.aside = aside
        for backend, name in services.items():
            for state in ("maint", "drain"):
                count = sum(1 for a in aside.values() if a.backend == backend and a.state == state)
                self.metrics.set_aside.labels(service=name, state=state).set(count)

    def _gauge_holds(self) -> None:
        holds = self.holds.values()
        self.metrics.guard_held.set(sum(len(hold.held) for hold in holds))
        since = min((hold.since for hold in holds), default=None)
        self.metrics.guard_hold_started.set(
            0 if since is None else self.wall() - (self.clock() - since)
        )

    def _report_change(self, result: Result) -> None:
        self.metrics.changes.labels(method=result.method, result="ok").inc()
        self.metrics.change_duration.labels(method=result.method).observe(result.duration_seconds)
        self.last_change = ChangeRecord(
            self.wall(),
            result.method,
            True,
            tuple(result.added),
            tuple(result.removed),
            round(result.duration_seconds, 3),
        )
        self.history.change(self.last_change)
        fields = {
            "method": result.method,
            "added": result.added,
            "removed": result.removed,
            "duration_ms": round(result.duration_seconds * 1000, 1),
        }
        if result.reason:
            fields["reason"] = result.reason  # why a reload, when there was one
        log.info("HAProxy updated", extra={"fields": fields})
