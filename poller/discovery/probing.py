"""Probing: the Prober, the one HTTP client and the one concurrency budget every probe
shares, member checks and discovery alike (`discovery.concurrency` probes in flight at
most); the edge check that refuses any address outside the target plan before a socket
opens; the sweep of many targets, paced for the neighbour table. Endpoints the pool
already checks are skipped: a member gets one connection per check interval from
poller, not more. One probe's I/O and classification are `asking`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import AsyncIterator, Collection, Iterable

import httpx

from poller.config import ProbeSettings, Service
from poller.discovery.asking import first_probe, make_client, probe
from poller.discovery.pacing import NeighbourPacer, needs_pacing
from poller.discovery.targets import Scope
from poller.endpoints import Endpoint
from poller.results import OUT_OF_SCOPE_DETAIL, Outcome, ProbeResult, Progress, Sweep

log = logging.getLogger(__name__)


class Prober:
    """The one HTTP client and the one concurrency budget all probes share."""

    def __init__(
        self,
        settings: ProbeSettings,
        concurrency: int,
        scope: Scope,
        transport: httpx.AsyncBaseTransport | None = None,
        services: tuple[Service, ...] = (),
    ) -> None:
        """`settings`: the top-level probe (scheme, TLS, deadline, body bound, shared by
        all); `scope`: the addresses it may connect to (the target plan's), checked before
        every socket; `services`: whose probe asks which port (none: `settings` asks every
        port)."""
        self.settings = settings
        self.scope = scope
        self.refusal_logged = False
        self._users = 0  # sweeps and check batches under way (`lease`)
        self._retired = False
        self.services = services
        self.concurrency = _raise_fd_limit(concurrency)
        self.client = make_client(settings, self.concurrency, transport)
        self._budget = asyncio.Semaphore(self.concurrency)
        self._by_name = {s.name: s.probe for s in services}

    def asks(self, port: int) -> list[tuple[str, ProbeSettings]]:
        """The probes an open port gets: one per service on that port."""
        if not self.services:
            return [("", self.settings)]
        return [(s.name, s.probe) for s in self.services if port in s.ports]

    async def aclose(self) -> None:
        await self.client.aclose()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Prober]:
        """Use this prober for a sweep or a batch of checks: a retired prober closes only
        when its last user is done, so new settings never cut a sweep under way."""
        if self._retired and self._users == 0:
            raise RuntimeError("this prober was retired and closed")
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._retired and self._users == 0:
                await self.aclose()

    async def retire(self) -> None:
        """No new user will come (new settings, a new prober): close after the last one."""
        self._retired = True
        if self._users == 0:
            await self.aclose()

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def check(self, endpoint: Endpoint, service: str = "") -> ProbeResult:
        """A member check: one HTTP request with `service`'s probe (default: the
        top-level one), within `probe.timeout_seconds`."""
        if not self.allows(endpoint):
            # A member from before a change of subnets (a SIGHUP, a restored state file):
            # no longer poller's to probe, so it fails its checks and leaves the pool.
            return ProbeResult(
                endpoint,
                Outcome.OUT_OF_SCOPE,
                False,
                0.0,
                detail=OUT_OF_SCOPE_DETAIL,
                service=service,
            )
        settings = self._by_name.get(service, self.settings)
        async with self._budget:
            return await probe(self.client, settings, endpoint, service=service)

    def allows(self, endpoint: Endpoint) -> bool:
        """The edge check: whether `endpoint`'s address is in the scope (the plan)."""
        version, value, _ = endpoint.order
        return self.scope.holds(version, value)

    async def checks(self, endpoints: Iterable[Endpoint], service: str = "") -> Sweep:
        """Member checks of several endpoints at once, accounted as one sweep."""
        found = Sweep(started_at=time.time())
        started = time.perf_counter()
        results = await asyncio.gather(*(self.check(e, service) for e in endpoints))
        for result in results:
            found.targets += 1
            found.outcomes[result.outcome] += 1
            found.results.append(result)
        found.results.sort(key=lambda r: r.endpoint)
        found.duration_seconds = time.perf_counter() - started
        return found

    async def sweep(
        self,
        targets: Iterable[Endpoint] | asyncio.Queue[Endpoint | None],
        pacer: NeighbourPacer | None = None,
        keep_all: bool = False,
        known: Collection[Endpoint] = frozenset(),
        progress: Progress | None = None,
    ) -> Sweep:
        """Discovery probes of every target, pacing new non-loopback addresses through
        `pacer` and skipping `known` endpoints (the pool's members). `targets` may be a
        queue that another task fills while the sweep runs (the ARP pre-sweep); None in
        it ends the sweep. `progress` hears of every target done. Never raises for what
        a node does."""
        outcome = Sweep(started_at=time.time())
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # Probes of this sweep in flight or waiting for their paced start: at most
        # `concurrency`. The shared budget is only taken for the probe itself, so member
        # checks never wait behind a paced sweep's sleepers.
        slots = asyncio.Semaphore(self.concurrency)
        last_address: str | None = None
        last_start = 0.0

        async def one(target: Endpoint, start: float) -> None:
            try:
                delay = start - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with self._budget:
                    probed = await first_probe(self.client, self.asks(target.port), target)
            finally:
                slots.release()
            if progress is not None:
                progress.count(max(probed, key=lambda r: r.healthy))
            # A connect that failed is one outcome, however many services would have asked.
            for each in probed if probed[0].connected else probed[:1]:
                outcome.outcomes[each.outcome] += 1
            for each in probed:
                if keep_all or each.connected or each.outcome is Outcome.LOCAL_ERROR:
                    outcome.results.append(each)

        async with asyncio.TaskGroup() as group:
            async for target in _each(targets):
                outcome.targets += 1
                if target in known:
                    outcome.known += 1
                    if progress is not None:
                        progress.done += 1
                    continue
                if not self.allows(target):
                    self._refuse(target, outcome)
                    if progress is not None:
                        progress.done += 1
                    continue
                await slots.acquire()  # before the reservation: a start is never stale
                start = loop.time()
                # Ports of one address follow each other: one neighbour entry serves them
                # all, so the address is reserved once and its other ports share its start.
                if pacer is not None and needs_pacing(target.address):
                    if target.address != last_address:
                        last_address = target.address
                        last_start = pacer.reserve(start)
                    start = last_start
                group.create_task(one(target, start))
        outcome.results.sort(key=lambda r: (r.endpoint, r.service))
        outcome.duration_seconds = time.perf_counter() - started
        return outcome

    def _refuse(self, target: Endpoint, outcome: Sweep) -> None:
        """A discovery target outside the plan: a bug upstream. Never connected; counted
        (`poller_probes_total{result="out_of_scope"}`), kept in the results and said once."""
        outcome.outcomes[Outcome.OUT_OF_SCOPE] += 1
        outcome.results.append(
            ProbeResult(target, Outcome.OUT_OF_SCOPE, False, 0.0, detail=OUT_OF_SCOPE_DETAIL)
        )
        if not self.refusal_logged:
            self.refusal_logged = True
            log.error(
                "refused to probe a target outside the target plan (a bug: please report it)",
                extra={"fields": {"target": str(target)}},
            )


async def _each(
    targets: Iterable[Endpoint] | asyncio.Queue[Endpoint | None],
) -> AsyncIterator[Endpoint]:
    """The targets of a plan, or of a queue that another task fills (None ends it)."""
    if not isinstance(targets, asyncio.Queue):
        for target in targets:
            yield target
        return
    while (queued := await targets.get()) is not None:
        yield queued


def _raise_fd_limit(concurrency: int) -> int:
    """Each probe holds at most one socket; make sure `concurrency` of them fit."""
    needed = concurrency + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new_soft = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft == resource.RLIM_INFINITY:
        return concurrency
    usable = max(1, soft - 64)
    if usable < concurrency:
        log.warning(
            "concurrency lowered to fit the open-files limit",
            extra={"fields": {"concurrency": concurrency, "usable": usable, "nofile": soft}},
        )
    return min(concurrency, usable)
