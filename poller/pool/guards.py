"""The removal guard: hold removals that look like the poller's own fault. Pure.

One member leaving is never suspicious. Several leaving within a window of
`guard.window_seconds`, more than `max_removed_fraction` of what HAProxy served when the
window began, or the pool dropping under `min_members`, is more likely the poller's own
network than the nodes: those removals are held (the servers stay in HAProxy, whose own
checks keep dead ones out of rotation) and reported, until the situation resolves or
`max_hold_seconds` passes.

The share is counted over the window, not per step: removals that arrive in steps (4 of
8, then 2 of the 4 left a second later) add up against the pool the window started
with, so staggering cannot slip past the guard. Exactly `max_removed_fraction` is
allowed; more is held.

Removals the orchestrator announced (`announced`: their addresses left
`discovery.dns_names`' answer, pool/departures.py) are not the poller's fault: they go at
once and are not counted. They are taken out of the window's pool too, so the guard
judges what is left against what was meant to stay: the 2 replicas a scale 6 -> 2 kept,
failing together, are held, as they would be with no scale-down.
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


@dataclass(frozen=True)
class Window:
    """Removals counted together: since `started`, against the pool served then."""

    started: float
    base: frozenset[Endpoint]
    removed: frozenset[Endpoint] = frozenset()


@dataclass(frozen=True)
class Guarded:
    """What to apply (`desired` plus the removals held), and the guard's state to keep."""

    servers: frozenset[Endpoint]
    hold: Hold | None = None
    window: Window | None = None


def guard(
    desired: Collection[Endpoint],
    live: Collection[Endpoint],
    settings: GuardSettings,
    now: float,
    previous: Guarded | None = None,
    announced: Collection[Endpoint] = (),
) -> Guarded:
    wanted, current, expected = frozenset(desired), frozenset(live), frozenset(announced)
    removed = current - wanted - expected
    window = previous.window if previous is not None else None
    if window is not None and now - window.started >= settings.window_seconds:
        window = None  # that window is over: removals start counting afresh
    if window is not None and expected:
        window = Window(window.started, window.base - expected, window.removed)
    if not removed:
        return Guarded(wanted, None, window)
    if window is None:
        window = Window(now, current - expected)
    reasons = []
    if len(wanted) < settings.min_members:
        reasons.append(
            f"{len(wanted)} members would remain, fewer than min_members {settings.min_members}"
        )
    leaving = window.removed | removed
    share = len(leaving) / max(len(window.base), 1)
    if len(leaving) > 1 and share > settings.max_removed_fraction:
        when = f"within {settings.window_seconds:g} s" if window.removed else "at once"
        reasons.append(
            f"{len(leaving)} of {len(window.base)} members would leave {when} "
            f"({share:.0%} > max_removed_fraction {settings.max_removed_fraction:.0%})"
        )
    held = previous.hold if previous is not None else None
    if reasons:
        since = held.since if held is not None else now
        if not settings.max_hold_seconds or now - since < settings.max_hold_seconds:
            return Guarded(wanted | removed, Hold(removed, "; ".join(reasons), since), window)
    # Let them go: counted in the window, so later removals in it add up with these.
    return Guarded(wanted, None, Window(window.started, window.base, leaving))
