"""What the status page shows besides the pool itself: a short memory of the daemon.

Bounded ring buffers, so memory stays flat however long the poller runs: the last probes'
latencies per member (for sparklines), the recent events (joins, leaves, identity
changes, guard holds), the recent HAProxy changes, and the last discovery sweep. Pure
bookkeeping: no I/O, time comes in as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from poller.endpoints import Endpoint
from poller.pools import Event, EventKind
from poller.results import Sweep

LATENCIES_PER_MEMBER = 30
EVENTS = 200
CHANGES = 20
SHOWN_EVENTS = frozenset(
    {EventKind.UP, EventKind.DOWN, EventKind.IDENTITY_CHANGED, EventKind.FORGOTTEN}
)


Key = tuple[str, Endpoint]  # (service, endpoint): a member


class History:
    def __init__(self) -> None:
        self.latencies: dict[Key, deque[float | None]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.changes: deque[dict[str, Any]] = deque(maxlen=CHANGES)
        self.last_sweep: dict[str, Any] | None = None  # the last full sweep
        self.last_hot_sweep: dict[str, Any] | None = None

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
                    {
                        "at": wall_now,
                        "kind": str(event.kind),
                        "service": service,
                        "member": str(event.endpoint),
                        "identity": event.identity,
                        "previous_identity": event.previous_identity,
                        "reason": event.reason,
                    }
                )

    def note(
        self,
        kind: str,
        wall_now: float,
        reason: str,
        members: list[str],
        service: str | None = None,
    ) -> None:
        """A daemon-level event (a guard hold or release, a clock jump)."""
        self.events.appendleft(
            {
                "at": wall_now,
                "kind": kind,
                "service": service,
                "member": ", ".join(members),
                "identity": None,
                "previous_identity": None,
                "reason": reason,
            }
        )

    def change(self, record: dict[str, Any]) -> None:
        self.changes.appendleft(record)

    def sweep(self, found: Sweep, kind: str = "discovery") -> None:
        record = {
            "at": found.started_at,
            "duration_seconds": round(found.duration_seconds, 3),
            "targets": found.targets,
            "answered": sum(1 for r in found.results if r.connected),
            "known": found.known,
            "healthy": len(found.healthy),
            "failure": found.failure,
        }
        if kind == "hot":
            self.last_hot_sweep = record
        else:
            self.last_sweep = record
