"""Scan results as text for people and JSON for machines. Pure formatting, no I/O.

Identities are untrusted text from the nodes: the table shows them escaped (no terminal
control sequences reach the operator's screen) and JSON escapes them by construction.
"""

from __future__ import annotations

from typing import Any

from poller.discovery.plans import SweepPlan
from poller.results import ProbeResult, Sweep

_TABLE_IDENTITY_CHARS = 40


def safe_text(text: str | None, limit: int = _TABLE_IDENTITY_CHARS) -> str:
    """Printable, single-line, bounded: control characters are shown as escapes."""
    if text is None:
        return "-"
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def result_dict(result: ProbeResult) -> dict[str, Any]:
    return {
        "service": result.service,
        "address": result.endpoint.address,
        "port": result.endpoint.port,
        "healthy": result.healthy,
        "result": str(result.outcome),
        "status": result.status,
        "latency_ms": result.latency_ms,
        "identity": result.identity,
        "detail": result.detail,
    }


def scan_json(discovery: SweepPlan, found: Sweep) -> dict[str, Any]:
    return {
        **discovery.summary(),
        "targets": found.targets,
        "healthy": len(found.healthy),
        "duration_seconds": round(found.duration_seconds, 3),
        "outcomes": dict(sorted(found.outcomes.items())),
        "results": [result_dict(result) for result in found.results],
    }


def summary_line(discovery: SweepPlan, found: Sweep) -> str:
    answered = sum(1 for result in found.results if result.connected)
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(found.outcomes.items()))
    method = discovery.method + (", IPv6 without ARP" if discovery.ipv6 else "")
    line = (
        f"{plural(found.targets, 'target')} ({', '.join(discovery.subnets)} x port "
        f"{','.join(map(str, discovery.plan.ports))}, {method}) in "
        f"{found.duration_seconds:.2f} s: "
        f"{answered} answered, {len(found.healthy)} healthy ({outcomes})"
    )
    for given, network in discovery.normalised:
        line += f"; {given} has host bits set, swept as {network}"
    return line


def plural(count: int, noun: str) -> str:
    """`1 target`, `2 targets`, `1,024 targets`."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def scan_table(discovery: SweepPlan, found: Sweep, several: bool = False) -> str:
    """The results, one line each; a SERVICE column when `several` services asked."""
    header: tuple[str, ...] = ("ADDRESS", "PORT", "RESULT", "STATUS", "LATENCY_MS", "IDENTITY")
    rows = [
        (
            *((r.service,) if several else ()),
            r.endpoint.address,
            str(r.endpoint.port),
            str(r.outcome),
            str(r.status) if r.status is not None else "-",
            f"{r.latency_ms:.1f}",
            safe_text(r.identity),
        )
        for r in found.results
    ]
    if several:
        header = ("SERVICE", *header)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.append(summary_line(discovery, found))
    return "\n".join(lines) + "\n"
