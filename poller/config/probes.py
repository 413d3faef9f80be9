"""How a node is asked whether it is healthy: the `probe` section, a service's overrides of
it, and where a node's identity is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from poller.config.values import HEADER_NAME, PATH, Section, StatusRanges, status_ranges


class IdentitySettings(Section):
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
        if self.header is not None and not HEADER_NAME.match(self.header):
            raise ValueError(f"{self.header!r} is not a valid header name")
        return self


class ProbeSettings(Section):
    """How one candidate is asked whether it is healthy."""

    scheme: Literal["http", "https"] = Field(default="http", description="`http` or `https`.")
    verify_tls: bool = Field(default=True, description="With https: check the node's certificate.")
    method: Literal["GET", "HEAD"] = Field(
        default="GET",
        description="`GET` or `HEAD`. HEAD reads no body: no `expect_body`, no "
        "`identity.json_field`.",
    )
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
        description="Where a node's identity is read: `{json_field: host}` (a top-level "
        "field of a JSON body) or `{header: x-backend-ip}`. A different identity at the same "
        "ip:port is a different node.",
    )
    timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Hard deadline for one probe: connect and response together. Must be "
        "shorter than `pool.interval_seconds`.",
    )
    max_body_bytes: int = Field(
        default=65536, ge=0, le=16 * 1024 * 1024, description="Body bytes read at most."
    )

    _parse_status = field_validator("expect_status", mode="before")(status_ranges)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not PATH.match(value):
            raise ValueError(f"{value!r} must start with / and contain no spaces or controls")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.match(name):
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


class ServiceProbeSettings(Section):
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
        return None if value is None else status_ranges(value)
