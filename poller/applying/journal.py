"""The reload owed to HAProxy, remembered across restarts: a marker file beside the state
file exists while one is owed, so a poller killed between installing a file that needs
a reload and that reload finishes the job after a restart.
"""

from __future__ import annotations

from pathlib import Path

from poller import files
from poller.errors import InstallError


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
