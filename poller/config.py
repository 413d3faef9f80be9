"""The typed configuration: YAML file < environment < CLI flags, validated once.

Owns the model (frozen, unknown keys rejected), the loading of the YAML file and the
`POLLER_SECTION__KEY` environment overrides, and turning every validation failure into one
`ConfigError` that names the file line, the field path (or the variable) and the value.
It must not touch the network or interpret subnets beyond syntax (`targets` does that).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import netaddr
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from poller.errors import ConfigError

ENV_PREFIX = "POLLER_"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PATH = re.compile(r"^/[\x21-\x7e]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    """Accept "a,b" (handy in environment variables) and a lone scalar as lists."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


class DiscoverySettings(_Section):
    """Which addresses and ports are swept."""

    subnets: tuple[str, ...] = Field(
        default=(),
        description="IPv4/IPv6 CIDRs to sweep, or `auto`: the networks of this host's own "
        "non-loopback interfaces, meant for the sidecar, whose only networks are the app's. "
        "No default: poller sweeps nothing it was not told to.",
    )
    exclude: tuple[str, ...] = Field(
        default=(),
        description="Addresses, CIDRs or ranges (`A-B`) never probed (gateway, HAProxy).",
    )
    allow_public: bool = Field(
        default=False,
        description="Sweep subnets outside the private ranges (10/8, 172.16/12, "
        "192.168/16, 100.64/10, fc00::/7) and loopback. Off: such a subnet is refused, "
        "since no Docker network uses one; turn it on only for a network you own.",
    )
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = Field(
        default=(3000,), min_length=1, description="TCP ports probed on every address."
    )
    max_targets: int = Field(
        default=65536,
        ge=1,
        description="Refuse to sweep more (address, port) pairs than this.",
    )
    concurrency: int = Field(default=256, ge=1, le=4096, description="Probes in flight at once.")
    interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=86400,
        description="Time between two discovery sweeps (poller run): of the whole subnet, "
        "or, when full_interval_seconds is longer, of its likely addresses (a hot sweep); "
        "known members are checked every pool.interval_seconds regardless.",
    )
    full_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Time between two sweeps of the whole subnet; unset: every sweep is "
        "whole. Longer than interval_seconds on large subnets: the sweeps in between "
        "only ask where Docker hands out new addresses (hot sweeps).",
    )
    hot_per_subnet: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="A hot sweep asks, per subnet, this many addresses after the highest "
        "one in use and this many of the lowest free ones (and the recently vacated).",
    )
    hot_max_targets: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Addresses a hot sweep asks at most.",
    )
    method: Literal["auto", "arp", "connect"] = Field(
        default="auto",
        description="How empty addresses are told apart from live ones. `arp`: ask the "
        "segment with ARP first (raw socket: needs CAP_NET_RAW and an Ethernet interface "
        "on the subnet) and probe only the addresses that answer; `connect`: TCP-connect "
        "to every address, paced for the neighbour table; `auto`: `arp` where it can run, "
        "`connect` elsewhere.",
    )
    arp_rate_per_second: int = Field(
        default=30000,
        ge=100,
        le=1_000_000,
        description="ARP requests sent per second at most (broadcasts: every host on the "
        "segment receives them).",
    )
    arp_attempts: int = Field(
        default=2,
        ge=1,
        le=5,
        description="Times a silent address is asked before it counts as empty.",
    )
    arp_reply_wait_seconds: float = Field(
        default=0.05,
        ge=0.01,
        le=5,
        description="Wait for late replies after each round of ARP requests.",
    )
    neighbour_table_limit: int | None = Field(
        default=None,
        ge=64,
        description="The host's neighbour (ARP) table size, gc_thresh3. Unset: read from "
        "/proc, or 1,024 (the kernel default) where a container hides it. A sweep leaves "
        "at most a quarter of it unresolved at once.",
    )

    _split = field_validator("subnets", "exclude", "ports", mode="before")(_as_list)

    @field_validator("subnets")
    @classmethod
    def _check_subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one subnet (or `auto`) is needed")
        if "auto" in value:
            if len(value) > 1:
                raise ValueError("`auto` cannot be combined with other subnets")
            return value
        for item in value:
            try:
                netaddr.IPNetwork(item, expand_partial=False)
            except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
                raise ValueError(f"{item!r} is not a CIDR subnet") from exc
            if "/" not in item:
                raise ValueError(f"{item!r} has no prefix length (write it as a CIDR, e.g. /24)")
        return value

    @field_validator("exclude")
    @classmethod
    def _check_exclude(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parse_address_set_item(item)
        return value

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"ports repeat: {list(value)}")
        return value


