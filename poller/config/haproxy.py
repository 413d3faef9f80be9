"""The `haproxy` section: the HAProxy poller keeps in step, its files and sockets, what the
template renders, and how changes are paced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from poller.config.values import Section


class HAProxySettings(Section):
    """The HAProxy poller keeps in step with the pool."""

    mode: Literal["whole", "backends"] = Field(
        default="whole",
        description="`whole`: poller writes HAProxy's whole config (config_path) from the "
        "template. `backends`: you keep your own config file(s) (user_configs: global, "
        "defaults, frontends, TLS, other backends) and poller writes only its services' "
        "backends into config_path, which HAProxy loads after yours "
        "(`haproxy -f yours.cfg -f config_path`); your frontends send traffic to them by "
        "name (`use_backend web`).",
    )
    user_configs: tuple[Path, ...] = Field(
        default=(),
        description="`mode: backends`: your own HAProxy config files, in the order HAProxy "
        "loads them, before config_path. poller never writes them; it reads them to check "
        "they give it what it needs (the admin socket at level admin) and validates them "
        "with its own file (`haproxy -c -f each -f config_path`) before installing anything.",
    )
    config_path: Path = Field(
        default=Path("/usr/local/etc/haproxy/haproxy.cfg"),
        description="The config file poller writes and HAProxy runs (shared with the HAProxy "
        "container): the whole config, or with `mode: backends` only poller's backends.",
    )
    template: Path | None = Field(
        default=None,
        description="Jinja2 template of that file; unset: the built-in one "
        "(poller/templates/haproxy.cfg.j2, or backends.cfg.j2 with `mode: backends`).",
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
    retry_on: Literal["off", "idempotent", "all"] = Field(
        default="idempotent",
        description="Template: which requests HAProxy replays on another server when theirs "
        "died before answering (`retry-on all-retryable-errors`). `idempotent`: GET, HEAD "
        "and OPTIONS only (`http-request disable-l7-retry` for the others), so a POST is "
        "never sent twice; `all`: every method, only for apps whose every request is safe "
        "to repeat; `off`: failed connects only. `true`/`false` mean `all`/`off`.",
    )

    @field_validator("retry_on", mode="before")
    @classmethod
    def _retry_on_words(cls, value: Any) -> Any:
        # YAML reads `off`/`on` as booleans, and `true` was the old spelling of `all`.
        if isinstance(value, bool):
            return "all" if value else "off"
        return value

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
        default=500,
        ge=10,
        description="HAProxy's own check of each server: `inter` (and `timeout check`).",
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
        "this long instead of taking its full share at once (runtime `add server` and the "
        "file alike); unset: off. A few seconds (e.g. 10) suit apps with a cold start (a "
        "JVM, an empty cache).",
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
        "(a restarted HAProxy; also how soon a server put aside by hand is seen). /healthz "
        "is 503 after three of these without HAProxy brought or found in step.",
    )

    @model_validator(mode="after")
    def _mode_and_files_agree(self) -> HAProxySettings:
        if self.mode == "backends" and not self.user_configs:
            raise ValueError(
                "mode `backends` needs user_configs: the HAProxy config file(s) you keep "
                "(global, defaults, frontends), which HAProxy loads before config_path"
            )
        if self.mode == "whole" and self.user_configs:
            raise ValueError(
                "user_configs is only read with mode `backends` (with `whole`, poller writes "
                "HAProxy's whole config from the template)"
            )
        if self.config_path in self.user_configs:
            raise ValueError(
                f"config_path ({self.config_path}) is one of user_configs: poller writes "
                "config_path and never writes yours; give it a file of its own"
            )
        return self

    @model_validator(mode="after")
    def _waits_ordered(self) -> HAProxySettings:
        if self.min_wait_seconds > self.max_wait_seconds:
            raise ValueError(
                f"min_wait_seconds ({self.min_wait_seconds:g}) is longer than "
                f"max_wait_seconds ({self.max_wait_seconds:g})"
            )
        return self
