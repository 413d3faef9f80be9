"""The poller's status HTTP server: a tiny, read-only GET server on asyncio streams.

It serves what the daemon hands it (`/healthz`, `/metrics`, `/pool`); nothing here can
change the pool or HAProxy. Requests are bounded in size and time; one per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


Route = Callable[[], Response]
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# The page for people: static assets, served by the poller itself (no CDN, no build).
# The script builds the DOM with textContent only, and the CSP forbids inline scripts,
# so nothing a node sent (an identity, above all) can run in the operator's browser.
_PAGE_HEADERS = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
_ASSETS = {
    "/": ("status.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
}


def page_routes() -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for path, (name, content_type) in _ASSETS.items():
        body = resources.files("poller.templates").joinpath(name).read_bytes()
        routes[path] = _constant(Response(200, content_type, body))
    return routes


def _constant(response: Response) -> Route:
    return lambda: response


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class StatusServer:
    def __init__(
        self,
        listen: str,
        routes: Mapping[str, Route],
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.host, self.port = split_listen(listen)
        self.routes = dict(routes)
        self.on_error = on_error  # told of every request that failed on our side
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            response, method = self._route(head)
            writer.write(
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                f"Content-Security-Policy: {_PAGE_HEADERS}\r\nX-Frame-Options: DENY\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(response.body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        except Exception:
            log.exception("status request failed")
            if self.on_error is not None:
                self.on_error()
        finally:
            writer.close()

    def _route(self, head: bytes) -> tuple[Response, str]:
        if len(head) > MAX_REQUEST_BYTES:
            return Response(400, "text/plain", b"request too large\n"), "GET"
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return Response(400, "text/plain", b"bad request\n"), "GET"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return Response(405, "text/plain", b"read-only: GET or HEAD\n"), "GET"
        route = self.routes.get(target)
        if route is None:
            return Response(404, "text/plain", b"not found\n"), method
        try:
            return route(), method
        except Exception:
            # A bug in a view: the traceback goes to the log, the client gets a 500 and
            # the server goes on serving.
            log.exception("status request failed", extra={"fields": {"path": target}})
            if self.on_error is not None:
                self.on_error()
            return Response(500, "text/plain", b"internal error (see the poller's log)\n"), method
