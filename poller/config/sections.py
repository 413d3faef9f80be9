"""The sections of the settings that are not the probe's, HAProxy's or the services':
discovery (what is swept), the pool (rise and fall), the guard, the status server and the
state file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import netaddr
from pydantic import Field, field_validator

from poller.config.values import Section, as_list, distinct_ports
from poller.discovery.targets import parse_address_set_item

# One label of a host name; `_` too, which Docker's service names may hold.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class DiscoverySettings(Section):
    """Which addresses and ports are swept."""

    subnets: tuple[str, ...] = Field(
        default=(),
        description="IPv4/IPv6 CIDRs to sweep, or `auto`: the IPv4 networks of this host's "
        "up, non-loopback interfaces, meant for the sidecar, whose only networks are the "
        "app's (its own addresses are excluded). No default: poller sweeps nothing it was "
        "not told to; without it (`--subnet`, `POLLER_DISCOVERY__SUBNETS` or this key) "
        "`scan`, `run` and `check-config` stop with an error.",
    )
    exclude: tuple[str, ...] = Field(
        default=(),
        description="Addresses, CIDRs or ranges (`A-B`) never probed (gateway, HAProxy).",
    )
    allow_public: bool = Field(
        default=False,
        description="Sweep subnets outside the private ranges (10/8, 172.16/12, "
        "192.168/16, 100.64/10, fc00::/7) and loopback. Off: such a subnet is refused, "
        "since no Docker network uses one; turn it on only for a network you own "
        "(`--allow-public` on `scan`). Special ranges (0.0.0.0/8, link-local, multicast, "
        "240/4, `::`, IPv4-mapped `::ffff:0:0/96`) are refused always.",
    )
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = Field(
        default=(3000,),
        min_length=1,
        description="TCP ports probed on every address (1-65535, no repeats).",
    )
    max_targets: int = Field(
        default=65536,
        ge=1,
        description="Refuse to sweep more (address, port) pairs than this. Network and "
        "broadcast addresses of IPv4 prefixes shorter than /31 are not counted.",
    )
    concurrency: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Probes in flight at once (lowered to fit the open-files limit).",
    )
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

    dns_names: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="DNS names that list the service's live replicas, asked every "
        "dns_interval_seconds: on Docker Swarm `tasks.<service>` (Docker's DNS). Swarm "
        "takes a task out of that answer about 2 s before it stops it, so a member whose "
        "address leaves the answer is taken out of rotation at once (drained and removed) "
        "instead of after its probes fail. A hint only: it adds no target, and a failed or "
        "empty answer, or one naming none of the pool, changes nothing. Empty: not used.",
    )
    dns_interval_seconds: float = Field(
        default=0.5,
        ge=0.1,
        le=60,
        description="Time between two rounds of dns_names lookups.",
    )

    _split = field_validator("subnets", "exclude", "ports", "dns_names", mode="before")(as_list)

    @field_validator("dns_names")
    @classmethod
    def _check_dns_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            labels = name.rstrip(".").split(".")
            if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
                raise ValueError(f"{name!r} is not a DNS name (letters, digits, - and _)")
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice")
        return value

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

    _distinct = field_validator("ports")(distinct_ports)


class PoolSettings(Section):
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
    rise: int = Field(
        default=2, ge=1, le=100, description="Successes in a row before a candidate joins."
    )
    fall: int = Field(default=2, ge=1, le=100, description="Failures in a row to leave.")
    forget_after_seconds: float = Field(
        default=300.0, ge=0, description="How long a DOWN member stays listed (in /pool)."
    )
    haproxy_checks: bool = Field(
        default=True,
        description="Take HAProxy's own check of a member as poller's check while it "
        "passes: poller reads every server's check result once per interval (one `show "
        "servers state`) and probes only candidates, members HAProxy's check fails or does "
        "not run, and each member itself every `verify_interval_seconds` (its identity). "
        "Not used for a service whose probe has `expect_body` (HAProxy's check does not "
        "read it). false: poller probes every member every interval.",
    )
    verify_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="With `haproxy_checks`, the longest a member goes without a probe of "
        "poller's own: how late an identity change that HAProxy's check cannot see (another "
        "node answering at the same address, with no failed check between) is found.",
    )


class GuardSettings(Section):
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


class StatusSettings(Section):
    """The poller's own HTTP status server."""

    listen: str = Field(
        default="127.0.0.1:9345",
        pattern=r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]*):[0-9]{1,5}$",
        description="ADDRESS:PORT for /healthz, /metrics, /pool; loopback unless you open it.",
    )
    enabled: bool = Field(default=True, description="Serve status at all.")


class StateSettings(Section):
    """Where the pool is persisted, so a restart does not flap members."""

    path: Path = Field(
        default=Path("/var/lib/poller/state.json"),
        description="Written atomically after each change; a corrupt one is reported and ignored.",
    )
