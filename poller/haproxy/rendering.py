"""Rendering the HAProxy config from the pool. Pure: text in, text out.

The config is regenerated whole every time from the sorted members, with server names
derived from address and port only, so the same pool always gives the same bytes and
nothing a node sent can reach the file. Jinja2 runs with StrictUndefined: a missing
variable is an error that names the template line, never an empty string.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from poller.config import HAProxySettings, ProbeSettings, Settings
from poller.endpoints import Endpoint, ordered
from poller.errors import TemplateError

BUILTIN_TEMPLATE = "haproxy.cfg.j2"
BACKENDS_TEMPLATE = "backends.cfg.j2"  # haproxy.mode: backends
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:%?=&+,;@!~*()\[\]-]+$")


def haproxy_quote(value: object) -> str:
    """A value as one HAProxy config word: bare when plain, else single-quoted (no
    expansion or escapes happen inside single quotes)."""
    text = str(value)
    if _SAFE_WORD.match(text):
        return text
    if "'" in text or "\n" in text or "\r" in text:
        raise ValueError(f"{text!r} cannot be written as one HAProxy word")
    return f"'{text}'"


def server_options(settings: HAProxySettings) -> str:
    """Options of every server line, and of every runtime `add server` (dynamic servers
    inherit no default-server, so both must spell them out identically)."""
    options = (
        f"check inter {settings.check_interval_ms}ms fastinter {settings.check_fastinter_ms}ms "
        f"fall {settings.check_fall} rise {settings.check_rise} "
        "pool-max-conn -1 pool-purge-delay 5s"
    )
    if settings.slowstart_seconds is not None:
        options += f" slowstart {round(settings.slowstart_seconds * 1000)}ms"
    return options


@dataclass(frozen=True)
class Template:
    name: str
    source: str


def load_template(path: Path | None, mode: str = "whole") -> Template:
    """The operator's template, or the built-in one of the mode (`whole` or `backends`)."""
    if path is None:
        name = BACKENDS_TEMPLATE if mode == "backends" else BUILTIN_TEMPLATE
        return Template(name, resources.files("poller.templates").joinpath(name).read_text())
    try:
        return Template(str(path), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), f"cannot read the template: {exc}") from exc


def context(
    settings: Settings,
    servers: Mapping[str, Collection[Endpoint]] | Collection[Endpoint],
    disabled: Collection[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The template's variables. `servers`: per backend, or one collection for the first
    (or only) service's backend. `members`, `backend` and `check` are the first
    service's, so a template written for one service keeps working. `disabled`: the
    (backend, name) of servers an operator put aside, listed `disabled` so a reload
    keeps them out of rotation."""
    haproxy = settings.haproxy
    services = settings.resolved_services
    by_backend = servers if isinstance(servers, Mapping) else {services[0].backend: servers}
    described = [
        {
            "name": service.name,
            "backend": service.backend,
            "members": _members(
                by_backend.get(service.backend, ()),
                {name for backend, name in disabled if backend == service.backend},
            ),
            "hosts": list(service.hosts),
            "path_prefix": service.path_prefix,
            "default": service.default,
            "check": _check(service.probe),
        }
        for service in services
    ]
    default = next((s["backend"] for s in described if s["default"]), None)
    return {
        "services": described,
        "default_backend": default,
        "members": described[0]["members"],
        "backend": described[0]["backend"],
        "frontend_bind": haproxy.frontend_bind,
        "stats_bind": haproxy.stats_bind,
        "admin_socket": str(haproxy.admin_socket),
        "log_target": haproxy.log_target,
        "retries": haproxy.retries,
        "retry_on": haproxy.retry_on,
        "connect_timeout_ms": haproxy.connect_timeout_ms,
        "check_timeout_ms": haproxy.check_interval_ms,
        "server_options": server_options(haproxy),
        "check": described[0]["check"],
        "vars": dict(haproxy.template_vars),
    }


def _members(servers: Collection[Endpoint], disabled: Collection[str]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "address": s.address,
            "port": s.port,
            "endpoint": str(s),
            "disabled": s.name in disabled,
        }
        for s in ordered(servers)
    ]


def _check(probe: ProbeSettings) -> dict[str, Any]:
    return {
        "method": probe.method,
        "path": probe.path,
        "headers": sorted(probe.headers.items()),
        # HAProxy's check accepts what poller's probe accepts (its own default: 2xx, 3xx).
        "expect_status": ",".join(
            str(low) if low == high else f"{low}-{high}" for low, high in probe.expect_status
        ),
    }


_ENVIRONMENT = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_ENVIRONMENT.filters["hq"] = haproxy_quote


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> jinja2.Template:
    """Templates are compiled once: the daemon renders on every reconcile."""
    return _ENVIRONMENT.from_string(source)


def render(template: Template, variables: Mapping[str, Any]) -> str:
    """Render, or raise TemplateError naming the template line."""
    try:
        text = _compiled(template.source).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"{template.name}:{exc.lineno}", f"template syntax: {exc.message}"
        ) from exc
    except (jinja2.UndefinedError, ValueError, TypeError) as exc:
        line = _template_line(exc)
        where = f"{template.name}:{line}" if line else template.name
        raise TemplateError(where, f"cannot render: {exc}") from exc
    return text if text.endswith("\n") else text + "\n"


def _template_line(exc: BaseException) -> int | None:
    """Jinja2 rewrites tracebacks so template frames carry template line numbers."""
    line = None
    tb = exc.__traceback__ or sys.exc_info()[2]
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
