"""HAProxy's master CLI (`haproxy -W -S <socket>`): reloads and their outcome.

HAProxy 2.6's `reload` answers nothing, so success is read from `show proc`: the master's
reload counter must move, and its failed counter must not. From 2.7 on (3.0 included),
`reload` waits for the new workers and answers `Success=1` or `Success=0`, then the
startup messages: a failure's reason is HAProxy's own `[ALERT]` lines.
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
MAX_REASON_CHARS = 600


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
        """Ask for a reload and wait (bounded) until HAProxy says how it went: in its
        answer (2.7 and later), or else in `show proc`."""
        before = await self.processes()
        # A 2.7+ master answers once the new workers are up (or failed): that can take
        # as long as a reload, not a command.
        answer = await command(self.socket, "reload", max(self.timeout, deadline_seconds))
        outcome = reload_outcome(answer)
        if outcome is False:
            raise ReloadFailed(f"HAProxy's master reports the reload failed: {alerts(answer)}")
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


def reload_outcome(answer: str) -> bool | None:
    """What a `reload` answer says: True or False (2.7 and later), None (2.6: nothing)."""
    first = answer.lstrip().split("\n", 1)[0].strip()
    if first == "Success=1":
        return True
    if first == "Success=0":
        return False
    return None


def alerts(answer: str) -> str:
    """The `[ALERT]` lines of a failed reload's startup messages (else its first lines)."""
    lines = [line.strip() for line in answer.splitlines()]
    found = [line.split(":", 1)[-1].strip() for line in lines if line.startswith("[ALERT]")]
    return " / ".join(found or [line for line in lines[2:4] if line])[:MAX_REASON_CHARS]