def parse_address_set_item(item: str) -> netaddr.IPSet:
    """One `exclude` entry (address, CIDR or `first-last` range) as an IPSet."""
    try:
        if "-" in item:
            first, last = (part.strip() for part in item.split("-", 1))
            return netaddr.IPSet(netaddr.IPRange(first, last))
        return netaddr.IPSet([netaddr.IPNetwork(item, expand_partial=False)])
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise ValueError(f"{item!r} is not an address, CIDR or range") from exc


class IdentitySettings(_Section):
    """Where a node's identity is read from: exactly one of the two."""

    json_field: str | None = Field(
        default=None, min_length=1, description="Top-level field of a JSON body, e.g. `host`."
    )
    header: str | None = Field(
        default=None, min_length=1, description="Response header, e.g. `x-backend-ip`."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> IdentitySettings:
        if (self.json_field is None) == (self.header is None):
            raise ValueError("set exactly one of `json_field` or `header`")
        if self.header is not None and not _HEADER_NAME.match(self.header):
            raise ValueError(f"{self.header!r} is not a valid header name")
        return self


StatusRanges = tuple[tuple[int, int], ...]


def parse_status_ranges(value: Any) -> StatusRanges:
    """`200-299`, `200,204`, 200 or [200, "300-399"] into sorted inclusive ranges."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    ranges: list[tuple[int, int]] = []
    for raw in items:
        text = str(raw).strip()
        match = re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", text)
        if not match:
            raise ValueError(f"{text!r} is not a status code or range such as 200-399")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"{text!r} is not within 100-599 with low <= high")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("at least one status code is needed")
    return tuple(sorted(set(ranges)))


def _status_ranges(value: Any) -> StatusRanges:
    """A validator's view: ranges already parsed (a settings object rebuilt from another)
    stay as they are."""
    if isinstance(value, tuple) and all(isinstance(r, tuple) for r in value):
        return value
    return parse_status_ranges(value)


class ProbeSettings(_Section):
    """How one candidate is asked whether it is healthy."""

    scheme: Literal["http", "https"] = Field(default="http", description="`http` or `https`.")
    verify_tls: bool = Field(default=True, description="With https: check the node's certificate.")
    method: Literal["GET", "HEAD"] = Field(default="GET", description="`GET` or `HEAD`.")
    path: str = Field(default="/", description="Request path; point it at a cheap health endpoint.")
    expect_status: StatusRanges = Field(
        default=((200, 299),),
        description="Healthy status codes: `200-299`, `200,204`, or a list.",
    )
    expect_body: str | None = Field(
        default=None,
        min_length=1,
        description="Substring the first `max_body_bytes` of the body must contain.",
    )
    headers: Mapping[str, str] = Field(
        default_factory=dict, description="Extra request headers, e.g. `Host`."
    )
    identity: IdentitySettings | None = Field(
        default=None,
        description="Where a node's identity is read (`json_field` or `header`); a new "
        "identity at the same ip:port is a new member.",
    )
    timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Hard deadline for one probe: connect and response together.",
    )
    max_body_bytes: int = Field(
        default=65536, ge=0, le=16 * 1024 * 1024, description="Body bytes read at most."
    )

    _parse_status = field_validator("expect_status", mode="before")(_status_ranges)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not _PATH.match(value):
            raise ValueError(f"{value!r} must start with / and contain no spaces or controls")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"header {name!r} has a line break or NUL in its value")
        return dict(sorted(value.items()))

    @model_validator(mode="after")
    def _body_needs_get(self) -> ProbeSettings:
        reads_body = self.expect_body is not None or (
            self.identity is not None and self.identity.json_field is not None
        )
        if self.method == "HEAD" and reads_body:
            raise ValueError(
                "method HEAD returns no body: expect_body and identity.json_field need GET"
            )
        return self

    def status_ok(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect_status)


class PoolSettings(_Section):
    """When a candidate joins and a member leaves."""

    interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="Time between two probes of a known member."
    )
    rise_interval_seconds: float = Field(
        default=0.1,
        gt=0,
        le=3600,
        description="Time between two probes of a rising candidate: a node that answers "
        "joins after `rise` probes this far apart, instead of `rise` intervals.",
    )
    rise: int = Field(default=2, ge=1, le=100, description="Successes in a row to join.")
    fall: int = Field(default=2, ge=1, le=100, description="Failures in a row to leave.")
    forget_after_seconds: float = Field(
        default=300.0, ge=0, description="How long a DOWN member stays listed (in /pool)."
    )


class GuardSettings(_Section):
    """When removals look like the poller's own fault, hold them."""

    min_members: int = Field(
        default=0, ge=0, description="Never remove members below this many (0: no floor)."
    )
    max_removed_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Hold removals when more than one member and more than this share of "
        "what HAProxy served at the start of the window would go within it (exactly this "
        "share is allowed; 1: never hold).",
    )
    window_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Removals within this long count together against the pool served when "
        "the first of them came, so removals in steps cannot slip past the guard "
        "(0: each reconcile on its own).",
    )
    max_hold_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Release a hold after this long if it persists (0: hold until resolved). "
        "HAProxy's own checks keep dead held members out of rotation meanwhile.",
    )


