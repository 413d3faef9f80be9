"""Rendering: deterministic bytes, names from ip:port only, clear template errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.applying.planning import servers_in_file
from poller.config import load_settings
from poller.endpoints import Endpoint as Server
from poller.errors import TemplateError
from poller.rendering import (
    Template,
    context,
    haproxy_quote,
    load_template,
    render,
)

SETTINGS = load_settings(None, environ={})
BUILTIN = load_template(None)


def rendered(servers: list[Server], template: Template = BUILTIN) -> str:
    return render(template, context(SETTINGS.haproxy, SETTINGS.probe, servers))


addresses = st.builds(
    lambda a, b, port: Server(f"10.0.{a}.{b}", port),
    st.integers(0, 255),
    st.integers(1, 254),
    st.sampled_from([3000, 8080]),
)


@given(st.lists(addresses, max_size=20), st.randoms())
def test_same_pool_same_bytes_in_any_order(servers: list[Server], rnd: object) -> None:
    shuffled = list(servers)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rendered(servers) == rendered(shuffled)


@given(st.lists(addresses, max_size=20))
def test_rendered_servers_can_be_read_back(servers: list[Server]) -> None:
    assert servers_in_file(rendered(servers)) == sorted(
        set(servers), key=lambda s: (tuple(int(x) for x in s.address.split(".")), s.port)
    )


def test_servers_are_sorted_numerically_with_stable_names() -> None:
    text = rendered([Server("192.168.42.100", 3000), Server("192.168.42.9", 3000)])
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]
    assert lines == [
        "server n_192_168_42_9_3000 192.168.42.9:3000 check inter 500ms fastinter 100ms "
        "fall 2 rise 1 pool-max-conn -1 pool-purge-delay 5s",
        "server n_192_168_42_100_3000 192.168.42.100:3000 check inter 500ms fastinter 100ms "
        "fall 2 rise 1 pool-max-conn -1 pool-purge-delay 5s",
    ]


def test_the_original_lab_is_in_the_builtin_template() -> None:
    text = rendered([])
    for needle in (
        "bind :80",
        "bind :1936",
        "stats uri /",
        "backend nodes",
        "balance roundrobin",
        "option httpchk",
        "option forwardfor",
        "http-request set-header X-Forwarded-Port %[dst_port]",
        "option idle-close-on-response",
        "option redispatch",
        "retries 3",
        "expose-fd listeners",
        "master-worker",
    ):
        assert needle in text
    assert "retry-on" not in text


def test_retry_on_is_opt_in() -> None:
    settings = load_settings(None, environ={"POLLER_HAPROXY__RETRY_ON": "true"})
    text = render(BUILTIN, context(settings.haproxy, settings.probe, []))
    assert "retry-on all-retryable-errors" in text


def test_ipv6_names_and_endpoints() -> None:
    server = Server("fd00::1", 3000)
    assert server.name == "n_fd00_0000_0000_0000_0000_0000_0000_0001_3000"
    assert str(server) == "[fd00::1]:3000"
    assert Server("10.0.0.1", 80).name == "n_10_0_0_1_80"


def test_probe_headers_are_quoted_as_one_word() -> None:
    settings = load_settings(None, environ={"POLLER_PROBE__HEADERS": "{Host: app example}"})
    text = render(BUILTIN, context(settings.haproxy, settings.probe, []))
    assert "http-check send meth GET uri / hdr Host 'app example'" in text


@pytest.mark.parametrize(
    ("value", "expected"), [("/healthz", "/healthz"), ("a b", "'a b'"), ("#x", "'#x'")]
)
def test_haproxy_quote(value: str, expected: str) -> None:
    assert haproxy_quote(value) == expected


def test_haproxy_quote_refuses_what_cannot_be_one_word() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        haproxy_quote("it's")


def test_undefined_variable_names_the_template_line(tmp_path: Path) -> None:
    template = Template("mine.j2", "global\n    maxconn 100\n    nbthread {{ threads }}\n")
    with pytest.raises(TemplateError) as caught:
        render(template, {})
    assert str(caught.value).startswith("mine.j2:3: cannot render: 'threads' is undefined")


def test_syntax_error_names_the_template_line() -> None:
    template = Template("mine.j2", "global\n{% for x in %}\n")
    with pytest.raises(TemplateError, match=r"^mine\.j2:2: template syntax"):
        render(template, {})


def test_unreadable_template_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"nope\.j2: cannot read the template"):
        load_template(tmp_path / "nope.j2")


def test_template_vars_reach_custom_templates() -> None:
    settings = load_settings(None, environ={"POLLER_HAPROXY__TEMPLATE_VARS": "{maxconn: 500}"})
    template = Template("t.j2", "maxconn {{ vars.maxconn }}\n")
    assert render(template, context(settings.haproxy, settings.probe, [])) == "maxconn 500\n"
