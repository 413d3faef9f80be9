"""The daemon's cycle, as pure functions: which members are due for a check, when the
next one is, what a probe result says to the pool, what HAProxy should serve, and the
pool adopted from HAProxy at a first start. No I/O; time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from poller.config import PoolSettings
from poller.endpoints import Endpoint
from poller.pool.pools import LastProbe, Member, Observation, Origin, Pool, State
from poller.results import Outcome, ProbeResult

# A member is due a little before its pace is up, so members whose checks fell close
# together are checked together (one wake-up, one batch) instead of a few ms apart.
EARLY_SHARE = 0.05


def check_interval(member: Member, settings: PoolSettings) -> float:
    """Seconds between two checks of `member`. Candidates are re-probed quickly so they
    join soon; a member whose port refused (nothing listens: the process is gone) is
    confirmed as quickly. Other failures, timeouts above all, keep the normal pace, so a
    stall must last `fall` intervals to evict a member (HAProxy's own checks keep a dead
    one out of rotation meanwhile)."""
    quick = member.state is State.RISING or (
        member.state is State.FALLING and member.last.outcome == Outcome.REFUSED
    )
    return settings.rise_interval_seconds if quick else settings.interval_seconds


def due_at(member: Member, settings: PoolSettings) -> float:
    """When `member` is next due (its last probe plus its pace, a little early)."""
    step = check_interval(member, settings)
    return member.last.at + step * (1 - EARLY_SHARE)


def due(
    pool: Pool, settings: PoolSettings, now: float, busy: Collection[Endpoint] = ()
) -> list[Endpoint]:
    """The members to check now, in endpoint order (`busy`: checks still in flight)."""
    return [m.endpoint for m in pool.all() if m.endpoint not in busy and due_at(m, settings) <= now]


def next_due(pool: Pool, settings: PoolSettings, busy: Collection[Endpoint] = ()) -> float | None:
    """The earliest time a member not already being checked is due (None: no member)."""
    times = [due_at(m, settings) for m in pool.members.values() if m.endpoint not in busy]
    return min(times, default=None)


def observation(result: ProbeResult) -> Observation:
    return Observation(
        result.endpoint,
        result.healthy,
        result.identity,
        result.outcome,
        result.latency_ms,
        result.status,
    )


def observations(results: Iterable[ProbeResult], asked: Collection[Endpoint]) -> list[Observation]:
    """What member checks say, for the members that were asked."""
    return [observation(r) for r in results if r.endpoint in asked]


def candidates(results: Iterable[ProbeResult], pool: Pool) -> list[Observation]:
    """What a discovery sweep says: healthy endpoints the pool does not know yet."""
    return [observation(r) for r in results if r.healthy and r.endpoint not in pool.members]


def desired(pool: Pool, live: Collection[Endpoint] = ()) -> list[Endpoint]:
    """What HAProxy should serve: the serving members, in endpoint order. A member HAProxy
    does not have yet (`live`) is only added once its last probe passed: never one whose
    last probe failed (falling), never one only restored from the state file and not yet
    probed by this process (a node may have died while poller was away)."""
    return [
        m.endpoint
        for m in pool.serving()
        if m.endpoint in live or (m.state is State.UP and m.last.outcome == Outcome.OK)
    ]


def adopted(servers: Iterable[Endpoint], rise: int, now: float) -> Pool:
    """A first start with no saved pool: take what HAProxy serves as UP members, probed
    at once, so poller never starts by stripping HAProxy while the probes decide."""
    never = LastProbe(float("-inf"), Origin.ADOPTED, None, None)
    return Pool({e: Member(e, None, State.UP, rise, 0, now, never) for e in servers})
