"""What the status server shows, built from a snapshot of the daemon: `/pool`, `/healthz`,
`/events` and `/metrics`. Pure but for formatting: the daemon hands over a `Snapshot`
(taken at one moment, so every part of a page agrees), these functions make documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from poller.pool.pools import Member
from poller.status.history import ChangeRecord, EventRecord, Key
from poller.status.server import Response, Route, page_routes

# /healthz turns 503 after this many periods without a successful sweep, or without
# HAProxy brought (or found) in step.
HEALTHY_PERIODS = 3


@dataclass(frozen=True)
class Snapshot:
    mono: float  # now, monotonic
    wall: float  # now, wall clock
    members: Sequence[tuple[str, Member]]  # (service, member)
    latencies: Mapping[Key, Sequence[float | None]]
    discovery: Mapping[str, Any]  # subnets, ports, targets, method, interval_seconds, ...
    held: frozenset[Key] = frozenset()
    leaving: frozenset[str] = frozenset()  # addresses discovery.dns_names stopped listing
    hold_reason: str | None = None
    live: frozenset[Key] = frozenset()  # what HAProxy serves, by service
    set_aside: Mapping[Key, str] = field(default_factory=dict)  # by hand: maint or drain
    services: Sequence[Mapping[str, Any]] = ()  # name, backend, ports
    last_change: ChangeRecord | None = None
    changes: Sequence[ChangeRecord] = ()
    events: Sequence[EventRecord] = ()
    stats_port: int | None = None
    last_success_mono: float | None = None
    last_success_wall: float | None = None
    sweep_interval_seconds: float = 1.0
    in_step_mono: float | None = None
    started_mono: float = 0.0
    reconcile_interval_seconds: float = 10.0
    extra: Mapping[str, Any] = field(default_factory=dict)


def pool(snapshot: Snapshot) -> dict[str, Any]:
    members = [
        {
            "service": service,
            "address": m.endpoint.address,
            "port": m.endpoint.port,
            "state": str(m.state),
            "serving": m.serving,
            "held": (service, m.endpoint) in snapshot.held,
            # Its replica is being stopped (discovery.dns_names): out of HAProxy, still probed.
            "leaving": m.endpoint.address in snapshot.leaving,
            # An operator put it in maintenance or drain by hand: poller leaves it alone.
            "set_aside": snapshot.set_aside.get((service, m.endpoint)),
            # Left the pool, still in HAProxy: being drained (or held by the guard).
            "draining": not m.serving and (service, m.endpoint) in snapshot.live,
            "latency_history": list(snapshot.latencies.get((service, m.endpoint), ())),
            "identity": m.identity,
            "since": round(snapshot.wall - (snapshot.mono - m.since), 3),
            "last_result": m.last.outcome,
            "last_status": m.last.status,
            "latency_ms": m.last.latency_ms,
        }
        for service, m in sorted(snapshot.members, key=lambda pair: pair[1].endpoint)
    ]
    return {
        "members": members,
        "services": list(snapshot.services),
        "discovery": dict(snapshot.discovery),
        "guard": {"holding": bool(snapshot.held), "reason": snapshot.hold_reason},
        "haproxy": {
            "live": [str(e) for _, e in sorted(snapshot.live, key=lambda k: (k[1], k[0]))],
            "live_by_service": {
                s["name"]: [str(e) for n, e in sorted(snapshot.live) if n == s["name"]]
                for s in snapshot.services
            },
            "last_change": snapshot.last_change and snapshot.last_change.as_json(),
            "changes": [change.as_json() for change in snapshot.changes],
            "stats_port": snapshot.stats_port,
            "set_aside": [
                {
                    "service": service,
                    "server": endpoint.name,
                    "endpoint": str(endpoint),
                    "state": state,
                }
                for (service, endpoint), state in sorted(snapshot.set_aside.items())
            ],
        },
        "last_successful_sweep": snapshot.last_success_wall,
        **snapshot.extra,
    }


def health(snapshot: Snapshot) -> tuple[bool, dict[str, Any]]:
    """Healthy while sweeps succeed and HAProxy is kept in step; the body says which
    failed."""
    sweep_limit = HEALTHY_PERIODS * snapshot.sweep_interval_seconds
    sweep_age = _age(snapshot.mono, snapshot.last_success_mono)
    haproxy_limit = HEALTHY_PERIODS * snapshot.reconcile_interval_seconds
    # Before the first reconcile, the clock runs from the start.
    haproxy_age = _age(snapshot.mono, snapshot.in_step_mono or snapshot.started_mono)
    problems = []
    if sweep_age is None or sweep_age > sweep_limit:
        problems.append(
            "no successful sweep yet"
            if sweep_age is None
            else f"no successful sweep for {sweep_age:.1f} s (limit {sweep_limit:g} s)"
        )
    if haproxy_age is not None and haproxy_age > haproxy_limit:
        problems.append(
            f"HAProxy not brought in step for {haproxy_age:.1f} s (limit {haproxy_limit:g} s)"
        )
    body = {
        "healthy": not problems,
        "problems": problems,
        "last_successful_sweep_age_seconds": sweep_age,
        "limit_seconds": sweep_limit,
        "haproxy_in_step_age_seconds": haproxy_age,
        "haproxy_limit_seconds": haproxy_limit,
    }
    return not problems, body


def routes(snapshot: Callable[[], Snapshot], registry: CollectorRegistry) -> dict[str, Route]:
    """The status server's routes, each reading a fresh snapshot."""

    def healthz() -> Response:
        healthy, body = health(snapshot())
        return Response(200 if healthy else 503, "application/json", _json(body))

    def metrics() -> Response:
        return Response(200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry))

    table: dict[str, Route] = {
        "/healthz": healthz,
        "/metrics": metrics,
        "/pool": lambda: Response(200, "application/json", _json(pool(snapshot()))),
        "/events": lambda: Response(
            200,
            "application/json",
            _json({"events": [event.as_json() for event in snapshot().events]}),
        ),
    }
    table.update(page_routes())
    return table


def port_of(bind: str) -> int | None:
    """The port of an HAProxy `bind` address (`:1936`, `127.0.0.1:1936`)."""
    tail = bind.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


class HealthCollector(Collector):
    """`poller_healthy`: what /healthz says (1 or 0), taken at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        healthy, _ = health(self.snapshot())
        yield GaugeMetricFamily(
            "poller_healthy",
            "1 while /healthz answers 200 (sweeps and HAProxy in step).",
            int(healthy),
        )


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 3)


def _json(value: Any) -> bytes:
    return (json.dumps(value, default=str) + "\n").encode()
