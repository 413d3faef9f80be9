"""HAProxy's servers as data: what `show servers state` and `show stat` say, parsed into
typed rows. Pure: the text comes in, rows come out; an answer that does not parse is an
`HAProxyError` with the offending text, never an unexpected exception.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from poller.endpoints import Endpoint
from poller.errors import HAProxyError

# srv_admin_state bits (HAProxy's SRV_ADMF_*): any maintenance flag, and drain flags.
# CMAINT (0x04) is left out: it only marks a server the config file listed `disabled`,
# and stays set (alone, the server serving) after `set server ... state ready` clears
# the FMAINT that came with it.
ADMIN_MAINT = 0x01 | 0x02 | 0x20  # FMAINT | IMAINT | RMAINT
ADMIN_DRAIN = 0x08 | 0x10  # FDRAIN | IDRAIN
OP_STOPPED = 0


@dataclass(frozen=True)
class ServerState:
    name: str
    endpoint: Endpoint
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int

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
