"""HAProxy's runtime API (the admin stats socket): read servers, add, drain, delete.

Typed wrappers over the text protocol. Answers HAProxy gives for refusals are turned into
HAProxyError with HAProxy's own words; nothing here decides *what* to change.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from poller.errors import HAProxyError
from poller.haproxy.sockets import command

# srv_admin_state bits (HAProxy's SRV_ADMF_*): any maintenance flag, and drain flags.
ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20  # FMAINT | IMAINT | CMAINT | RMAINT
ADMIN_DRAIN = 0x08 | 0x10  # FDRAIN | IDRAIN
OP_STOPPED = 0


@dataclass(frozen=True)
class ServerState:
    name: str
    address: str
    port: int
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int

    @property
    def ready(self) -> bool:
        """Takes new traffic as far as poller is concerned (health is HAProxy's call)."""
        return not self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN)


class Runtime:
    def __init__(self, socket: Path, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout

    async def run(self, line: str) -> str:
        return await command(self.socket, line, self.timeout)

    async def servers(self, backend: str) -> list[ServerState]:
        answer = await self.run(f"show servers state {backend}")
        if "Can't find backend" in answer or "No such backend" in answer:
            raise HAProxyError(f"HAProxy has no backend {backend!r}: {answer.strip()}")
        found = []
        for line in answer.splitlines():
            fields = line.split()
            if len(fields) < 19 or not fields[0].isdigit() or fields[1] != backend:
                continue
            found.append(
                ServerState(
                    name=fields[3],
                    address=fields[4],
                    port=int(fields[18]),
                    op_state=int(fields[5]),
                    admin_state=int(fields[6]),
                )
            )
        return found

    async def sessions(self, backend: str) -> dict[str, int]:
        """Current sessions (scur) per server of the backend."""
        answer = await self.run(f"show stat {backend} 4 -1")
        text = answer.lstrip("# ")
        result = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == backend and row.get("svname") not in ("BACKEND", None):
                result[row["svname"]] = int(row.get("scur") or 0)
        return result

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

    async def del_server(self, backend: str, name: str) -> str:
        """Delete; returns HAProxy's answer so callers can retry while it is still in use."""
        return (await self.run(f"del server {backend}/{name}")).strip()

    async def _expect(self, line: str, success: str) -> None:
        answer = (await self.run(line)).strip()
        if answer != success and not (success and answer.startswith(success)):
            raise HAProxyError(f"HAProxy refused {line!r}: {answer}")
