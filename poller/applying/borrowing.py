"""Borrowing HAProxy's own checks: the members HAProxy's health check vouches for now.

HAProxy checks every server it has (twice a second at the shipped settings), in C, at
almost no cost; poller probing the same members again every interval was most of what
poller spent at a few hundred members. So the checker asks here, before each batch,
whose last HAProxy check passed (the server running and taking traffic, its check
enabled and not paused), and takes that as a passed check of those members instead of
probing them (docs/SCALING.md, "Many members on one poller"). One `show servers state`
per backend is read at most every `max_age` seconds, shared by every batch in between. A read that
fails (HAProxy restarting, no runtime API) vouches for nobody: poller probes every member
itself, as without this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from poller.endpoints import Endpoint
from poller.errors import PollerError
from poller.haproxy.clients import RuntimeAPI
from poller.haproxy.servers import OP_RUNNING


class HAProxyChecks:
    """What HAProxy's checks say, per backend, read at most every `max_age` seconds."""

    def __init__(
        self,
        runtime: Callable[[], RuntimeAPI],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.max_age = max_age
        self.clock = clock
        self._read: dict[str, tuple[float, Mapping[Endpoint, float]]] = {}
        self._lock = asyncio.Lock()  # batches at once share one read

    async def passed(self, backend: str) -> Mapping[Endpoint, float]:
        """The servers of `backend` whose last HAProxy check passed, each with the latest
        time (this clock) its state may have changed: a member that went down and up
        again since poller's own probe (a restart) is not vouched for (none when HAProxy
        cannot be asked)."""
        async with self._lock:
            asked = self.clock()
            cached = self._read.get(backend)
            if cached is not None and asked - cached[0] < self.max_age:
                return cached[1]
            try:
                servers = await self.runtime().servers(backend)
            except PollerError:
                vouched: Mapping[Endpoint, float] = {}
            else:
                before = cached[1] if cached is not None else {}
                # HAProxy says whole seconds: the change may be up to one second later.
                vouched = {s.endpoint: asked - s.since_change for s in servers if s.check_passed}
                vouched.update(
                    (s.endpoint, before[s.endpoint])
                    for s in servers
                    if s.check_running and s.op_state == OP_RUNNING and s.endpoint in before
                )
            # Dated when asked, not when answered: an answer is never taken as fresher.
            self._read[backend] = (asked, vouched)
            return vouched
