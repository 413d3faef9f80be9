"""HAProxy's servers as data: what `show servers state` and `show stat` say, parsed into
typed rows. Pure: the text comes in, rows come out; an answer that does not parse is an
`HAProxyError` with the offending text, never an unexpected exception.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from poller.endpoints import Endpoint
from poller.errors import HAProxyError

# srv_admin_state bits (HAProxy's SRV_ADMF_*): any maintenance flag, and drain flags.
# CMAINT (0x04) is left out: it only marks a server the config file listed `disabled`,
# and stays set (alone, the server serving) after `set server ... state ready` clears
# the FMAINT that came with it.
ADMIN_MAINT = 0x01 | 0x02 | 0x20  # FMAINT | IMAINT | RMAINT
ADMIN_DRAIN = 0x08 | 0x10  # FDRAIN | IDRAIN
OP_STOPPED = 0
OP_RUNNING = 2
# srv_check_result (CHK_RES_*): the last health check passed, or passed conditionally.
CHECK_PASSED = frozenset({3, 4})
# srv_check_state bits (CHK_ST_*): configured and enabled, not paused by maintenance.
CHECK_CONFIGURED_ENABLED = 0x02 | 0x04
CHECK_PAUSED = 0x08
CHECK_IN_PROGRESS = 0x01


@dataclass(frozen=True)
class ServerState:
    name: str
    endpoint: Endpoint
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int
    # What HAProxy's own check said last: an observation that moves every half second,
    # not part of what a server is (two reads of an unchanged server compare equal).
    check_result: int = field(default=0, compare=False)  # 2 failed, 3 passed, 4 conditionally
    check_state: int = field(default=0, compare=False)  # CHK_ST_* flags
    since_change: int = field(default=0, compare=False)  # s since its last UP/DOWN change

    @property
    def check_passed(self) -> bool:
        """HAProxy's own health check runs on this server, its last one passed, and the
        server is running and takes traffic: HAProxy vouches for it now."""
        return (
            self.op_state == OP_RUNNING
            and self.ready
            and self.check_result in CHECK_PASSED
            and self.check_state & CHECK_CONFIGURED_ENABLED == CHECK_CONFIGURED_ENABLED
            and not self.check_state & CHECK_PAUSED
        )

    @property
    def check_running(self) -> bool:
        """A check of this server is under way and has no result yet (HAProxy forgets the
        last one while it runs): the last read's verdict stands."""
        return self.check_result == 0 and bool(self.check_state & CHECK_IN_PROGRESS)

    @property
    def ready(self) -> bool:
        """Takes new traffic as far as poller is concerned (health is HAProxy's call)."""
        return not self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN)

    @property
    def set_aside(self) -> str | None:
        """`maint` or `drain` when the server is put aside (maintenance wins), else None."""
        if self.admin_state & ADMIN_MAINT:
            return "maint"
        if self.admin_state & ADMIN_DRAIN:
            return "drain"
        return None


def parse_servers_state(answer: str, backend: str) -> list[ServerState]:
    """`show servers state BACKEND` (format 1) as typed rows; HAProxyError on a refusal
    or on a row that does not parse (never an unexpected exception)."""
    if "Can't find backend" in answer or "No such backend" in answer:
        raise HAProxyError(f"HAProxy has no backend {backend!r}: {answer.strip()[:200]}")
    found = []
    for line in answer.splitlines():
        fields = line.split()
        if len(fields) < 19 or not fields[0].isdigit() or fields[1] != backend:
            continue
        if fields[4] == "-":
            continue  # no address (a server-template slot DNS has not filled): never poller's
        try:
            found.append(
                ServerState(
                    name=fields[3],
                    endpoint=Endpoint.of(fields[4], int(fields[18])),
                    op_state=int(fields[5]),
                    admin_state=int(fields[6]),
                    check_result=int(fields[11]),
                    check_state=int(fields[13]),
                    since_change=int(fields[9]),
                )
            )
        except ValueError as exc:
            raise HAProxyError(
                f"unexpected `show servers state` row {line[:200]!r}: {exc}"
            ) from exc
    return found


def parse_sessions(answer: str, backend: str) -> dict[str, int]:
    """`show stat BACKEND 4 -1` (CSV): current sessions per server."""
    text = answer.lstrip("# ")
    result = {}
    try:
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == backend and row.get("svname") not in ("BACKEND", None):
                result[row["svname"]] = int(row.get("scur") or 0)
    except (ValueError, csv.Error) as exc:
        raise HAProxyError(f"unexpected `show stat` answer {answer[:200]!r}: {exc}") from exc
    return result
