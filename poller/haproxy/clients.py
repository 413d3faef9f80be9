"""The clients the applier talks to HAProxy through, as Protocols: the runtime API and the
master CLI, and the factory of the real ones. The seam tests use to put recording fakes
in their place (what HAProxy itself does is tested against HAProxy).
"""

from __future__ import annotations

from typing import Protocol

from poller.config import HAProxySettings
from poller.endpoints import Endpoint
from poller.haproxy.master import Master
from poller.haproxy.runtime import Runtime
from poller.haproxy.servers import ServerState


class RuntimeAPI(Protocol):
    """What the applier asks of HAProxy's runtime API (`haproxy.runtime.Runtime`); tests
    pass a recording fake."""

    async def servers(self, backend: str) -> list[ServerState]: ...
    async def sessions(self, backend: str) -> dict[str, int]: ...
    async def add_ready_server(
        self, backend: str, name: str, endpoint: str, options: str
    ) -> None: ...
    async def enable_health(self, backend: str, name: str) -> None: ...
    async def set_state(self, backend: str, name: str, state: str) -> None: ...
    async def shutdown_sessions(self, backend: str, name: str) -> None: ...
    async def close_idle_connections(self, backend: str, name: str, endpoint: Endpoint) -> None: ...
    async def del_server(self, backend: str, name: str) -> str: ...
    async def wait_removable(self, backend: str, name: str, seconds: float) -> bool: ...
    async def version(self) -> str: ...


class MasterCLI(Protocol):
    """What the applier asks of HAProxy's master CLI (`haproxy.master.Master`)."""

    async def reload(self, deadline_seconds: float) -> object: ...


def haproxy_clients(settings: HAProxySettings) -> tuple[RuntimeAPI, MasterCLI]:
    """The real clients, on the sockets the settings name."""
    timeout = settings.socket_timeout_seconds
    return Runtime(settings.admin_socket, timeout), Master(settings.master_socket, timeout)
