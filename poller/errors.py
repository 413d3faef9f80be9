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


class TemplateError(ConfigError):
    """The HAProxy template cannot be read or rendered; `where` names the template line."""


class HAProxyError(PollerError):
    """Talking to HAProxy failed, or HAProxy refused what it was asked."""


class HAProxyUnavailable(HAProxyError):
    """A socket of HAProxy's is missing, refusing or silent."""


class ConfigRejected(HAProxyError):
    """`haproxy -c` rejected a rendered config; the message is HAProxy's own."""


class CheckUnavailable(HAProxyError):
    """`haproxy -c` could not be run at all (no binary, or it hung): nothing was checked."""


class ReloadFailed(HAProxyError):
    """A master-worker reload did not take; the last known good config was restored."""


class InstallError(PollerError):
    """The config file could not be written (read-only, full, missing directory)."""


class StateError(PollerError):
    """The persisted pool state is unreadable or corrupt."""


class DaemonFailed(PollerError):
    """One of `poller run`'s long-lived tasks ended: the daemon cannot go on."""
