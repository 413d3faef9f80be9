"""The pool: who is in, who is rising, who is falling. Pure: time comes in as `now`.

A member is keyed by its endpoint (address, port). A candidate joins (UP) after `rise`
successes in a row; a member leaves (DOWN) after `fall` failures in a row. A success that reports a
different identity at the same address:port is another node (Docker reuses addresses):
the old member leaves at once and the new one starts rising. A target that has never
succeeded leaves no trace, so sweeping a /16 of empty addresses costs no memory here.

This module must not do I/O, read a clock or know about probes' transport: it is given
`Observation`s and returns a new `Pool` and the `Event`s that explain the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from poller.endpoints import Endpoint
from poller.results import Outcome


class State(StrEnum):
    RISING = "rising"  # succeeding, not yet `rise` times in a row: not serving
    UP = "up"  # serving
    FALLING = "falling"  # serving, but failed fewer than `fall` times in a row
    DOWN = "down"  # failed `fall` times in a row: not serving, remembered for a while


SERVING = frozenset({State.UP, State.FALLING})


class EventKind(StrEnum):
    CANDIDATE = "candidate"  # first success of an unknown target
    UP = "up"  # joined the pool
    DOWN = "down"  # left the pool
    DROPPED = "dropped"  # a candidate failed before it rose
    IDENTITY_CHANGED = "identity_changed"  # another node now answers at this address
    FORGOTTEN = "forgotten"  # a DOWN member no longer remembered


class Origin(StrEnum):
    """Where a member's last probe came from when this process has not probed it yet."""

    ADOPTED = "adopted"  # taken from what HAProxy served at a first start
    RESTORED = "restored"  # loaded from the state file


@dataclass(frozen=True)
class Observation:
    endpoint: Endpoint
    healthy: bool
    identity: str | None = None
    outcome: Outcome | None = None
    latency_ms: float | None = None
    status: int | None = None
    borrowed: bool = False  # HAProxy's own check, not a probe of poller's


@dataclass(frozen=True)
class LastProbe:
    at: float
    outcome: Outcome | Origin | None
    latency_ms: float | None
    status: int | None


@dataclass(frozen=True)
class Member:
    endpoint: Endpoint
    identity: str | None
    state: State
    successes: int  # in a row
    failures: int  # in a row
    since: float  # when `state` was entered
    last: LastProbe

    @property
    def serving(self) -> bool:
        return self.state in SERVING


@dataclass(frozen=True)
class Event:
    kind: EventKind
    endpoint: Endpoint
    at: float
    identity: str | None = None
    previous_identity: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Rules:
    rise: int
    fall: int
    forget_after_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1 or self.forget_after_seconds < 0:
            raise ValueError("rise and fall must be >= 1, forget_after_seconds >= 0")


@dataclass(frozen=True)
class Pool:
    members: Mapping[Endpoint, Member] = field(default_factory=dict)

    def serving(self) -> list[Member]:
        """The members that should take traffic, in the endpoint order."""
        return sorted((m for m in self.members.values() if m.serving), key=_endpoint)

    def all(self) -> list[Member]:
        return sorted(self.members.values(), key=_endpoint)


def _endpoint(member: Member) -> Endpoint:
    return member.endpoint


def step(
    pool: Pool, observations: Iterable[Observation], now: float, rules: Rules
) -> tuple[Pool, list[Event]]:
    """Apply observations in order; return the new pool and what changed."""
    members = dict(pool.members)
    events: list[Event] = []
    for seen in observations:
        member = members.get(seen.endpoint)
        updated = _advance(member, seen, now, rules, events)
        if updated is None:
            members.pop(seen.endpoint, None)
        else:
            members[seen.endpoint] = updated
    forgotten = [
        m
        for m in members.values()
        if m.state is State.DOWN and now - m.since >= rules.forget_after_seconds
    ]
    for member in forgotten:
        del members[member.endpoint]
        events.append(_event(EventKind.FORGOTTEN, member, now))
    return Pool(members), events


def _reason(seen: Observation) -> str:
    return "" if seen.outcome is None else str(seen.outcome)


def _event(kind: EventKind, member: Member, now: float, reason: str = "") -> Event:
    return Event(kind, member.endpoint, now, identity=member.identity, reason=reason)


def _advance(
    member: Member | None, seen: Observation, now: float, rules: Rules, events: list[Event]
) -> Member | None:
    if seen.borrowed and member is not None and member.state is State.UP:
        # HAProxy's passed check of a member that is up: one more success, nothing else.
        # It says when and what, not how fast: the member keeps the latency and status of
        # poller's last own probe. (Built directly: thousands of these a second.)
        kept = LastProbe(now, seen.outcome, member.last.latency_ms, member.last.status)
        return Member(
            member.endpoint,
            member.identity,
            State.UP,
            member.successes + 1,
            0,
            member.since,
            kept,
        )
    last = LastProbe(now, seen.outcome, seen.latency_ms, seen.status)
    if member is not None and seen.healthy and _identity_changed(member, seen):
        events.append(
            Event(
                EventKind.IDENTITY_CHANGED,
                member.endpoint,
                now,
                identity=seen.identity,
                previous_identity=member.identity,
                reason=f"now answered by {seen.identity!r}",
            )
        )
        if member.serving:
            events.append(_event(EventKind.DOWN, member, now, reason="identity changed"))
        member = None  # the old node is gone; the new one starts from nothing

    if member is None:
        if not seen.healthy:
            return None
        fresh = Member(seen.endpoint, seen.identity, State.RISING, 1, 0, now, last)
        events.append(_event(EventKind.CANDIDATE, fresh, now))
        return _rise_if_ready(fresh, now, rules, events)

    if seen.healthy:
        identity = member.identity if seen.identity is None else seen.identity
        if member.state is State.FALLING:
            return replace(
                member, state=State.UP, successes=1, failures=0, identity=identity, last=last
            )
        if member.state is State.DOWN:
            risen = replace(
                member,
                state=State.RISING,
                successes=1,
                failures=0,
                since=now,
                identity=identity,
                last=last,
            )
            return _rise_if_ready(risen, now, rules, events)
        counted = replace(
            member, successes=member.successes + 1, failures=0, identity=identity, last=last
        )
        return _rise_if_ready(counted, now, rules, events)

    failures = member.failures + 1
    if member.state is State.RISING:
        events.append(_event(EventKind.DROPPED, member, now, reason=_reason(seen)))
        return None
    if member.state is State.DOWN:
        return replace(member, failures=failures, successes=0, last=last)
    if failures >= rules.fall:
        down = replace(
            member, state=State.DOWN, failures=failures, successes=0, since=now, last=last
        )
        events.append(_event(EventKind.DOWN, down, now, reason=_reason(seen)))
        return down
    return replace(member, state=State.FALLING, failures=failures, successes=0, last=last)


def _rise_if_ready(member: Member, now: float, rules: Rules, events: list[Event]) -> Member:
    if member.state is State.RISING and member.successes >= rules.rise:
        up = replace(member, state=State.UP, since=now)
        events.append(_event(EventKind.UP, up, now))
        return up
    return member


def _identity_changed(member: Member, seen: Observation) -> bool:
    """Only two known, different identities mean another node; a missing one proves nothing."""
    return (
        member.identity is not None
        and seen.identity is not None
        and member.identity != seen.identity
    )
