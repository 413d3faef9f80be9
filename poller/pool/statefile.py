"""Persisting the pool, so a restarted poller neither flaps members nor touches HAProxy.

A small JSON document written atomically after each change: each service's members.
Timing inside the pool runs on the monotonic clock, which means nothing across
processes, so what is stored is wall time, converted back on load. A corrupt or foreign
file raises StateError: the caller reports it and starts without it. A version 1 file
(one pool, before services) is read as the first service's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poller import files
from poller.endpoints import Endpoint
from poller.errors import InstallError, StateError
from poller.pool.pools import LastProbe, Member, Origin, Pool, State

VERSION = 2


@dataclass(frozen=True)
class Saved:
    pools: dict[str, Pool]  # by service; services the file does not know are absent
    pending_reload: bool  # written by poller 0.x before the reload journal had its own file


def dump(pools: Mapping[str, Pool], mono_now: float, wall_now: float) -> bytes:
    document = {
        "version": VERSION,
        "saved_at": round(wall_now, 3),
        "services": {
            name: {"members": _members(pool, mono_now, wall_now)} for name, pool in pools.items()
        },
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def _members(pool: Pool, mono_now: float, wall_now: float) -> list[dict[str, Any]]:
    return [
        {
            "address": m.endpoint.address,
            "port": m.endpoint.port,
            "identity": m.identity,
            "state": str(m.state),
            "successes": m.successes,
            "failures": m.failures,
            "since": round(wall_now - (mono_now - m.since), 3),
        }
        for m in pool.all()
    ]


def save(path: Path, pools: Mapping[str, Pool], mono_now: float, wall_now: float) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"{path.parent}: cannot create the state directory: {exc}") from exc
    files.write_atomic(path, dump(pools, mono_now, wall_now), mode=0o600)


def load(path: Path, mono_now: float, wall_now: float, services: Sequence[str]) -> Saved | None:
    """The saved pools of `services` (None when there is no file); StateError when it is
    unusable."""
    raw = files.read_bytes(path)
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("version") not in (1, VERSION):
            raise ValueError(f"not a version 1 or {VERSION} poller state")
        if document["version"] == 1:
            stored = {services[0]: document} if services else {}
        else:
            stored = document["services"]
            if not isinstance(stored, dict):
                raise TypeError("services must be a mapping")
        pools = {}
        for name in services:
            if name in stored:
                members = {}
                for item in stored[name]["members"]:
                    member = _member(item, mono_now, wall_now)
                    members[member.endpoint] = member
                pools[name] = Pool(members)
        return Saved(pools, bool(document.get("pending_reload", False)))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path}: unusable state file ({exc}); starting without it") from exc


def _member(item: dict[str, Any], mono_now: float, wall_now: float) -> Member:
    state = State(item["state"])
    identity = item["identity"]
    if identity is not None and not isinstance(identity, str):
        raise TypeError("identity must be a string or null")
    endpoint = Endpoint.of(str(item["address"]), int(item["port"]))
    # A member is probed again at once after a restart: its last probe is "long ago".
    since = mono_now - max(0.0, wall_now - float(item["since"]))
    return Member(
        endpoint,
        identity,
        state,
        int(item["successes"]),
        int(item["failures"]),
        since,
        LastProbe(float("-inf"), Origin.RESTORED, None, None),
    )
