"""Asking targets over HTTP whether they are healthy: the sweep.

Each probe is one bounded coroutine: a plain non-blocking TCP connect first (cheap, and
it tells refused / unreachable / silent apart without HTTP machinery), then, only where
the port is open, one HTTP request through the shared `httpx.AsyncClient`. One hard
deadline covers both. Redirects are never followed, at most `max_body_bytes` are read,
and whatever a node sends is data: bounded, never interpreted beyond the checks.

This module owns the network I/O of probing and the classification of what came back. It
knows nothing about pools, HAProxy or output formats.
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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from poller import __version__
from poller.config import ProbeSettings
from poller.pacing import NeighbourPacer, needs_pacing
from poller.targets import Target

log = logging.getLogger(__name__)

MAX_IDENTITY_CHARS = 256
MAX_DETAIL_CHARS = 200
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


@dataclass(frozen=True)
class ProbeResult:
    target: Target
    outcome: Outcome
    connected: bool  # the TCP port accepted: something listens there
    latency_ms: float
    status: int | None = None
    identity: str | None = None
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass
class Sweep:
    """What one sweep saw. Results are kept for every target that accepted a connection
    (and for all targets when asked); the rest are only counted."""

    targets: int = 0
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
        if self.targets and local >= self.targets * FAILED_SWEEP_LOCAL_ERROR_SHARE:
            sample = next((r.detail for r in self.results if r.outcome is Outcome.LOCAL_ERROR), "")
            return f"{local} of {self.targets} probes failed on the poller's side ({sample})"
        return None


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
    headers = {"User-Agent": f"poller/{__version__}", "Accept-Encoding": "identity"}
    headers.update(settings.headers)
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        headers=headers,
        timeout=httpx.Timeout(settings.timeout_seconds),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        transport=transport,
    )


def _url(settings: ProbeSettings, target: Target) -> str:
    return f"{settings.scheme}://{target}{settings.path}"


async def probe(client: httpx.AsyncClient, settings: ProbeSettings, target: Target) -> ProbeResult:
    """Probe one target within `settings.timeout_seconds`, whatever the node does."""
    started = time.perf_counter()
    connected = False

    def result(
        outcome: Outcome,
        status: int | None = None,
        identity: str | None = None,
        detail: str = "",
    ) -> ProbeResult:
        latency = round((time.perf_counter() - started) * 1000.0, 3)
        return ProbeResult(target, outcome, connected, latency, status, identity, detail)

    try:
        async with asyncio.timeout(settings.timeout_seconds):
            failed = await _connect(target)
            if failed is not None:
                # A reset during the handshake still means something listens there.
                connected = failed[0] is Outcome.RESET
                return result(failed[0], detail=failed[1])
            connected = True
            return await _request(client, settings, target, result)
    except TimeoutError:
        return result(Outcome.TIMEOUT, detail="no answer within the deadline")


async def _connect(target: Target) -> tuple[Outcome, str] | None:
    """A bare TCP connect: None when the port accepted, else (outcome, detail)."""
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return Outcome.LOCAL_ERROR, f"socket: {exc.strerror or exc}"
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (target.address, target.port))
    except OSError as exc:
        outcome = _CONNECT_ERRNO.get(exc.errno or 0, Outcome.RESET)
        return outcome, (exc.strerror or type(exc).__name__)
    finally:
        sock.close()
    return None


async def _request(
    client: httpx.AsyncClient,
    settings: ProbeSettings,
    target: Target,
    result: Callable[..., ProbeResult],
) -> ProbeResult:
    try:
        async with client.stream(settings.method, _url(settings, target)) as response:
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
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return Outcome.TLS_ERROR
        if isinstance(cause, ConnectionRefusedError):
            return Outcome.REFUSED
        cause = cause.__cause__ or cause.__context__
    return Outcome.RESET


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


async def sweep(
    targets: Iterable[Target] | asyncio.Queue[Target | None],
    settings: ProbeSettings,
    concurrency: int,
    pacer: NeighbourPacer | None = None,
    keep_all: bool = False,
    client: httpx.AsyncClient | None = None,
) -> Sweep:
    """Probe every target with at most `concurrency` in flight, pacing new non-loopback
    addresses through `pacer`. `targets` may be a queue that another task fills while
    the sweep runs (the ARP pre-sweep); None in it ends the sweep. Never raises for what
    a node does."""
    concurrency = _raise_fd_limit(concurrency)
    outcome = Sweep(started_at=time.time())
    started = time.perf_counter()
    queue: asyncio.Queue[Target | None] | None = None
    iterator: Iterator[Target] = iter(())
    if isinstance(targets, asyncio.Queue):
        queue = targets
    else:
        iterator = iter(targets)
    loop = asyncio.get_running_loop()
    last_address: str | None = None
    last_start = 0.0
    own_client = client is None
    shared = client if client is not None else make_client(settings, concurrency)

    async def next_target() -> Target | None:
        if queue is None:
            return next(iterator, None)
        target = await queue.get()
        if target is None:
            queue.put_nowait(None)  # the end, for every other worker too
        return target

    async def worker() -> None:
        nonlocal last_address, last_start
        while (target := await next_target()) is not None:
            outcome.targets += 1
            # Ports of one address follow each other: one neighbour entry serves them all,
            # so the address is reserved once and its other ports wait for the same start.
            if pacer is not None and needs_pacing(target.address):
                if target.address != last_address:
                    last_address = target.address
                    last_start = pacer.reserve(loop.time())
                delay = last_start - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            probed = await probe(shared, settings, target)
            outcome.outcomes[probed.outcome] += 1
            if keep_all or probed.connected or probed.outcome is Outcome.LOCAL_ERROR:
                outcome.results.append(probed)

    if isinstance(targets, Sized):
        concurrency = max(1, min(concurrency, len(targets)))  # no idle workers to start
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    finally:
        if own_client:
            await shared.aclose()
    outcome.results.sort(key=lambda r: sort_key(r.target))
    outcome.duration_seconds = time.perf_counter() - started
    return outcome


def sort_key(target: Target) -> tuple[int, int, int]:
    family = 6 if ":" in target.address else 4
    packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, target.address)
    return family, int.from_bytes(packed), target.port
