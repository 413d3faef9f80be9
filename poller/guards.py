"""The removal guard: hold removals that look like the poller's own fault. Pure.

One member leaving is never suspicious. Several leaving at once, more than
`max_removed_fraction` of what HAProxy serves, or the pool dropping under `min_members`,
is more likely the poller's own network than the nodes: those removals are held (the
servers stay in HAProxy, whose own checks keep dead ones out of rotation) and reported,
until the situation resolves or `max_hold_seconds` passes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from poller.config import GuardSettings
from poller.endpoints import Endpoint


@dataclass(frozen=True)
class Hold:
    held: frozenset[Endpoint]
    reason: str
    since: float


def guard(
    desired: Collection[Endpoint],
    live: Collection[Endpoint],
    settings: GuardSettings,
    now: float,
    previous: Hold | None,
) -> tuple[frozenset[Endpoint], Hold | None]:
    """What to apply: `desired`, plus the removals the guard holds (and the hold, if any)."""
    wanted, current = frozenset(desired), frozenset(live)
    removed = current - wanted
    if not removed:
        return wanted, None
    reasons = []
    if len(wanted) < settings.min_members:
        reasons.append(
            f"{len(wanted)} members would remain, fewer than min_members {settings.min_members}"
        )
    share = len(removed) / len(current)
    if len(removed) > 1 and share > settings.max_removed_fraction:
        reasons.append(
            f"{len(removed)} of {len(current)} members would leave at once "
            f"({share:.0%} > max_removed_fraction {settings.max_removed_fraction:.0%})"
        )
    if not reasons:
        return wanted, None
    since = previous.since if previous is not None else now
    if settings.max_hold_seconds and now - since >= settings.max_hold_seconds:
        return wanted, None
    return wanted | removed, Hold(removed, "; ".join(reasons), since)
