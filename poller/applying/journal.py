"""What the applier must remember across restarts, in files beside the state file: the
reload owed to HAProxy (a marker file exists while one is owed, so a poller killed
between installing a file that needs a reload and that reload finishes the job after a
restart), and whose hand put each server aside (poller's own changes under way, and an
operator's maintenance or drain).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from poller import files
from poller.applying.planning import Key, SetAside
from poller.endpoints import Endpoint
from poller.errors import InstallError

log = logging.getLogger("poller")


class Journal:
    """The reload owed to HAProxy, remembered across restarts: a marker file exists while
    one is owed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def pending(self) -> bool:
        return self.path.exists()

    def set(self, pending: bool) -> None:
        if pending == self.pending:
            return
        if pending:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InstallError(f"{self.path.parent}: cannot create: {exc.strerror}") from exc
            files.write_atomic(self.path, b"a reload of HAProxy is owed\n", mode=0o600)
        else:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                raise InstallError(f"{self.path}: cannot remove: {exc.strerror}") from exc


def journal_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".reload-pending")


class Hands:
    """Whose hand put each server aside, remembered across restarts (a JSON file beside
    the state file). `ours`: the servers a runtime change of poller's is touching now, so
    a drain or a maintenance a stopped poller left behind is known for its own and
    finished. `aside`: the servers an operator put aside, as last seen, so the config
    file keeps them aside (`disabled`) while HAProxy is away or reloads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ours: set[Key] = set()
        self.aside: dict[Key, SetAside] = {}
        self._load()

    def save(self, ours: set[Key], aside: dict[Key, SetAside]) -> None:
        """Remember both (written only when they changed)."""
        if ours == self.ours and aside == self.aside:
            return
        document = {
            "version": 1,
            "ours": sorted([backend, name] for backend, name in ours),
            "aside": [
                {
                    "backend": backend,
                    "name": name,
                    "address": held.endpoint.address,
                    "port": held.endpoint.port,
                    "state": held.state,
                }
                for (backend, name), held in sorted(aside.items())
            ],
        }
        files.write_atomic(self.path, json.dumps(document, indent=1).encode(), mode=0o600)
        self.ours, self.aside = set(ours), dict(aside)

    def _load(self) -> None:
        try:
            raw = files.read_bytes(self.path)
            if raw is None:
                return
            document = json.loads(raw)
            ours = {(str(b), str(n)) for b, n in document["ours"]}
            aside = {
                (str(e["backend"]), str(e["name"])): SetAside(
                    str(e["backend"]), Endpoint(str(e["address"]), int(e["port"])), str(e["state"])
                )
                for e in document["aside"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Only a hint for the time HAProxy is away: HAProxy's own states win as soon
            # as it answers. Start without it, and say so.
            log.warning(
                "ignoring the record of servers set aside",
                extra={"fields": {"path": str(self.path), "error": str(exc)}},
            )
            return
        self.ours, self.aside = ours, aside


def hands_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".hands")
