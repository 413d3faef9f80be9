"""HAProxy's runtime API (the admin stats socket): read servers, add, drain, delete.

Typed wrappers over the text protocol. Answers HAProxy gives for refusals are turned into
HAProxyError with HAProxy's own words; nothing here decides *what* to change.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from poller.endpoints import Endpoint
from poller.errors import HAProxyError
from poller.haproxy.servers import ServerState, parse_servers_state, parse_sessions
from poller.haproxy.sockets import command


class Runtime:
    def __init__(self, socket: Path, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout
        self.can_wait: bool | None = None  # `wait srv-removable` known (3.0), None: untried

    async def run(self, line: str) -> str:
        return await command(self.socket, line, self.timeout)

    async def servers(self, backend: str) -> list[ServerState]:
        return parse_servers_state(await self.run(f"show servers state {backend}"), backend)

    async def sessions(self, backend: str) -> dict[str, int]:
        """Current sessions (scur) per server of the backend."""
        return parse_sessions(await self.run(f"show stat {backend} 4 -1"), backend)

    async def add_ready_server(self, backend: str, name: str, endpoint: str, options: str) -> None:
        """add server + enable health + state ready in one round trip (the CLI runs
        `;`-separated commands in order; a refusal shows in the joined answer)."""
        line = (
            f"add server {backend}/{name} {endpoint} {options}; "
            f"enable health {backend}/{name}; set server {backend}/{name} state ready"
        )
        answer = (await self.run(line)).strip()
        if answer != "New server registered.":
            raise HAProxyError(f"HAProxy refused {line!r}: {answer}")

    async def enable_health(self, backend: str, name: str) -> None:
        await self._expect(f"enable health {backend}/{name}", "")

    async def set_state(self, backend: str, name: str, state: str) -> None:
        await self._expect(f"set server {backend}/{name} state {state}", "")

    async def shutdown_sessions(self, backend: str, name: str) -> None:
        """End every session still on the server (its drain ran out of time)."""
        await self._expect(f"shutdown sessions server {backend}/{name}", "")

    async def close_idle_connections(self, backend: str, name: str, endpoint: Endpoint) -> None:
        """Make HAProxy close the idle keep-alive connections it keeps to a server its
        checks marked down, which block `del server` until its purge timer wears them
        off (seconds to tens of seconds). Changing a server's address or port is what
        makes HAProxy drop them at once; the server is in maintenance and about to be
        deleted, so no request ever goes to the new port. Best effort: the answer is
        not checked, the delete that follows says whether it worked."""
        port = endpoint.port + 1 if endpoint.port < 65535 else endpoint.port - 1
        await self.run(f"set server {backend}/{name} addr {endpoint.address} port {port}")

    async def del_server(self, backend: str, name: str) -> str:
        """Delete; returns HAProxy's answer so callers can retry while it is still in use."""
        return (await self.run(f"del server {backend}/{name}")).strip()

    async def wait_removable(self, backend: str, name: str, seconds: float) -> bool:
        """Wait up to `seconds` for the server to be deletable (in maintenance, no
        connection left). HAProxy's own `wait srv-removable` (3.0 has it, 2.6 does not)
        returns the moment it is; where HAProxy does not know it, this sleeps. True when
        HAProxy said the server is removable."""
        started = time.monotonic()
        if self.can_wait is not False:
            line = f"wait {max(1, round(seconds * 1000))}ms srv-removable {backend}/{name}"
            answer = (await self.run(line)).strip()
            self.can_wait = not answer.startswith("Unknown command")
            if answer == "Done.":
                return True
        # Refused or not met (e.g. the server is gone): the rest of the interval, no spin.
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
        return False

    async def version(self) -> str:
        """The running HAProxy's version, as `show info` says it (e.g. `3.0.11-1`)."""
        for line in (await self.run("show info")).splitlines():
            key, _, value = line.partition(":")
            if key == "Version":
                return value.strip()
        return ""

    async def _expect(self, line: str, success: str) -> None:
        answer = (await self.run(line)).strip()
        if answer != success and not (success and answer.startswith(success)):
            raise HAProxyError(f"HAProxy refused {line!r}: {answer}")
