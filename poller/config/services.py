"""Services: several web apps behind one HAProxy, from one sweep. The `services` list as
written (`ServiceSettings`), and each service resolved once, every default filled in
(`Service`), with the rules that keep services apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, field_validator

from poller.config.probes import ProbeSettings, ServiceProbeSettings
from poller.config.values import PATH, Section, as_list, distinct_ports

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_HOST_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


class RouteSettings(Section):
    """Which requests HAProxy sends to a service: all that match (host and path prefix
    together when both are set), or, for the default service, all the others."""

    host: tuple[str, ...] = Field(
        default=(), description="Host names (the Host header without its port)."
    )
    path_prefix: str | None = Field(
        default=None, description="Paths starting with this (HAProxy's `path_beg`)."
    )
    default: bool = Field(default=False, description="Requests no other service takes.")

    _split = field_validator("host", mode="before")(as_list)

    @field_validator("host")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not _HOST_NAME.match(host) or len(host) > 253:
                raise ValueError(f"{host!r} is not a host name")
        return tuple(host.lower() for host in value)

    @field_validator("path_prefix")
    @classmethod
    def _check_prefix(cls, value: str | None) -> str | None:
        if value is not None and not PATH.match(value):
            raise ValueError(f"{value!r} must start with / and contain no spaces or controls")
        return value

    @property
    def matches(self) -> bool:
        return bool(self.host) or self.path_prefix is not None


class ServiceSettings(Section):
    """One web app on the network: its ports, how it is probed, its HAProxy backend and
    which requests reach it."""

    name: str = Field(
        description="The service's name: lower-case letters, digits, - and _ (at most 32). "
        "It names the service in logs, metrics, /pool and `poller scan` (docs/SERVICES.md)."
    )
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = Field(
        min_length=1, description="Ports the service's nodes listen on."
    )
    backend: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The HAProxy backend the service owns; unset: its name.",
    )
    probe: ServiceProbeSettings = Field(
        default_factory=ServiceProbeSettings,
        description="Overrides of the top-level `probe` for this service: `method`, `path`, "
        "`expect_status`, `expect_body`, `headers`, `identity`.",
    )
    route: RouteSettings = Field(
        default_factory=RouteSettings,
        description="Which requests reach it: `host` (one or more names), `path_prefix`, "
        "`default: true` (the requests no other service takes).",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _SERVICE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a service name (lower-case letters, digits, - and _, "
                "starting with a letter, at most 32)"
            )
        return value

    _split = field_validator("ports", mode="before")(as_list)

    _distinct = field_validator("ports")(distinct_ports)


@dataclass(frozen=True)
class Service:
    """A service as the daemon uses it: every default filled in."""

    name: str
    ports: tuple[int, ...]
    probe: ProbeSettings
    backend: str
    hosts: tuple[str, ...] = ()
    path_prefix: str | None = None
    default: bool = True

    @property
    def probe_key(self) -> tuple[Any, ...]:
        """What a node sees of the probe and what makes it pass: two services on one
        port with the same key could never be told apart."""
        p = self.probe
        identity = None if p.identity is None else (p.identity.json_field, p.identity.header)
        return (
            p.method,
            p.path,
            tuple(p.headers.items()),
            p.expect_status,
            p.expect_body,
            identity,
        )


def resolve(
    items: Sequence[ServiceSettings],
    ports: tuple[int, ...],
    probe: ProbeSettings,
    backend: str,
) -> tuple[Service, ...]:
    """`items` with every default filled in (a service's probe merged over `probe`); none:
    the one service the top-level `ports`, `probe` and `backend` describe."""
    if not items:
        return (Service("default", ports, probe, backend),)
    found = []
    for item in items:
        overrides = item.probe.model_dump(exclude_none=True)
        merged = ProbeSettings.model_validate({**probe.model_dump(), **overrides})
        route = item.route
        found.append(
            Service(
                item.name,
                item.ports,
                merged,
                item.backend or item.name,
                route.host,
                route.path_prefix,
                route.default or (len(items) == 1 and not route.matches),
            )
        )
    return tuple(found)


def check_apart(items: Sequence[ServiceSettings], services: Sequence[Service]) -> None:
    """Services a node could never be told apart by, or requests could never reach:
    ValueError naming them."""
    label = [f"services.{i} ({s.name})" for i, s in enumerate(services)]
    for i, service in enumerate(services):
        for j, other in enumerate(services[:i]):
            if service.name == other.name:
                raise ValueError(f"{label[j]} and services.{i}: the same name")
            if service.backend == other.backend:
                raise ValueError(f"{label[j]} and {label[i]}: the same backend {service.backend!r}")
            shared = sorted(set(service.ports) & set(other.ports))
            if shared and service.probe_key == other.probe_key:
                raise ValueError(
                    f"{label[j]} and {label[i]} share port {shared[0]} and probe it the "
                    "same way, so a node there would join both: give one of them another "
                    "probe.path, probe.expect_body, probe.identity or probe.headers, or "
                    "another port"
                )
    defaults = [label[i] for i, s in enumerate(services) if s.default]
    if len(defaults) > 1:
        raise ValueError(f"route.default is set by {', '.join(defaults)}: one at most")
    if len(services) > 1:
        for i, item in enumerate(items):
            if not item.route.matches and not item.route.default:
                raise ValueError(
                    f"{label[i]}: no route (set route.host, route.path_prefix or "
                    "route.default), so no request would reach it"
                )