class HAProxySettings(_Section):
    """The HAProxy poller keeps in step with the pool."""

    config_path: Path = Field(
        default=Path("/usr/local/etc/haproxy/haproxy.cfg"),
        description="The config file HAProxy runs (shared with the HAProxy container).",
    )
    template: Path | None = Field(
        default=None,
        description="Jinja2 template of that file; unset: the built-in one "
        "(config/haproxy.cfg.j2).",
    )
    template_vars: Mapping[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra variables for your own template (`vars.X`)."
    )
    binary: str = Field(default="haproxy", description="HAProxy binary for `haproxy -c`.")
    admin_socket: Path = Field(
        default=Path("/var/run/haproxy/admin.sock"), description="Runtime API socket."
    )
    master_socket: Path = Field(
        default=Path("/var/run/haproxy/master.sock"),
        description="Master CLI socket (`haproxy -W -S <path>`), for reloads.",
    )
    backend: str = Field(
        default="nodes",
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The backend whose servers poller owns.",
    )
    frontend_bind: str = Field(default=":80", description="Template: the frontend's bind.")
    stats_bind: str = Field(default=":1936", description="Template: the stats page's bind.")
    log_target: str | None = Field(
        default="stdout format raw local0",
        pattern=r"^[^\n\r#]+$",
        description="Template: HAProxy's `log` target (null: no request log).",
    )
    retries: int = Field(default=3, ge=0, le=20, description="Template: `retries`.")
    retry_on: bool = Field(
        default=False,
        description="Template: `retry-on all-retryable-errors`. Replays requests that "
        "failed on a dying node: only safe for idempotent apps.",
    )
    connect_timeout_ms: int = Field(
        default=200,
        ge=10,
        le=60000,
        description="Template: `timeout connect`. Also the connect timeout of HAProxy's own "
        "checks and its retry turn-around: on a container network a connect takes well under "
        "a millisecond, so 200 ms tells a vanished container (no RST, just silence) within "
        "a check; raise it for remote or routed servers.",
    )
    check_interval_ms: int = Field(
        default=500, ge=10, description="HAProxy's own check of each server: `inter`."
    )
    check_fastinter_ms: int = Field(
        default=100,
        ge=10,
        description="HAProxy's own check: `fastinter`, the pace while a server changes state, "
        "so a dead one is marked DOWN within about a second.",
    )
    check_fall: int = Field(default=2, ge=1, description="HAProxy's own check: `fall`.")
    check_rise: int = Field(default=1, ge=1, description="HAProxy's own check: `rise`.")
    slowstart_seconds: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Servers get HAProxy's `slowstart`: a new member's weight ramps up over "
        "this long instead of taking its full share at once; unset: off.",
    )
    socket_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Deadline for one runtime or master CLI command."
    )
    drain_timeout_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Wait at most this long for a leaving server's "
        "sessions to end before it is put in maintenance and deleted.",
    )
    reload_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Wait at most this long for a reload to show."
    )
    runtime_api: bool = Field(
        default=True,
        description="Change membership through the runtime API (false: reload on every "
        "change, as the push-way lab did; for comparison, or where the API cannot be used).",
    )
    min_wait_seconds: float = Field(
        default=0.0, ge=0, description="Debounce: apply once the pool was quiet this long."
    )
    max_wait_seconds: float = Field(
        default=1.0, ge=0, description="Debounce: apply at the latest this long after a change."
    )
    min_reload_gap_seconds: float = Field(
        default=5.0, ge=0, description="At least this long between two reloads."
    )
    reconcile_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Bring HAProxy in step this often even when the pool did not change "
        "(catches a restarted HAProxy and hand edits); /healthz is 503 after three of these "
        "without HAProxy brought or found in step.",
    )

    @model_validator(mode="after")
    def _waits_ordered(self) -> HAProxySettings:
        if self.min_wait_seconds > self.max_wait_seconds:
            raise ValueError(
                f"min_wait_seconds ({self.min_wait_seconds:g}) is longer than "
                f"max_wait_seconds ({self.max_wait_seconds:g})"
            )
        return self


