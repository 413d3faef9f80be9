"""Prometheus metrics of the daemon, on an injected registry (one per test).

Names follow client_python's rules: `poller_` prefix, base units, `_total` counters,
`_seconds` durations, and no per-address labels (a /16 would explode the series).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from poller import __version__

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.members = Gauge(
            "poller_members", "Pool members by service and state.", ["service", "state"], registry=r
        )
        self.leaving = Gauge(
            "poller_members_leaving",
            "Member addresses out of rotation because discovery.dns_names no longer lists "
            "them (their replicas are being stopped).",
            registry=r,
        )
        self.dns_lookups = Counter(
            "poller_dns_lookups_total",
            "Lookups of discovery.dns_names by result (ok, failed: no such name or no "
            "resolver, late: no answer within dns_interval_seconds).",
            ["result"],
            registry=r,
        )
        self.sweeps = Counter(
            "poller_sweeps_total",
            "Sweeps by kind and result; failed: on the poller's side (the pool kept as it was).",
            ["kind", "result"],
            registry=r,
        )
        self.sweep_duration = Histogram(
            "poller_sweep_duration_seconds",
            "Duration of sweeps.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.probes = Counter(
            "poller_probes_total", "Probes by result class.", ["result"], registry=r
        )
        self.borrowed = Counter(
            "poller_checks_borrowed_total",
            "Member checks answered by HAProxy's own passed check instead of a probe.",
            ["service"],
            registry=r,
        )
        self.changes = Counter(
            "poller_haproxy_changes_total",
            "Changes made to HAProxy by method (runtime, reload) and result.",
            ["method", "result"],
            registry=r,
        )
        self.change_duration = Histogram(
            "poller_haproxy_change_duration_seconds",
            "Duration of HAProxy changes.",
            ["method"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.guard_holds = Counter(
            "poller_guard_holds_total", "Times the guard started holding removals.", registry=r
        )
        self.guard_held = Gauge(
            "poller_guard_held_members", "Removals the guard holds now.", registry=r
        )
        self.set_aside = Gauge(
            "poller_servers_set_aside",
            "Servers an operator put in maintenance or drain by hand (poller leaves them "
            "alone until they are set ready again), by service and state.",
            ["service", "state"],
            registry=r,
        )
        self.clock_jumps = Counter(
            "poller_clock_jumps_total",
            "Wall-clock jumps seen (the schedule was mended; pool timing is monotonic).",
            registry=r,
        )
        self.last_success = Gauge(
            "poller_last_successful_sweep_timestamp_seconds",
            "Unix time of the last successful sweep.",
            registry=r,
        )
        self.haproxy_up = Gauge(
            "poller_haproxy_up", "1 when HAProxy's runtime API answered last time.", registry=r
        )
        self.behind = Gauge(
            "poller_haproxy_behind_servers",
            "Servers by which what HAProxy serves differs from the pool's desired set, by "
            "service (to add plus to remove; removals the guard holds count): 0 in step.",
            ["service"],
            registry=r,
        )
        self.behind_since = Gauge(
            "poller_haproxy_behind_since_timestamp_seconds",
            "Unix time HAProxy fell behind the pool's desired set, by service (0: in step).",
            ["service"],
            registry=r,
        )
        self.haproxy_in_step = Gauge(
            "poller_haproxy_last_in_step_timestamp_seconds",
            "Unix time HAProxy was last brought or confirmed in step with the pool.",
            registry=r,
        )
        self.sweep_found = Counter(
            "poller_sweep_found_total",
            "New endpoints found healthy by discovery sweeps (candidates), by kind.",
            ["kind"],
            registry=r,
        )
        self.sweep_overruns = Counter(
            "poller_sweep_overruns_total",
            "Sweeps that took longer than their interval (the next one ran back to back).",
            ["kind"],
            registry=r,
        )
        self.task_failures = Counter(
            "poller_task_failures_total",
            "Unexpected exceptions in the daemon's tasks (logged at ERROR with a traceback).",
            ["task"],
            registry=r,
        )
        self.guard_hold_started = Gauge(
            "poller_guard_hold_started_timestamp_seconds",
            "Unix time the current hold of removals began (0: not holding).",
            registry=r,
        )
        # Settings the alert rules compare with (deploy/prometheus/poller-rules.yml).
        self.discovery_interval = Gauge(
            "poller_discovery_interval_seconds", "discovery.interval_seconds.", registry=r
        )
        self.reconcile_interval = Gauge(
            "poller_reconcile_interval_seconds",
            "haproxy.reconcile_interval_seconds.",
            registry=r,
        )
        self.guard_max_hold = Gauge(
            "poller_guard_max_hold_seconds",
            "guard.max_hold_seconds (0: until resolved).",
            registry=r,
        )
        self.build = Gauge("poller_build_info", "Build information.", ["version"], registry=r)
        self.build.labels(version=__version__).set(1)

    def settings(self, discovery: float, reconcile: float, max_hold: float) -> None:
        self.discovery_interval.set(discovery)
        self.reconcile_interval.set(reconcile)
        self.guard_max_hold.set(max_hold)
