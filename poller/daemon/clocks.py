"""Watching the wall clock against the monotonic one.

APScheduler times its jobs on the wall clock: set backwards, every job would wait out the
jump (a stall); set forwards, it would work through the missed runs. Pool timing is
monotonic, so only the schedule needs mending: when the two clocks drift apart by more
than the event loop's own lateness, the jump is logged, counted and noted, and
`on_jump` makes every job due now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from poller.status.history import History, NoteKind
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

CHECK_SECONDS = 1.0
JUMP_SECONDS = 2.0  # more than the event loop's own lateness under load


async def watch(metrics: Metrics, history: History, on_jump: Callable[[], None]) -> None:
    mono, wall = time.monotonic(), time.time()
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        now_mono, now_wall = time.monotonic(), time.time()
        jump = (now_wall - wall) - (now_mono - mono)
        mono, wall = now_mono, now_wall
        if abs(jump) < JUMP_SECONDS:
            continue
        log.warning(
            "wall clock jumped; jobs rescheduled", extra={"fields": {"seconds": round(jump, 3)}}
        )
        history.note(NoteKind.CLOCK_JUMP, now_wall, f"{jump:+.1f} s", [])
        metrics.clock_jumps.inc()
        on_jump()