class StatusSettings(_Section):
    """The poller's own HTTP status server."""

    listen: str = Field(
        default="127.0.0.1:9345",
        pattern=r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]*):[0-9]{1,5}$",
        description="ADDRESS:PORT for /healthz, /metrics, /pool; loopback unless you open it.",
    )
    enabled: bool = Field(default=True, description="Serve status at all.")


class StateSettings(_Section):
    """Where the pool is persisted, so a restart does not flap members."""

    path: Path = Field(
        default=Path("/var/lib/poller/state.json"),
        description="Written atomically after each change; a corrupt one is reported and ignored.",
    )


_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_HOST_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


class ServiceProbeSettings(_Section):
    """A service's own probe: each key set here replaces the top-level `probe`'s."""

    method: Literal["GET", "HEAD"] | None = Field(default=None, description="As `probe.method`.")
    path: str | None = Field(default=None, description="As `probe.path`.")
    expect_status: StatusRanges | None = Field(
        default=None, description="As `probe.expect_status`."
    )
    expect_body: str | None = Field(
        default=None, min_length=1, description="As `probe.expect_body`."
    )
    headers: Mapping[str, str] | None = Field(default=None, description="As `probe.headers`.")
    identity: IdentitySettings | None = Field(default=None, description="As `probe.identity`.")

    @field_validator("expect_status", mode="before")
    @classmethod
    def _parse_status(cls, value: Any) -> StatusRanges | None:
        return None if value is None else _status_ranges(value)


class RouteSettings(_Section):
    """Which requests HAProxy sends to a service: all that match (host and path prefix
    together when both are set), or, for the default service, all the others."""

    host: tuple[str, ...] = Field(
        default=(), description="Host names (the Host header without its port)."
    )
    path_prefix: str | None = Field(
        default=None, description="Paths starting with this (HAProxy's `path_beg`)."
    )
    default: bool = Field(default=False, description="Requests no other service takes.")

    _split = field_validator("host", mode="before")(_as_list)

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
        if value is not None and not _PATH.match(value):
            raise ValueError(f"{value!r} must start with / and contain no spaces or controls")
        return value

    @property
    def matches(self) -> bool:
        return bool(self.host) or self.path_prefix is not None


class ServiceSettings(_Section):
    """One web app on the network: its ports, how it is probed, its HAProxy backend and
    which requests reach it."""

    name: str = Field(
        description="Lower-case letters, digits, - and _ (at most 32): it names the service "
        "in logs, metrics, /pool and `poller scan`."
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
        description="Overrides of the top-level `probe` for this service.",
    )
    route: RouteSettings = Field(
        default_factory=RouteSettings, description="`host`, `path_prefix`, `default`."
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

    _split = field_validator("ports", mode="before")(_as_list)

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"ports repeat: {list(value)}")
        return value


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


