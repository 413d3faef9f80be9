"""The whole configuration: every section, the services resolved once, and the checks
that span sections (intervals in order, services apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from pydantic import Field, model_validator

from poller.config.haproxy import HAProxySettings
from poller.config.probes import ProbeSettings
from poller.config.sections import (
    DiscoverySettings,
    GuardSettings,
    PoolSettings,
    StateSettings,
    StatusSettings,
)
from poller.config.services import Service, ServiceSettings, check_apart, resolve
from poller.config.values import Section


class Settings(Section):
    """The whole configuration."""

    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    haproxy: HAProxySettings = Field(default_factory=HAProxySettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    services: tuple[ServiceSettings, ...] = Field(
        default=(),
        description="Several web apps behind one HAProxy, from one sweep; unset: one, "
        "made of `discovery.ports`, `probe` and `haproxy.backend`.",
    )

    @cached_property
    def resolved_services(self) -> tuple[Service, ...]:
        """The services, every default filled in, resolved once; without `services:`, the
        one the top-level settings describe."""
        return resolve(self.services, self.discovery.ports, self.probe, self.haproxy.backend)

    def effective(self) -> dict[str, Any]:
        """The settings as poller uses them (`check-config --json`): every service with
        the defaults it inherits filled in; with `services:`, without the top-level keys
        they replace (`discovery.ports`, `haproxy.backend`)."""
        data = self.model_dump(mode="json")
        data["services"] = [
            {
                "name": s.name,
                "ports": list(s.ports),
                "backend": s.backend,
                "probe": s.probe.model_dump(mode="json"),
                "route": {
                    "host": list(s.hosts),
                    "path_prefix": s.path_prefix,
                    "default": s.default,
                },
            }
            for s in self.resolved_services
        ]
        if self.services:
            del data["discovery"]["ports"]
            del data["haproxy"]["backend"]
        return data

    def ports(self) -> tuple[int, ...]:
        """Every port a sweep asks: the services' together."""
        return tuple(sorted({port for s in self.resolved_services for port in s.ports}))

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        # A copy with other sections must resolve its own services, not keep these.
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("resolved_services", None)
        return copied

    @model_validator(mode="after")
    def _services_apart(self) -> Settings:
        if not self.services:
            return self
        if "ports" in self.discovery.model_fields_set:
            # Set in the file, POLLER_DISCOVERY__PORTS or `scan --port`: say all three.
            raise ValueError(
                "discovery.ports (or --port, POLLER_DISCOVERY__PORTS) is not used with "
                "services: give each service its ports"
            )
        if "backend" in self.haproxy.model_fields_set:
            raise ValueError(
                "haproxy.backend is not used with services: give each service its backend"
            )
        check_apart(self.services, self.resolved_services)
        return self

    @model_validator(mode="after")
    def _intervals_ordered(self) -> Settings:
        if self.probe.timeout_seconds >= self.pool.interval_seconds:
            raise ValueError(
                f"probe.timeout_seconds ({self.probe.timeout_seconds:g}) must be shorter "
                f"than pool.interval_seconds ({self.pool.interval_seconds:g})"
            )
        if self.pool.rise_interval_seconds > self.pool.interval_seconds:
            raise ValueError(
                f"pool.rise_interval_seconds ({self.pool.rise_interval_seconds:g}) must not be "
                f"longer than pool.interval_seconds ({self.pool.interval_seconds:g})"
            )
        full = self.discovery.full_interval_seconds
        if full is not None and full < self.discovery.interval_seconds:
            raise ValueError(
                f"discovery.full_interval_seconds ({full:g}) must not be shorter than "
                f"discovery.interval_seconds ({self.discovery.interval_seconds:g})"
            )
        if self.discovery.interval_seconds < self.pool.interval_seconds:
            raise ValueError(
                f"discovery.interval_seconds ({self.discovery.interval_seconds:g}) must not be "
                f"shorter than pool.interval_seconds ({self.pool.interval_seconds:g})"
            )
        return self
