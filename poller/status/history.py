"""What the status page shows besides the pool itself: a short memory of the daemon.

Bounded ring buffers, so memory stays flat however long the poller runs: the last probes'
latencies per member (for sparklines), the recent events (joins, leaves, identity
changes, guard holds), the recent HAProxy changes, and the last discovery sweep. Pure
bookkeeping: no I/O, time comes in as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from poller.endpoints import Endpoint
from poller.pool.pools import Event, EventKind
from poller.results import Sweep, SweepKind

LATENCIES_PER_MEMBER = 30
EVENTS = 200
CHANGES = 20
SHOWN_EVENTS = frozenset(
    {EventKind.UP, EventKind.DOWN, EventKind.IDENTITY_CHANGED, EventKind.FORGOTTEN}
)


Key = tuple[str, Endpoint]  # (service, endpoint): a member


class NoteKind(StrEnum):
    """Daemon-level events, beside the members' own (`EventKind`)."""

    GUARD_HOLD = "guard_hold"
    GUARD_RELEASE = "guard_release"
    SET_ASIDE = "set_aside"  # an operator put a server in maintenance or drain
    HANDED_BACK = "handed_back"  # ... and set it ready again
    CLOCK_JUMP = "clock_jump"


@dataclass(frozen=True)
class EventRecord:
    """One line of the events log: a member's event or a daemon-level note."""

    at: float  # wall clock
    kind: EventKind | NoteKind
    service: str | None
    member: str  # the member, or the members a note is about, comma-separated
    identity: str | None = None
    previous_identity: str | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChangeRecord:
    """One apply that changed HAProxy, or failed to."""

    at: float  # wall clock
    method: str  # an `applying.planning.Method`
    ok: bool
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    duration_seconds: float | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """`/pool`'s shape: a success says what moved, a failure why."""
        if self.ok:
            return {
                "method": self.method,
                "result": "ok",
                "added": list(self.added),
                "removed": list(self.removed),
                "duration_seconds": self.duration_seconds,
                "at": self.at,
            }
        return {"method": self.method, "result": "failed", "error": self.error, "at": self.at}


@dataclass(frozen=True)
class SweepRecord:
    """The last sweep of a kind, as the status page shows it."""

    at: float  # wall clock, when it started
    duration_seconds: float
    targets: int
    answered: int
    known: int
    healthy: int
    failure: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class History:
    def __init__(self) -> None:
        self.latencies: dict[Key, deque[float | None]] = {}
        self.events: deque[EventRecord] = deque(maxlen=EVENTS)
        self.changes: deque[ChangeRecord] = deque(maxlen=CHANGES)
        self.last_sweep: SweepRecord | None = None  # the last full sweep
        self.last_hot_sweep: SweepRecord | None = None

    def probe(self, key: Key, latency_ms: float | None) -> None:
        """One probe of a member: its latency, or None when it failed."""
        ring = self.latencies.setdefault(key, deque(maxlen=LATENCIES_PER_MEMBER))
        ring.append(latency_ms)

    def keep_only(self, keys: Iterable[Key]) -> None:
        present = set(keys)
        for key in [k for k in self.latencies if k not in present]:
            del self.latencies[key]

    def member_events(self, service: str, events: Iterable[Event], wall_now: float) -> None:
        for event in events:
            if event.kind in SHOWN_EVENTS:
                self.events.appendleft(
                    EventRecord(
                        wall_now,
                        event.kind,
                        service,
                        str(event.endpoint),
                        event.identity,
                        event.previous_identity,
                        event.reason,
                    )
                )

    def note(
        self,
        kind: NoteKind,
        wall_now: float,
        reason: str,
        members: list[str],
        service: str | None = None,
    ) -> None:
        """A daemon-level event (a guard hold or release, a clock jump)."""
        self.events.appendleft(
            EventRecord(wall_now, kind, service, ", ".join(members), reason=reason)
        )

    def change(self, record: ChangeRecord) -> None:
        self.changes.appendleft(record)

    def sweep(self, found: Sweep, kind: SweepKind = SweepKind.FULL) -> None:
        record = SweepRecord(
            found.started_at,
            round(found.duration_seconds, 3),
            found.targets,
            sum(1 for r in found.results if r.connected),
            found.known,
            len(found.healthy),
            found.failure,
        )
        if kind is SweepKind.HOT:
            self.last_hot_sweep = record
        else:
            self.last_sweep = record