class Settings(_Section):
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

    def service_list(self) -> tuple[Service, ...]:
        """The services, defaults filled in; without `services:`, the one the top-level
        settings describe."""
        if not self.services:
            return (Service("default", self.discovery.ports, self.probe, self.haproxy.backend),)
        found = []
        for item in self.services:
            overrides = item.probe.model_dump(exclude_none=True)
            probe = ProbeSettings.model_validate({**self.probe.model_dump(), **overrides})
            route = item.route
            found.append(
                Service(
                    item.name,
                    item.ports,
                    probe,
                    item.backend or item.name,
                    route.host,
                    route.path_prefix,
                    route.default or (len(self.services) == 1 and not route.matches),
                )
            )
        return tuple(found)

    def ports(self) -> tuple[int, ...]:
        """Every port a sweep asks: the services' together."""
        return tuple(sorted({port for service in self.service_list() for port in service.ports}))

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
        services = self.service_list()
        label = [f"services.{i} ({s.name})" for i, s in enumerate(services)]
        for i, service in enumerate(services):
            for j, other in enumerate(services[:i]):
                if service.name == other.name:
                    raise ValueError(f"{label[j]} and services.{i}: the same name")
                if service.backend == other.backend:
                    raise ValueError(
                        f"{label[j]} and {label[i]}: the same backend {service.backend!r}"
                    )
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
            for i, item in enumerate(self.services):
                if not item.route.matches and not item.route.default:
                    raise ValueError(
                        f"{label[i]}: no route (set route.host, route.path_prefix or "
                        "route.default), so no request would reach it"
                    )
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


Overrides = Mapping[str, Mapping[str, Any]]


def load_settings(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Build `Settings` from a YAML file, the environment and CLI overrides (in rising
    precedence). Every failure is a `ConfigError` naming where it comes from."""
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    tree: yaml.Node | None = None
    if path is not None:
        data, tree = _read_yaml(path)
    origins: dict[tuple[str, str], str] = {}
    env_data = _env_overrides(os.environ if environ is None else environ)
    for layer, origin in ((env_data, "env"), (overrides or {}, "flag")):
        for section, values in layer.items():
            target = data.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: {section}", "must be a mapping")
            for key, value in values.items():
                target[key] = value
                origins[(section, key)] = origin
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, tree, origins) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "is not UTF-8 text") from exc
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, f"malformed YAML: {problem}") from exc
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping of sections")
    if tree is not None:
        _reject_duplicate_keys(tree, path)
    return data, tree


def _reject_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            if key in seen:
                raise ConfigError(
                    f"{path}:{key_node.start_mark.line + 1}: {dotted}", "key repeated"
                )
            seen.add(key)
            _reject_duplicate_keys(value_node, path, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path, prefix)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`POLLER_PROBE__TIMEOUT_SECONDS=0.3` -> {"probe": {"timeout_seconds": 0.3}}; values are
    YAML scalars or flow collections (`[3000, 8080]`, `{header: x-id}`)."""
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not section or not key or "__" in key:
            raise ConfigError(name, "expected POLLER_SECTION__KEY")
        if section not in Settings.model_fields:
            raise ConfigError(name, f"unknown section {section!r} (known: {_known(Settings)})")
        if section == "services":
            raise ConfigError(name, "services are a list: set them in the YAML file")
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(name, f"not a YAML value: {environ[name]!r}") from exc
        result.setdefault(section, {})[key] = value
    return result


def _known(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _config_error(
    exc: ValidationError,
    source: str,
    tree: yaml.Node | None,
    origins: Mapping[tuple[str, str], str],
) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
        parent = _model_at(loc[:-1])
        if parent is not None:
            problem += f" (known: {_known(parent)})"
    else:
        problem = str(error["msg"]).removeprefix("Value error, ")
        shown = error.get("input")
        items = shown if isinstance(shown, list | tuple) else [shown]
        # A message that names the bad item already (`'foo' is not a CIDR`) says it once.
        named = any(repr(item) in problem for item in items)
        if "input" in error and not isinstance(shown, dict) and loc and not named:
            problem += f" (got {shown!r})"
    origin = origins.get((loc[0], loc[1])) if len(loc) >= 2 else None
    if origin == "env":
        where = f"{ENV_PREFIX}{loc[0].upper()}__{loc[1].upper()}"
        if len(loc) > 2:
            where += f" ({dotted})"
    elif origin == "flag":
        where = f"command line ({dotted})"
    else:
        line = _line_of(tree, loc)
        where = f"{source}:{line}: {dotted}" if line else f"{source}: {dotted or 'settings'}"
    return ConfigError(where, problem)


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        if part.isdigit():
            continue  # an item of a list (services.1): the same model
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _line_of(tree: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """The 1-based line of the deepest node of `loc` found in the YAML tree."""
    node, line = tree, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if str(k.value) == part]
            if not found:
                break
            key_node, node = found[-1]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
