"""What must change in HAProxy to serve a set of endpoints. Pure: no I/O, no clock.

Given what each backend should serve (one backend per service), what HAProxy's runtime
API lists in each (or None when it did not answer), the live config file and the freshly
rendered one, `plan` says what to do, membership changes as (backend, server) pairs:

- `none`: the file is the rendered one and HAProxy serves exactly the wanted servers,
  ready; nothing is touched;
- `runtime`: only membership differs and the runtime API may be used: add the new
  servers (ready at once), put back servers poller itself left in maintenance or drain
  (a stop mid-apply), drain and delete the leaving ones; then the file follows when it
  differs;
- `file`: HAProxy already agrees, only the file is behind (a poller stopped mid-apply);
- `reload`: anything else (the template or settings changed, a reload is pending, the
  runtime API is off, HAProxy lists a server under another address): install the file
  and reload;
- `offline`: HAProxy does not answer: install the file (a restarted HAProxy loads the
  pool) and remember whether a reload will be needed once it is back.

A server an operator put aside by hand (`set server ... state maint` or `drain`, the
stats page's admin actions) is theirs until they hand it back (`state ready`): `aside`
tells those from poller's own drains, and the plan neither enables, drains, deletes nor
counts them, wanted or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from poller.endpoints import Endpoint, ordered
from poller.haproxy.servers import ServerState

_LINE = re.compile(r"^[ \t]*(backend|server)[ \t]+(\S+)(?:[ \t]+(\S+))?", re.MULTILINE)

Wanted = Mapping[str, Collection[Endpoint]]  # backend -> the servers it should have
Live = Mapping[str, Sequence[ServerState]]  # backend -> the servers HAProxy has
Key = tuple[str, str]  # (backend, server name)


@dataclass(frozen=True)
class SetAside:
    """A server an operator put in maintenance or drain: poller leaves it as it is."""

    backend: str
    endpoint: Endpoint
    state: str  # "maint" or "drain"


def set_aside_by_hand(live: Live, ours: Collection[Key]) -> dict[Key, SetAside]:
    """The servers HAProxy lists in maintenance or drain that poller did not put there.
    `ours`: the servers a runtime change of poller's touches (a removal drains them; a
    stop mid-change can leave one drained, or added and not yet ready)."""
    found: dict[Key, SetAside] = {}
    for backend, servers in live.items():
        for server in servers:
            state = server.set_aside
            if state is not None and (backend, server.name) not in ours:
                found[(backend, server.name)] = SetAside(backend, server.endpoint, state)
    return found


class Method(StrEnum):
    """How HAProxy is brought in step (the module's docstring says when each is chosen);
    metrics and logs name an apply by it."""

    NONE = "none"
    RUNTIME = "runtime"
    FILE = "file"
    RELOAD = "reload"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Plan:
    method: Method
    add: tuple[tuple[str, Endpoint], ...] = ()  # (backend, server) to add
    enable: tuple[tuple[str, str], ...] = ()  # (backend, name) to put back in service
    remove: tuple[tuple[str, str], ...] = ()  # (backend, name) to drain and delete
    install: bool = False  # install the rendered file
    pending_reload: bool = False  # offline: a reload is owed once HAProxy answers
    reason: str = ""


def servers_in_file(text: str) -> dict[str, list[Endpoint]]:
    """The servers of a config poller rendered, by backend (names are ours: `n_...`)."""
    found: dict[str, list[Endpoint]] = {}
    backend: str | None = None
    for match in _LINE.finditer(text):
        kind, name, address = match.groups()
        if kind == "backend":
            backend = name
            found.setdefault(backend, [])
            continue
        if backend is None or not name.startswith("n_") or address is None:
            continue
        try:
            found[backend].append(Endpoint.parse(address))
        except ValueError:
            continue  # not one of ours after all
    return {name: ordered(servers) for name, servers in found.items()}


_SERVER_LINE = re.compile(
    r"^[ \t]*(backend|frontend|listen|defaults|global|server)\b[ \t]*(\S*)(?:[ \t]+\S+)?(.*)$",
    re.MULTILINE,
)


def server_options_in(text: str) -> dict[tuple[str, str], str]:
    """The options of every server line of a rendered config, by (backend, name): what a
    runtime `add server` must say, so a server added at runtime is the one the file
    lists (the file is the single truth, a custom template's options included)."""
    found: dict[tuple[str, str], str] = {}
    backend: str | None = None
    for match in _SERVER_LINE.finditer(text):
        kind, name, rest = match.groups()
        if kind == "server":
            if backend is not None:
                found[(backend, name)] = rest.partition("#")[0].strip()
        else:
            backend = name if kind == "backend" else None  # a new section begins
    return found


def plan(
    wanted: Wanted,
    live: Live | None,
    live_text: str | None,
    rendered: str,
    same_skeleton: bool,
    pending_reload: bool,
    runtime_api: bool,
    aside: Collection[Key] = (),
) -> Plan:
    """What to do; `same_skeleton`: the live file renders from this template and these
    settings (its servers aside), so HAProxy differs from `rendered` in servers only.
    `aside`: servers an operator put aside, left alone."""
    file_behind = rendered != live_text
    if live is None:
        return Plan(
            Method.OFFLINE,
            install=file_behind,
            pending_reload=pending_reload or (file_behind and not same_skeleton),
            reason="HAProxy's runtime API does not answer",
        )
    add: list[tuple[str, Endpoint]] = []
    enable: list[tuple[str, str]] = []
    remove: list[tuple[str, str]] = []
    moved: list[str] = []
    for backend, servers in wanted.items():
        have = [s for s in live.get(backend, ()) if (backend, s.name) not in aside]
        by_name = {s.name: s for s in have}
        wanted_by_name = {e.name: e for e in ordered(servers) if (backend, e.name) not in aside}
        moved += [n for n, e in wanted_by_name.items() if n in by_name and by_name[n].endpoint != e]
        add += [(backend, e) for n, e in wanted_by_name.items() if n not in by_name]
        enable += [(backend, n) for n in wanted_by_name if n in by_name and not by_name[n].ready]
        leaving = sorted((n for n in by_name if n not in wanted_by_name), key=_name_order(have))
        remove += [(backend, n) for n in leaving]
    in_step = not (add or enable or remove or moved)
    if in_step and not file_behind and not pending_reload:
        return Plan(Method.NONE)
    if pending_reload:
        return Plan(Method.RELOAD, install=True, reason="a reload is pending")
    if not runtime_api:
        return Plan(Method.RELOAD, install=True, reason="haproxy.runtime_api is false")
    if not same_skeleton:
        return Plan(Method.RELOAD, install=True, reason="the template or settings changed")
    if moved:
        return Plan(
            Method.RELOAD, install=True, reason=f"HAProxy lists {moved[0]} at another address"
        )
    if in_step:
        return Plan(Method.FILE, install=True, reason="only the file was behind")
    return Plan(Method.RUNTIME, tuple(add), tuple(enable), tuple(remove), install=file_behind)


def reload_instead(reason: str) -> Plan:
    """The fallback when a runtime change failed: the whole file, and a reload."""
    return Plan(Method.RELOAD, install=True, reason=reason)


def _name_order(live: Sequence[ServerState]) -> Callable[[str], Endpoint]:
    endpoints = {s.name: s.endpoint for s in live}
    return lambda name: endpoints[name]
