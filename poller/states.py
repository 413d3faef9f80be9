"""Persisting the pool, so a restarted poller neither flaps members nor touches HAProxy.

A small JSON document written atomically after each change. Timing inside the pool runs
on the monotonic clock, which means nothing across processes, so what is stored is wall
time, converted back on load. A corrupt or foreign file raises StateError: the caller
reports it and starts without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poller import files
from poller.endpoints import Endpoint
from poller.errors import InstallError, StateError
from poller.pools import LastProbe, Member, Pool, State

VERSION = 1


@dataclass(frozen=True)
class Saved:
    pool: Pool
    pending_reload: bool  # written by poller 0.x before the reload journal had its own file


def dump(pool: Pool, mono_now: float, wall_now: float) -> bytes:
    members = [
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
    document = {
        "version": VERSION,
        "saved_at": round(wall_now, 3),
        "members": members,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def save(path: Path, pool: Pool, mono_now: float, wall_now: float) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"{path.parent}: cannot create the state directory: {exc}") from exc
    files.write_atomic(path, dump(pool, mono_now, wall_now), mode=0o600)


def load(path: Path, mono_now: float, wall_now: float) -> Saved | None:
    """The saved pool (None when there is no file); StateError when it is unusable."""
    raw = files.read_bytes(path)
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} poller state")
        members = {}
        for item in document["members"]:
            member = _member(item, mono_now, wall_now)
            members[member.endpoint] = member
        return Saved(Pool(members), bool(document.get("pending_reload", False)))
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
        LastProbe(float("-inf"), "restored", None, None),
    )
