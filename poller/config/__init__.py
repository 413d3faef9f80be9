"""The typed configuration: YAML file < environment < CLI flags, validated once.

One module a job: `values` (shared parsers), `probes`, `sections`, `haproxy` and
`services` (the sections), `settings` (the whole, services resolved once), `loading` (the
file and the environment) and `locating` (an error's file line, field or variable). It
must not touch the network: what subnets mean is `discovery.targets`' to say.
"""

from poller.config.haproxy import HAProxySettings
from poller.config.loading import Overrides, load_settings
from poller.config.probes import IdentitySettings, ProbeSettings, ServiceProbeSettings
from poller.config.sections import (
    DiscoverySettings,
    GuardSettings,
    PoolSettings,
    StateSettings,
    StatusSettings,
)
from poller.config.services import RouteSettings, Service, ServiceSettings
from poller.config.settings import Settings
from poller.config.values import ENV_PREFIX, StatusRanges, parse_status_ranges

__all__ = [
    "ENV_PREFIX",
    "DiscoverySettings",
    "GuardSettings",
    "HAProxySettings",
    "IdentitySettings",
    "Overrides",
    "PoolSettings",
    "ProbeSettings",
    "RouteSettings",
    "Service",
    "ServiceProbeSettings",
    "ServiceSettings",
    "Settings",
    "StateSettings",
    "StatusRanges",
    "StatusSettings",
    "load_settings",
    "parse_status_ranges",
]
