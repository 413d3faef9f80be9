"""Pacing new addresses so a sweep never floods the kernel's neighbour (ARP/NDP) table.

The table is shared by the whole host, every container and namespace included. A connect
to an unused address on the local segment holds an INCOMPLETE entry until address
resolution gives up (mcast_solicit x retrans_time, ~3 s by default); too many at once and
the kernel drops new attempts (live nodes missed) and evicts other entries (the host's
own gateway, once). The pacer admits at most `budget` new addresses per `hold_seconds`
window. `NeighbourPacer` is pure (time comes in as an argument); `neighbour_limits` is the
only part that reads /proc.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from pathlib import Path

KERNEL_DEFAULT_GC_THRESH3 = 1024
BUDGET_SHARE = 4  # use at most a quarter of the table: other tenants need the rest
_PROC = Path("/proc/sys/net/ipv4/neigh")


@dataclass(frozen=True)
class NeighbourLimits:
    table_limit: int  # gc_thresh3: the hard size of the table
    table_limit_source: str  # where table_limit came from, for the logs
    hold_seconds: float  # how long one unresolved address occupies an entry

    @property
    def budget(self) -> int:
        return max(8, self.table_limit // BUDGET_SHARE)


class NeighbourPacer:
    """At most `budget` reservations start within any `hold_seconds` window."""

    def __init__(self, budget: int, hold_seconds: float) -> None:
        if budget < 1 or hold_seconds < 0:
            raise ValueError("budget must be >= 1 and hold_seconds >= 0")
        self.budget = budget
        self.hold_seconds = hold_seconds
        self._starts: deque[float] = deque(maxlen=budget)

    def reserve(self, now: float) -> float:
        """Reserve one new address; return when (>= now) its connect may start."""
        start = now
        if len(self._starts) == self.budget:
            start = max(now, self._starts[0] + self.hold_seconds)
        if self._starts and start < self._starts[-1]:
            start = self._starts[-1]  # callers' clocks are monotonic; keep starts sorted
        self._starts.append(start)
        return start

    def finish(self, more: int, now: float) -> float:
        """When `more` further reservations would all have started (the pacing plan)."""
        last = self._starts[-1] if self._starts else now
        return max(now, last) + more * self.hold_seconds / self.budget


def needs_pacing(address: str) -> bool:
    """Loopback needs no address resolution; every other destination may."""
    return not ipaddress.ip_address(address).is_loopback


def neighbour_limits(proc: Path = _PROC, table_limit: int | None = None) -> NeighbourLimits:
    """Read gc_thresh3 and the slowest interface's resolution time from /proc.

    A container's network namespace hides `default/gc_thresh3` (the table is the host's);
    then the kernel default is assumed, unless the operator set `table_limit`."""
    source = "discovery.neighbour_table_limit"
    if table_limit is None:
        try:
            table_limit = int((proc / "default" / "gc_thresh3").read_text())
            source = str(proc / "default" / "gc_thresh3")
        except (OSError, ValueError):
            table_limit = KERNEL_DEFAULT_GC_THRESH3
            source = "kernel default (gc_thresh3 not visible in this namespace)"
    hold = 3.0
    try:
        interfaces = [p for p in proc.iterdir() if p.name not in ("default", "lo")]
    except OSError:
        interfaces = []
    times = []
    for path in interfaces:
        try:
            tries = int((path / "mcast_solicit").read_text()) + int(
                (path / "app_solicit").read_text()
            )
            retrans_ms = int((path / "retrans_time_ms").read_text())
        except (OSError, ValueError):
            continue
        times.append(max(1, tries) * retrans_ms / 1000.0)
    if times:
        hold = max(times)
    # A margin for the kernel's timer granularity and the entry's move to FAILED.
    return NeighbourLimits(table_limit, source, hold * 1.2 + 0.05)
