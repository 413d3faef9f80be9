"""Asking endpoints over HTTP whether they are healthy: the Prober.

One `Prober` owns the one `httpx.AsyncClient` and the one concurrency budget that every
probe shares, member checks and discovery alike (`discovery.concurrency` probes in
flight at most). Two kinds of probe, each under one hard deadline:

- a member check (`check`): one HTTP request on one connection. The member's address is
  known to be in use, so nothing is gained by connecting twice.
- a discovery probe (`sweep`): a plain non-blocking TCP connect first, which tells
  refused / unreachable / silent apart cheaply (most of a subnet is empty), then, only
  where the port is open, the HTTP request of each service on that port (one connect,
  however many services ask). Endpoints the pool already checks are skipped: a member
  gets one connection per check interval from poller, not more.

Redirects are never followed, at most `max_body_bytes` are read, and whatever a node
sends is data: bounded, never interpreted beyond the checks. This module owns the
network I/O of probing and the classification of what came back; it knows nothing about
pools, HAProxy or output formats.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable

import httpx

from poller import __version__
from poller.config import ProbeSettings, Service
from poller.endpoints import Endpoint
from poller.pacing import NeighbourPacer, needs_pacing
from poller.results import OUT_OF_SCOPE_DETAIL, Outcome, ProbeResult, Progress, Sweep
from poller.targets import Scope

log = logging.getLogger(__name__)

MAX_IDENTITY_CHARS = 256
MAX_DETAIL_CHARS = 200
# errno of a failed connect -> outcome; anything else is the far side's problem (RESET).
_CONNECT_ERRNO = {
    errno.ECONNREFUSED: Outcome.REFUSED,
    errno.EHOSTUNREACH: Outcome.UNREACHABLE,
    errno.EHOSTDOWN: Outcome.UNREACHABLE,
    errno.ETIMEDOUT: Outcome.TIMEOUT,
    errno.ENETUNREACH: Outcome.LOCAL_ERROR,
    errno.ENETDOWN: Outcome.LOCAL_ERROR,
    errno.EADDRNOTAVAIL: Outcome.LOCAL_ERROR,
    errno.ENOBUFS: Outcome.LOCAL_ERROR,
    errno.ENOMEM: Outcome.LOCAL_ERROR,
    errno.EMFILE: Outcome.LOCAL_ERROR,
    errno.ENFILE: Outcome.LOCAL_ERROR,
    errno.EPERM: Outcome.LOCAL_ERROR,
    errno.EACCES: Outcome.LOCAL_ERROR,
}


def make_client(
    settings: ProbeSettings,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one client all probes share. No proxies from the environment, no redirects,
    no keep-alive (a reused connection could outlive the container behind an IP)."""
    https = settings.scheme == "https"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context() if https and settings.verify_tls else False
    )
    # The probe's own headers go with each request: each service may have its own.
    headers = {"User-Agent": f"poller/{__version__}", "Accept-Encoding": "identity"}
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        headers=headers,
        timeout=httpx.Timeout(settings.timeout_seconds),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        transport=transport,
    )


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
            return await _probe(self.client, settings, endpoint, service=service)

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
                    probed = await _discover(self.client, self.asks(target.port), target)
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


def _url(settings: ProbeSettings, endpoint: Endpoint) -> str:
    return f"{settings.scheme}://{endpoint}{settings.path}"


async def _probe(
    client: httpx.AsyncClient,
    settings: ProbeSettings,
    endpoint: Endpoint,
    connected: bool = False,
    service: str = "",
    deadline: float | None = None,
) -> ProbeResult:
    """One HTTP request to `endpoint` by `deadline` (loop time; default: now +
    `settings.timeout_seconds`), whatever the node does. `connected`: a connect made
    just before succeeded (discovery)."""
    started = time.perf_counter()

    def result(
        outcome: Outcome,
        status: int | None = None,
        identity: str | None = None,
        detail: str = "",
    ) -> ProbeResult:
        latency = round((time.perf_counter() - started) * 1000.0, 3)
        # Without a pre-connect, only the answer tells whether something listened.
        listening = connected or outcome not in _NOT_LISTENING
        return ProbeResult(endpoint, outcome, listening, latency, status, identity, detail, service)

    if deadline is None:
        deadline = asyncio.get_running_loop().time() + settings.timeout_seconds
    try:
        async with asyncio.timeout_at(deadline):
            return await _request(client, settings, endpoint, result)
    except TimeoutError:
        return result(Outcome.TIMEOUT, detail="no answer within the deadline")


