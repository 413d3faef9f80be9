"""The one exception tree of poller.

Every error a user can cause or meet is a `PollerError` subclass that carries the facts
(which field, which value, which path) in its message. Nothing here knows about exit codes:
only `poller.cli` maps these classes to them.
"""

from __future__ import annotations


class PollerError(Exception):
    """Root of every error poller raises on purpose."""


class ConfigError(PollerError):
    """The configuration is unreadable or invalid; `where` names the file, field or variable."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class TargetsError(ConfigError):
    """The configured subnets cannot be turned into a bounded list of targets."""


class SweepError(PollerError):
    """The sweep itself failed (the poller's own network), so its results mean nothing."""
