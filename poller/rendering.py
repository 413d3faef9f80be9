"""Rendering the HAProxy config from the pool. Pure: text in, text out.

The config is regenerated whole every time from the sorted members, with server names
derived from address and port only, so the same pool always gives the same bytes and
nothing a node sent can reach the file. Jinja2 runs with StrictUndefined: a missing
variable is an error that names the template line, never an empty string.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from poller.config import HAProxySettings, ProbeSettings
from poller.errors import TemplateError

BUILTIN_TEMPLATE = "haproxy.cfg.j2"
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:%?=&+,;@!~*()\[\]-]+$")


@dataclass(frozen=True, order=True)
class Server:
    """One backend server as HAProxy knows it: the only member facts a config may carry."""

    address: str
    port: int

    @property
    def name(self) -> str:
        return server_name(self.address, self.port)

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def server_name(address: str, port: int) -> str:
    """`n_192_168_42_11_3000`: stable, from ip:port only, a valid HAProxy identifier."""
    packed = ipaddress.ip_address(address)
    text = packed.exploded.replace(".", "_").replace(":", "_")
    return f"n_{text}_{port}"


def sort_servers(servers: Iterable[Server]) -> list[Server]:
    def key(server: Server) -> tuple[int, int, int]:
        address = ipaddress.ip_address(server.address)
        return address.version, int(address), server.port

    return sorted(set(servers), key=key)


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
    return (
        f"check inter {settings.check_interval_ms}ms fall {settings.check_fall} "
        f"rise {settings.check_rise} pool-max-conn -1 pool-purge-delay 5s"
    )


@dataclass(frozen=True)
class Template:
    name: str
    source: str


def load_template(path: Path | None) -> Template:
    """The operator's template, or the built-in one."""
    if path is None:
        source = resources.files("poller.templates").joinpath(BUILTIN_TEMPLATE).read_text()
        return Template(BUILTIN_TEMPLATE, source)
    try:
        return Template(str(path), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), f"cannot read the template: {exc}") from exc


def context(
    haproxy: HAProxySettings, probe: ProbeSettings, servers: Iterable[Server]
) -> dict[str, Any]:
    return {
        "members": [
            {"name": s.name, "address": s.address, "port": s.port, "endpoint": s.endpoint}
            for s in sort_servers(servers)
        ],
        "backend": haproxy.backend,
        "frontend_bind": haproxy.frontend_bind,
        "stats_bind": haproxy.stats_bind,
        "admin_socket": str(haproxy.admin_socket),
        "log_target": haproxy.log_target,
        "retries": haproxy.retries,
        "retry_on": haproxy.retry_on,
        "server_options": server_options(haproxy),
        "check": {
            "method": probe.method,
            "path": probe.path,
            "headers": sorted(probe.headers.items()),
        },
        "vars": dict(haproxy.template_vars),
    }


def render(template: Template, variables: Mapping[str, Any]) -> str:
    """Render, or raise TemplateError naming the template line."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["hq"] = haproxy_quote
    try:
        compiled = environment.from_string(template.source)
        text = compiled.render(**variables)
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
