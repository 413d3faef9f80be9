"""The daemon's cycle, as pure functions: which members are due for a check, when the
next one is, what a probe result says to the pool, what HAProxy should serve, and the
pool adopted from HAProxy at a first start. No I/O; time comes in as `now`.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections.abc import Collection, Iterable, Mapping

from poller.config import PoolSettings
from poller.endpoints import Endpoint
from poller.pool.pools import LastProbe, Member, Observation, Origin, Pool, State
from poller.results import Outcome, ProbeResult

# A member's own probe (with `haproxy_checks`) is due after between three quarters and
# all of `verify_interval_seconds`, spread by its endpoint: members verified together at
# a start are not all probed again in the same second.
VERIFY_SPREAD = 0.25
# A member is due a little before its pace is up, and the checker wakes when the earliest
# one's pace is fully up: members whose checks fell close together are checked together
# (one wake-up, one batch) instead of a few ms apart.
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


def gather_at(member: Member, settings: PoolSettings) -> float:
    """When the checker wakes for `member`: its pace fully up. Every member already due by
    then (within `EARLY_SHARE` of its own pace) goes in the same batch."""
    return member.last.at + check_interval(member, settings)


class DueQueue:
    """The members of one pool by due time (a heap), so that each wake-up of the checker
    costs what is due, not a pass over thousands of members. Entries are checked against
    the pool when they come out: a member gone, busy or no longer due is skipped or put
    back. `rebuild` after the members or the settings changed; `push` a member after its
    check. Pure: the pool and the time come in."""

    def __init__(self) -> None:
        # (due, gather, sequence, endpoint): members checked together share their times,
        # and the sequence keeps the heap from comparing endpoints.
        self._heap: list[tuple[float, float, int, Endpoint]] = []
        self._sequence = itertools.count()

    def rebuild(self, pool: Pool, settings: PoolSettings, busy: Collection[Endpoint]) -> None:
        self._heap = [
            (due_at(m, settings), gather_at(m, settings), next(self._sequence), e)
            for e, m in pool.members.items()
            if e not in busy
        ]
        heapq.heapify(self._heap)

    def push(self, member: Member, settings: PoolSettings) -> None:
        due, gather = due_at(member, settings), gather_at(member, settings)
        heapq.heappush(self._heap, (due, gather, next(self._sequence), member.endpoint))

    def pop_due(
        self, pool: Pool, settings: PoolSettings, now: float, busy: Collection[Endpoint]
    ) -> list[Endpoint]:
        """The members due by `now`, in endpoint order, taken out of the queue."""
        taken: set[Endpoint] = set()
        while self._heap and self._heap[0][0] <= now:
            endpoint = heapq.heappop(self._heap)[3]
            member = pool.members.get(endpoint)
            if member is None or endpoint in busy or endpoint in taken:
                continue  # gone, in flight (pushed again after), or a duplicate
            if due_at(member, settings) > now:
                self.push(member, settings)  # checked since this entry was made
                continue
            taken.add(endpoint)
        return sorted(taken, key=_order)

    def wake_at(self) -> float | None:
        """When the checker should wake next (None: no member, wait to be woken)."""
        return self._heap[0][1] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


def _order(endpoint: Endpoint) -> tuple[int, int, int]:
    return endpoint.order


def verify_after(endpoint: Endpoint, settings: PoolSettings) -> float:
    """How long HAProxy's checks may answer for `endpoint` after poller's own probe of it
    passed, before poller probes it itself again."""
    share = zlib.crc32(str(endpoint).encode()) / 2**32
    return settings.verify_interval_seconds * (1 - VERIFY_SPREAD * share)


def borrowable(
    pool: Pool,
    members: Iterable[Endpoint],
    vouched: Mapping[Endpoint, float],
    verified: Mapping[Endpoint, float],
    now: float,
    settings: PoolSettings,
) -> tuple[list[Endpoint], list[Endpoint]]:
    """Split members due for a check into (borrowed, probed): HAProxy's passed check
    answers for a member that is UP (not rising, falling or down: hysteresis counts
    poller's own probes), that HAProxy `vouched` for without a change of its state since
    poller's own probe last passed (`verified`; `vouched` maps to the latest time the
    state may have changed), and within its `verify_after`. Poller probes the rest."""
    borrowed, probed = [], []
    for endpoint in members:
        member = pool.members.get(endpoint)
        own = verified.get(endpoint)
        if (
            member is not None
            and member.state is State.UP
            and endpoint in vouched
            and own is not None
            and vouched[endpoint] < own
            and now - own < verify_after(endpoint, settings)
        ):
            borrowed.append(endpoint)
        else:
            probed.append(endpoint)
    return borrowed, probed


def borrowed(endpoints: Iterable[Endpoint]) -> list[Observation]:
    """HAProxy's passed checks, as observations: healthy, no identity (which keeps the
    member's), no latency of poller's."""
    return [Observation(e, True, None, Outcome.OK, borrowed=True) for e in endpoints]


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


def desired(
    pool: Pool, live: Collection[Endpoint] = (), leaving: Collection[str] = ()
) -> list[Endpoint]:
    """What HAProxy should serve: the serving members, in endpoint order, but those at an
    address `leaving` (DNS says their replica is being stopped). A member HAProxy does not
    have yet (`live`) is only added once its last probe passed: never one whose last probe
    failed (falling), never one only restored from the state file and not yet probed by
    this process (a node may have died while poller was away)."""
    return [
        m.endpoint
        for m in pool.serving()
        if m.endpoint.address not in leaving
        and (m.endpoint in live or (m.state is State.UP and m.last.outcome == Outcome.OK))
    ]


def adopted(servers: Iterable[Endpoint], rise: int, now: float) -> Pool:
    """A first start with no saved pool: take what HAProxy serves as UP members, probed
    at once, so poller never starts by stripping HAProxy while the probes decide."""
    never = LastProbe(float("-inf"), Origin.ADOPTED, None, None)
    return Pool({e: Member(e, None, State.UP, rise, 0, now, never) for e in servers})
