"""HAProxy's master CLI (`haproxy -W -S <socket>`): reloads and their outcome.

`reload` answers nothing, so success is read from `show proc`: the master's reload counter
must move, and its failed counter must not.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from poller.errors import HAProxyUnavailable, ReloadFailed
from poller.haproxy.sockets import command

_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.MULTILINE)
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Processes:
    master_pid: int
    reloads: int
    failed: int
    workers: tuple[int, ...]


def parse_show_proc(answer: str) -> Processes:
    master = _MASTER_LINE.search(answer)
    if master is None:
        raise HAProxyUnavailable(f"unexpected `show proc` answer: {answer[:200]!r}")
    workers = tuple(int(m.group(1)) for m in _WORKER_LINE.finditer(answer))
    return Processes(int(master.group(1)), int(master.group(2)), int(master.group(3)), workers)


class Master:
    def __init__(self, socket: Path, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout

    async def processes(self) -> Processes:
        return parse_show_proc(await command(self.socket, "show proc", self.timeout))

    async def reload(self, deadline_seconds: float) -> Processes:
        """Ask for a reload and wait (bounded) until `show proc` shows how it went."""
        before = await self.processes()
        await command(self.socket, "reload", self.timeout)
        deadline = time.monotonic() + deadline_seconds
        while True:
            # The master re-executes itself: its socket refuses for a moment.
            try:
                after = await self.processes()
            except HAProxyUnavailable:
                after = None
            if after is not None and after.reloads > before.reloads:
                if after.failed > before.failed:
                    raise ReloadFailed("HAProxy's master reports the reload failed")
                return after
            if time.monotonic() > deadline:
                raise ReloadFailed(f"no reload seen in `show proc` within {deadline_seconds:g} s")
            await asyncio.sleep(0.05)
