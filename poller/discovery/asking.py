"""Asking one endpoint whether it is healthy: a bare TCP connect, one HTTP request, and
what came back, classified. Two kinds, each under one hard deadline:

- a member check (`probe`): one HTTP request on one connection. The member's address is
  known to be in use, so nothing is gained by connecting twice.
- a discovery probe (`first_probe`): a plain non-blocking TCP connect first, which tells
  refused / unreachable / silent apart cheaply (most of a subnet is empty), then, only
  where the port is open, the HTTP request of each service on that port (one connect,
  however many services ask).

Redirects are never followed, at most `max_body_bytes` are read, and whatever a node
sends is data: bounded, never interpreted beyond the checks. No budget, no scope, no
pacing here: the `probing.Prober` decides what is asked, and when.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
import time
from collections.abc import Callable

import httpx

from poller import __version__
from poller.config import ProbeSettings
from poller.endpoints import Endpoint
from poller.results import Outcome, ProbeResult

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


def _url(settings: ProbeSettings, endpoint: Endpoint) -> str:
    return f"{settings.scheme}://{endpoint}{settings.path}"


async def probe(
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


async def first_probe(
    client: httpx.AsyncClient, asks: list[tuple[str, ProbeSettings]], endpoint: Endpoint
) -> list[ProbeResult]:
    """A discovery probe: one bare connect, then, where the port is open, each service's
    request; all within one deadline (`probe.timeout_seconds`, the same for all)."""
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + asks[0][1].timeout_seconds
    try:
        async with asyncio.timeout_at(deadline):
            failed = await connect(endpoint)
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
    probes = (probe(client, s, endpoint, True, name, deadline) for name, s in asks)
    return list(await asyncio.gather(*probes))


# Outcomes that say nothing listens at an endpoint (a timeout is unknown: not listening).
_NOT_LISTENING = frozenset(
    {Outcome.REFUSED, Outcome.UNREACHABLE, Outcome.TIMEOUT, Outcome.LOCAL_ERROR}
)


async def connect(endpoint: Endpoint) -> tuple[Outcome, str] | None:
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
