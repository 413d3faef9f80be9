"""Asking `discovery.dns_names` which replicas are leaving (pool/departures.py says what an
answer means; the tracker takes each round).

A long-lived task: every `discovery.dns_interval_seconds` each name is looked up through
the system's resolver (in a container on a Docker network, Docker's embedded DNS), for
the address family of the subnets swept. A lookup not ended within the interval is no
answer that round, but the next round starts another beside it: on a real swarm a lookup
now and then gets no reply and glibc waits 5 s before it asks again, which would hide
exactly the seconds a scale-down is announced in. At most `IN_FLIGHT` lookups run per
name (each on a daemon thread, so a hung one never holds up a stop), and an answer older
than one already used is dropped. A name that stops resolving is logged when that starts
and when it ends, not per round (a service scaled to 0 has no `tasks.` answer: that is
not an error).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from poller.config import DiscoverySettings
from poller.pool.tracking import Tracker
from poller.status.metrics import Metrics

log = logging.getLogger("poller")

IN_FLIGHT = 3

Found = list[tuple[Any, ...]]
Lookup = Callable[[str, int], Awaitable[Found]]


async def system_lookup(name: str, family: int) -> Found:
    """`getaddrinfo` through the system's resolver, on a daemon thread of its own."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Found] = loop.create_future()

    def settle(result: Found | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result or [])

    def work() -> None:
        try:
            found = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
        except OSError as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, found, None)

    threading.Thread(target=work, name=f"dns {name}", daemon=True).start()
    return await done


def family_of(subnets: Sequence[str]) -> int:
    """The address family to ask for: the subnets' own, or both when they mix (`auto`)."""
    versions = {ipaddress.ip_network(s, strict=False).version for s in subnets if s != "auto"}
    if "auto" in subnets or len(versions) != 1:
        return socket.AF_UNSPEC
    return socket.AF_INET if versions == {4} else socket.AF_INET6


class DepartureWatcher:
    def __init__(
        self,
        tracker: Tracker,
        metrics: Metrics,
        settings: Callable[[], DiscoverySettings],
        lookup: Lookup = system_lookup,
    ) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.settings = settings
        self.lookup = lookup
        self.order = itertools.count()
        # Lookups under way per name, oldest first, with the order they were started in.
        self.pending: dict[str, list[tuple[int, asyncio.Future[Found]]]] = {}
        self.used: dict[str, int] = {}  # the order of the newest answer used, per name
        self.silent: set[str] = set()  # names whose last lookup gave no answer

    async def run(self) -> None:
        while True:
            discovery = self.settings()
            if discovery.dns_names:
                family = family_of(discovery.subnets)
                wait = discovery.dns_interval_seconds
                self.tracker.announced(await self.round(discovery.dns_names, wait, family))
            elif self.tracker.leaving:  # the names were dropped by a SIGHUP
                self.tracker.announced({})
            await asyncio.sleep(discovery.dns_interval_seconds)

    async def round(
        self, names: Sequence[str], wait_seconds: float, family: int = socket.AF_UNSPEC
    ) -> dict[str, frozenset[str] | None]:
        """Look every name up (None: no answer this round)."""
        for name in set(self.pending) - set(names):  # dropped by a SIGHUP
            for _, lookup in self.pending.pop(name):
                lookup.cancel()
        newest = []
        for name in names:
            under_way = self.pending.setdefault(name, [])
            if len(under_way) < IN_FLIGHT:
                under_way.append(
                    (next(self.order), asyncio.ensure_future(self.lookup(name, family)))
                )
            newest.append(under_way[-1][1])
        await asyncio.wait(newest, timeout=wait_seconds)
        return {name: self._answer(name) for name in names}

    def _answer(self, name: str) -> frozenset[str] | None:
        """What the newest finished lookup of `name` says, unless an answer as new was
        used already (None then, and when it failed)."""
        under_way = self.pending[name]
        if not under_way[-1][1].done():
            self.metrics.dns_lookups.labels(result="late").inc()
        finished = [(order, lookup) for order, lookup in under_way if lookup.done()]
        self.pending[name] = [entry for entry in under_way if not entry[1].done()]
        results: list[tuple[int, Found | Exception]] = []
        for order, lookup in finished:
            try:
                results.append((order, lookup.result()))
                self.metrics.dns_lookups.labels(result="ok").inc()
            except (OSError, UnicodeError) as exc:  # gaierror: no such name, no resolver
                results.append((order, exc))
                self.metrics.dns_lookups.labels(result="failed").inc()
        if not results or results[-1][0] <= self.used.get(name, -1):
            return None
        order, result = results[-1]
        self.used[name] = order
        if isinstance(result, Exception):
            if name not in self.silent:
                self.silent.add(name)
                log.info(
                    "DNS name does not resolve; its answers are not used meanwhile",
                    extra={"fields": {"name": name, "error": str(result)}},
                )
            return None
        if name in self.silent:
            self.silent.discard(name)
            log.info("DNS name resolves again", extra={"fields": {"name": name}})
        return frozenset(_address(info[4][0]) for info in result)


def _address(text: str) -> str:
    """The canonical form poller's endpoints use (no IPv6 zone)."""
    return str(ipaddress.ip_address(text.partition("%")[0]))
