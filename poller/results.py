"""What probes found: one result per endpoint, and what a sweep of many adds up to. Data
only: the classes of outcome, a probe's result, a sweep's tally and when a sweep says
nothing about the nodes. The probing that fills them is `probing`'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from poller.endpoints import Endpoint

# A sweep is failed (not "everyone is down") when at least this share of its targets
# could not even be tried because of the poller's own side: no route, no buffers, no fds.
FAILED_SWEEP_LOCAL_ERROR_SHARE = 0.5


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    RESET = "reset"
    NOT_HTTP = "not_http"
    TLS_ERROR = "tls_error"
    UNEXPECTED_STATUS = "unexpected_status"
    BODY_MISMATCH = "body_mismatch"
    LOCAL_ERROR = "local_error"
    OUT_OF_SCOPE = "out_of_scope"  # refused at the edge: outside the subnets poller was given


OUT_OF_SCOPE_DETAIL = "outside the subnets poller was given: not probed"


class SweepKind(StrEnum):
    """What a batch of probes was, as metrics, logs and the history name it."""

    FULL = "discovery"  # a discovery sweep of the whole plan
    HOT = "hot"  # a discovery sweep of the likely addresses only
    CHECK = "check"  # member checks


@dataclass(frozen=True)
class ProbeResult:
    endpoint: Endpoint
    outcome: Outcome
    connected: bool  # the TCP port accepted: something listens there
    latency_ms: float
    status: int | None = None
    identity: str | None = None
    detail: str = ""
    service: str = ""  # whose probe this was (Service.name); "" outside the daemon

    @property
    def healthy(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass
class Sweep:
    """What one sweep saw. Results are kept for every target that accepted a connection
    (and for all targets when asked); the rest are only counted."""

    targets: int = 0
    known: int = 0  # targets skipped: pool members, which their own checks cover
    results: list[ProbeResult] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0  # wall clock, for reports
    duration_seconds: float = 0.0

    @property
    def healthy(self) -> list[ProbeResult]:
        return [r for r in self.results if r.healthy]

    @property
    def failure(self) -> str | None:
        """Why this sweep says nothing about the nodes, or None when it is trustworthy."""
        local = self.outcomes.get(Outcome.LOCAL_ERROR, 0)
        probed = self.targets - self.known
        if probed and local >= probed * FAILED_SWEEP_LOCAL_ERROR_SHARE:
            sample = next((r.detail for r in self.results if r.outcome is Outcome.LOCAL_ERROR), "")
            return f"{local} of {probed} probes failed on the poller's side ({sample})"
        return None


@dataclass
class Progress:
    """How far a sweep has come, updated as it goes, for whoever shows it (a terminal's
    live line, the daemon's log). `eta` says how long the rest will take, from the
    sweep's plan: the pacing of new addresses or the ARP request rate."""

    total: int
    started: float  # monotonic
    done: int = 0
    answered: int = 0
    healthy: int = 0
    eta: Callable[[], float | None] = field(default=lambda: None, repr=False)

    def count(self, result: ProbeResult) -> None:
        self.done += 1
        self.answered += result.connected
        self.healthy += result.healthy

    def line(self, now: float) -> str:
        """`1,024/65,533 targets · 3 answered · 2 healthy · 14 s · ETA 3 min 10 s`"""
        eta = self.eta()
        parts = [
            f"{self.done:,}/{self.total:,} targets",
            f"{self.answered} answered",
            f"{self.healthy} healthy",
            duration(now - self.started),
        ]
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        return " · ".join(parts)


def duration(seconds: float) -> str:
    """`0.4 s`, `14 s`, `3 min 10 s`, `1 h 2 min`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