async def _discover(
    client: httpx.AsyncClient, asks: list[tuple[str, ProbeSettings]], endpoint: Endpoint
) -> list[ProbeResult]:
    """A discovery probe: one bare connect, then, where the port is open, each service's
    request; all within one deadline (`probe.timeout_seconds`, the same for all)."""
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + asks[0][1].timeout_seconds
    try:
        async with asyncio.timeout_at(deadline):
            failed = await _connect(endpoint)
    except TimeoutError:
        failed = (Outcome.TIMEOUT, "no answer within the deadline")
    if failed is not None:
        latency = round((time.perf_counter() - started) * 1000.0, 3)
        # A reset during the handshake still means something listens there.
        listening = failed[0] is Outcome.RESET
        return [
            ProbeResult(endpoint, failed[0], listening, latency, detail=failed[1], service=name)
            for name, _ in asks
        ]
    probes = (_probe(client, s, endpoint, True, name, deadline) for name, s in asks)
    return list(await asyncio.gather(*probes))


# Outcomes that say nothing listens at an endpoint (a timeout is unknown: not listening).
_NOT_LISTENING = frozenset(
    {Outcome.REFUSED, Outcome.UNREACHABLE, Outcome.TIMEOUT, Outcome.LOCAL_ERROR}
)


async def _connect(endpoint: Endpoint) -> tuple[Outcome, str] | None:
    """A bare TCP connect: None when the port accepted, else (outcome, detail)."""
    family = socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return Outcome.LOCAL_ERROR, f"socket: {exc.strerror or exc}"
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (endpoint.address, endpoint.port))
    except OSError as exc:
        return _CONNECT_ERRNO.get(exc.errno or 0, Outcome.RESET), (
            exc.strerror or type(exc).__name__
        )
    finally:
        sock.close()
    return None


async def _request(
    client: httpx.AsyncClient,
    settings: ProbeSettings,
    endpoint: Endpoint,
    result: Callable[..., ProbeResult],
) -> ProbeResult:
    try:
        request = client.stream(
            settings.method, _url(settings, endpoint), headers=dict(settings.headers)
        )
        async with request as response:
            body = await _read_bounded(response, settings.max_body_bytes)
    except httpx.TimeoutException:
        return result(Outcome.TIMEOUT, detail="no answer within the deadline")
    except httpx.ConnectError as exc:
        return result(_classify_connect_error(exc), detail=_detail(exc))
    except httpx.RemoteProtocolError as exc:
        return result(Outcome.NOT_HTTP, detail=_detail(exc))
    except (httpx.ReadError, httpx.WriteError) as exc:
        return result(Outcome.RESET, detail=_detail(exc))
    except httpx.HTTPError as exc:
        return result(Outcome.NOT_HTTP, detail=_detail(exc))

    status = response.status_code
    identity = _identity(settings, response, body)
    if not settings.status_ok(status):
        where = response.headers.get("location")
        detail = f"HTTP {status}" + (f" -> {where[:MAX_DETAIL_CHARS]}" if where else "")
        return result(Outcome.UNEXPECTED_STATUS, status=status, identity=identity, detail=detail)
    if settings.expect_body is not None and settings.expect_body.encode() not in body:
        return result(
            Outcome.BODY_MISMATCH,
            status=status,
            identity=identity,
            detail=f"{settings.expect_body!r} not in the first {len(body)} bytes",
        )
    return result(Outcome.OK, status=status, identity=identity)


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` raw bytes: an endless or huge body costs nothing more."""
    chunks: list[bytes] = []
    size = 0
    if limit == 0:
        return b""
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _classify_connect_error(exc: httpx.ConnectError) -> Outcome:
    """What a failed connect meant, from the OS error underneath httpx's."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return Outcome.TLS_ERROR
        if isinstance(cause, OSError) and cause.errno in _CONNECT_ERRNO:
            return _CONNECT_ERRNO[cause.errno]
        if isinstance(cause, ConnectionRefusedError):
            return Outcome.REFUSED
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    # httpcore re-raises some OS errors as text only.
    for needle, outcome in _CONNECT_TEXT:
        if needle in text:
            return outcome
    return Outcome.RESET


_CONNECT_TEXT = (
    ("connection refused", Outcome.REFUSED),
    ("no route to host", Outcome.UNREACHABLE),
    ("network is unreachable", Outcome.LOCAL_ERROR),
    ("cannot assign requested address", Outcome.LOCAL_ERROR),
)


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:MAX_DETAIL_CHARS]


def _identity(settings: ProbeSettings, response: httpx.Response, body: bytes) -> str | None:
    """The node's identity, bounded. Untrusted text: it is only ever compared and shown."""
    spec = settings.identity
    if spec is None:
        return None
    value: object = None
    if spec.header is not None:
        value = response.headers.get(spec.header)
    elif spec.json_field is not None and len(body) < settings.max_body_bytes:
        try:
            document = json.loads(body)
        except ValueError:
            return None
        if isinstance(document, dict):
            value = document.get(spec.json_field)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)[:MAX_IDENTITY_CHARS]


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
