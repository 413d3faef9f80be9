"""What poller needs from the HAProxy config files a user keeps (`haproxy.mode:
backends`), read from their text: the admin socket it talks to, at `level admin`; none of
its backends defined there; each of them reached by some `use_backend` or
`default_backend`. Pure: texts in, findings out (`haproxy -c` judges the rest).

An error means poller cannot work with the files (it refuses to start and says which
line to add or change); a warning means it can, but something will not work as the user
likely expects (a seamless reload, traffic reaching a backend).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SECTION = re.compile(
    r"^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|program|"
    r"http-errors|ring|mailers|cache|log-forward|crt-store|traces)\b\s*(\S*)"
)


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(texts: Mapping[str, str], admin_socket: Path, backends: Sequence[str]) -> Findings:
    """`texts`: each file's name and text, in load order; `backends`: poller's."""
    found = Findings()
    sockets: list[tuple[str, int, list[str]]] = []  # (file, line, words) of `stats socket`
    defined: dict[str, tuple[str, int]] = {}
    referenced: set[str] = set()
    dynamic = False  # a `use_backend` with a sample expression: any name may be reached
    for name, text in texts.items():
        section = ""
        for number, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            header = _SECTION.match(" ".join(words))
            if header:
                section = header.group(1)
                if section in ("backend", "listen") and header.group(2):
                    defined.setdefault(header.group(2), (name, number))
                continue
            if section == "global" and words[:2] == ["stats", "socket"] and len(words) > 2:
                sockets.append((name, number, words))
            if words[0] in ("use_backend", "default_backend") and len(words) > 1:
                referenced.add(words[1])
                dynamic = dynamic or "%[" in words[1]
    _check_socket(found, sockets, admin_socket)
    for backend in backends:
        if backend in defined:
            where, number = defined[backend]
            found.errors.append(
                f"{where}:{number} defines `{backend}`, a backend poller writes: rename "
                "one of them (services[].backend, or haproxy.backend without services)"
            )
        elif backend not in referenced and not dynamic:
            found.warnings.append(
                f"no `use_backend {backend}` or `default_backend {backend}` in "
                f"{', '.join(texts)}: no traffic reaches poller's backend `{backend}`"
            )
    return found


def _check_socket(
    found: Findings, sockets: list[tuple[str, int, list[str]]], admin_socket: Path
) -> None:
    wanted = f"    stats socket {admin_socket} mode 660 level admin expose-fd listeners"
    mine = [s for s in sockets if Path(s[2][2].removeprefix("unix@")) == admin_socket]
    if not mine:
        found.errors.append(
            f"no `stats socket {admin_socket}` in the global section: poller adds and "
            f"removes servers through it (haproxy.admin_socket). Add:\n{wanted}"
        )
        return
    name, number, words = mine[0]
    if not any(a == "level" and b == "admin" for a, b in itertools.pairwise(words)):
        found.errors.append(
            f"{name}:{number}: the admin socket is not at `level admin`: poller's `add "
            f"server` and `del server` would be refused. Make it:\n{wanted}"
        )
    if not any(a == "expose-fd" and b == "listeners" for a, b in itertools.pairwise(words)):
        found.warnings.append(
            f"{name}:{number}: the admin socket lacks `expose-fd listeners`: a reload "
            "cannot hand the listening sockets over, so connections may be refused during one"
        )
