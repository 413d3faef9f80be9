"""Tracking the pool: what sweeps and checks saw goes in, the pool moves, and everyone who
must know hears of it (logs, metrics, the status history, the state file, the applier
and the checker).

The one place the daemon's pool changes. A sweep that failed on the poller's own side
changes nothing (a failed sweep is not an empty pool); a failure that persists is logged
when it starts and when it ends, and counted in between. State changes (a member up or
down, an identity change) log at INFO with structured fields; the state file is saved
after each of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from poller.config import PoolSettings
from poller.endpoints import Endpoint
from poller.errors import PollerError
from poller.pool import decisions, statefile
from poller.pool.departures import Departures
from poller.pool.pools import EventKind, Member, Observation, Pool, Rules, State, step
from poller.results import Sweep, SweepKind
from poller.status.history import History
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

QUIET_EVENTS = frozenset({EventKind.CANDIDATE, EventKind.DROPPED})
# The replica at an address is no longer the one there before: what DNS said of it is void.
REPLACED = frozenset({EventKind.DOWN, EventKind.FORGOTTEN, EventKind.IDENTITY_CHANGED})
VACATED = 32


class Tracker:
    """The pools, one per service (`services`: their names, in config order)."""

    def __init__(
        self,
        services: Sequence[str],
        settings: PoolSettings,
        state_path: Path,
        metrics: Metrics,
        history: History,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pools: dict[str, Pool] = {name: Pool() for name in services}
        self.settings = settings
        self.state_path = state_path
        self.metrics = metrics
        self.history = history
        self.clock = clock
        self.wall = wall
        self.last_success_mono: float | None = None  # for ages: wall clocks jump
        self.last_success_wall: float | None = None
        self.failing: set[str] = set()  # sweep kinds failing now
        # Addresses of members forgotten lately, newest first: Docker hands them out again.
        self.vacated: deque[str] = deque(maxlen=VACATED)
        # Addresses DNS says are leaving (discovery.dns_names): out of the desired set.
        self.departures = Departures()
        self.on_serving_change: list[Callable[[], None]] = []
        self.on_members_change: list[Callable[[str], None]] = []  # hears the service
        self.save_due = asyncio.Event()
        self._writing = threading.Lock()
        self._taken = self._written = 0  # snapshots of the pool taken, and written
        self.gauge_members()

    def configure(self, settings: PoolSettings, state_path: Path) -> None:
        self.settings = settings
        self.state_path = state_path

    @property
    def services(self) -> list[str]:
        return list(self.pools)

    def members(self) -> list[tuple[str, Member]]:
        """Every member of every service, by service (in config order), then endpoint."""
        return [(name, m) for name, pool in self.pools.items() for m in pool.all()]

    def addresses(self) -> set[str]:
        return {e.address for pool in self.pools.values() for e in pool.members}

    # -- what was seen --------------------------------------------------------------------

    def checked(self, service: str, found: Sweep, asked: Collection[Endpoint]) -> None:
        """Member checks of one service came back."""
        if self.account(SweepKind.CHECK, found):
            self.observe(service, decisions.observations(found.results, asked))

    def vouched(self, service: str, endpoints: Collection[Endpoint]) -> None:
        """HAProxy's own passed checks answer for these members of one service."""
        self.metrics.borrowed.labels(service=service).inc(len(endpoints))
        self.observe(service, decisions.borrowed(endpoints))

    def discovered(self, found: Sweep, kind: SweepKind = SweepKind.FULL) -> None:
        """A discovery sweep (full or hot) came back: healthy endpoints a service's pool
        does not know are its candidates (each result names its service)."""
        if not self.account(kind, found):
            return
        for name, pool in self.pools.items():
            mine = [r for r in found.results if r.service in (name, "")]
            fresh = decisions.candidates(mine, pool)
            self.metrics.sweep_found.labels(kind=kind).inc(len(fresh))
            if fresh:
                self.observe(name, fresh)

    def account(self, kind: SweepKind, found: Sweep) -> bool:
        """Metrics and history of a sweep; False when it failed on the poller's own side."""
        self.metrics.sweep_duration.labels(kind=kind).observe(found.duration_seconds)
        for outcome, count in found.outcomes.items():
            self.metrics.probes.labels(result=str(outcome)).inc(count)
        if kind is not SweepKind.CHECK:
            self.history.sweep(found, kind)
        failure = found.failure
        if failure is not None:
            self.metrics.sweeps.labels(kind=kind, result="failed").inc()
            if kind not in self.failing:
                self.failing.add(kind)
                log.error(
                    "sweep failed; keeping the last pool",
                    extra={"fields": {"kind": kind, "error": failure}},
                )
            return False
        if kind in self.failing:
            self.failing.discard(kind)
            log.info("sweeps succeed again", extra={"fields": {"kind": kind}})
        self.metrics.sweeps.labels(kind=kind, result="ok").inc()
        self.last_success_mono = self.clock()
        self.last_success_wall = self.wall()
        self.metrics.last_success.set(self.last_success_wall)
        return True

    def announced(self, answers: Mapping[str, frozenset[str] | None]) -> None:
        """One round of discovery.dns_names answers (None: that name did not resolve)."""
        before = self.departures.leaving
        started = self.departures.update(answers, self.addresses())
        if started:
            log.info(
                "members leaving, as DNS says",
                extra={"fields": {"addresses": sorted(started), "names": sorted(answers)}},
            )
        if self.departures.leaving != before:
            self.metrics.leaving.set(len(self.departures.leaving))
            for notify in self.on_serving_change:
                notify()

    @property
    def leaving(self) -> frozenset[str]:
        return self.departures.leaving

    def observe(self, service: str, observations: Sequence[Observation]) -> None:
        old = self.pools[service]
        rules = Rules(self.settings.rise, self.settings.fall, self.settings.forget_after_seconds)
        pool, events = step(old, observations, self.clock(), rules)
        self.pools[service] = pool
        for seen in observations:
            if seen.endpoint in pool.members and not seen.borrowed:
                latency = seen.latency_ms if seen.healthy else None
                self.history.probe((service, seen.endpoint), latency)
        if not events and not _states_moved(old, pool, observations):
            # Checks that changed nobody's state (nearly all of them): nothing else to
            # tell, and nothing that costs a pass over every member.
            return
        before = {m.endpoint for m in old.serving()}
        known = set(old.members)
        self.history.keep_only((name, e) for name, p in self.pools.items() for e in p.members)
        self.history.member_events(service, events, self.wall())
        for event in events:
            if event.kind is EventKind.FORGOTTEN:
                self.vacated.appendleft(event.endpoint.address)
        if self.departures.gone(e.endpoint.address for e in events if e.kind in REPLACED):
            self.metrics.leaving.set(len(self.departures.leaving))
        for event in events:
            fields = {
                "member": str(event.endpoint),
                "identity": event.identity,
                "previous_identity": event.previous_identity,
                "reason": event.reason or None,
            }
            if len(self.pools) > 1:
                fields = {"service": service, **fields}
            log.log(
                logging.DEBUG if event.kind in QUIET_EVENTS else logging.INFO,
                f"member {event.kind}",
                extra={"fields": fields},
            )
        self.gauge_members()
        if any(e.kind not in QUIET_EVENTS for e in events):
            self.save()
        if set(pool.members) != known:
            for tell in self.on_members_change:
                tell(service)
        if {m.endpoint for m in pool.serving()} != before:
            for notify in self.on_serving_change:
                notify()

    # -- the pool -------------------------------------------------------------------------

    def desired(self, service: str, live: Collection[Endpoint] = ()) -> list[Endpoint]:
        return decisions.desired(self.pools[service], live, self.departures.leaving)

    def gauge_members(self) -> None:
        for name, pool in self.pools.items():
            counts = Counter(m.state for m in pool.members.values())
            for state in State:
                self.metrics.members.labels(service=name, state=str(state)).set(
                    counts.get(state, 0)
                )

    def save(self) -> None:
        """The state file is due a write: the `saving` task makes it, off the loop."""
        self.save_due.set()

    async def saving(self) -> None:
        """Write the state file whenever it is due, in a thread (it fsyncs): a slow disk
        never stalls the checks. Changes made while one write runs make one more."""
        while True:
            await self.save_due.wait()
            self.save_due.clear()
            await asyncio.to_thread(self._write, *self._snapshot())

    def save_now(self) -> None:
        """Write the state file at once, on this thread (at shutdown)."""
        self.save_due.clear()
        self._write(*self._snapshot())

    def _snapshot(self) -> tuple[int, dict[str, Pool], float, float]:
        self._taken += 1
        return self._taken, dict(self.pools), self.clock(), self.wall()

    def _write(self, taken: int, pools: dict[str, Pool], now: float, wall: float) -> None:
        # A write cut off by shutdown may finish in its thread after the final one: the
        # newer snapshot must stay on disk.
        with self._writing:
            if taken <= self._written:
                return
            try:
                statefile.save(self.state_path, pools, now, wall)
            except PollerError as exc:
                log.error("cannot save state", extra={"fields": {"error": str(exc)}})
            self._written = taken


def _states_moved(old: Pool, new: Pool, observations: Sequence[Observation]) -> bool:
    """Whether a member observed changed state (falling is a state with no event)."""
    for seen in observations:
        was, now = old.members.get(seen.endpoint), new.members.get(seen.endpoint)
        if (was is None) != (now is None) or (was and now and was.state is not now.state):
            return True
    return False
