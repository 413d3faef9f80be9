"""An endpoint: one address and one TCP port. The one type every layer shares for it.

Targets, probe results, pool members, rendered servers, HAProxy's live servers and the
views all speak of endpoints: parsed once, written once (IPv6 bracketed), named once for
HAProxy (`n_192_168_42_11_3000`, from address and port only), ordered once (IPv4 before
IPv6, then numerically, then by port). Standard library only, no I/O.

The address is kept as canonical text (what `ipaddress` prints). `parse` checks text from
outside; the constructor trusts its caller (target plans, HAProxy's own answers) and
stays cheap, because a /16 sweep makes 65,536 of them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

# IPv6 needs its brackets: `fd00::1:80` could be read two ways.
_TEXT = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})")


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535 (got {self.port})")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`10.0.0.5:3000` or `[fd00::5]:3000`; ValueError says what is wrong."""
        match = _TEXT.fullmatch(text.strip())
        if match is None:
            raise ValueError("expected IP:PORT (or [IPv6]:PORT)")
        address, port = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
        return cls.of(address, int(port))

    @classmethod
    def of(cls, address: str, port: int) -> Endpoint:
        """From an address in any valid spelling (made canonical); ValueError otherwise."""
        return cls(_canonical(address), port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def name(self) -> str:
        """The HAProxy server name: stable, from address and port only, a valid identifier."""
        exploded = ipaddress.ip_address(self.address).exploded
        return f"n_{exploded.replace('.', '_').replace(':', '_')}_{self.port}"

    @cached_property
    def order(self) -> tuple[int, int, int]:
        """(IP version, address as a number, port): the one sort order."""
        parsed = ipaddress.ip_address(self.address)
        return parsed.version, int(parsed), self.port

    def __lt__(self, other: Endpoint) -> bool:
        return self.order < other.order

    def __le__(self, other: Endpoint) -> bool:
        return self.order <= other.order

    def __gt__(self, other: Endpoint) -> bool:
        return self.order > other.order

    def __ge__(self, other: Endpoint) -> bool:
        return self.order >= other.order


def ordered(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Distinct endpoints in the one order."""
    return sorted(set(endpoints))


@lru_cache(maxsize=65536)
def _canonical(address: str) -> str:
    """An address as `ipaddress` prints it. Cached: HAProxy's answers name the same
    thousands of servers twice a second (an invalid one raises, and is not cached)."""
    return str(ipaddress.ip_address(address))
