"""Rendering: deterministic bytes, names from ip:port only, clear template errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from poller.applying.planning import servers_in_file
from poller.config import Settings, load_settings
from poller.endpoints import Endpoint as Server
from poller.errors import TemplateError
from poller.haproxy.rendering import (
    Template,
    context,
    haproxy_quote,
    load_template,
    render,
)

SETTINGS = load_settings(None, environ={})
BUILTIN = load_template(None)


def rendered(servers: list[Server], template: Template = BUILTIN) -> str:
    return render(template, context(SETTINGS, servers))


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
    assert servers_in_file(rendered(servers))["nodes"] == sorted(
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


@pytest.mark.parametrize(
    ("retry_on", "replays", "only_idempotent"),
    [
        (None, True, True),  # the default: idempotent
        ("idempotent", True, True),
        ("all", True, False),
        ("true", True, False),  # the old spelling of `all`
        ("off", False, False),
        ("false", False, False),
    ],
)
def test_retries_replay_only_idempotent_methods_unless_told_otherwise(
    retry_on: str | None, replays: bool, only_idempotent: bool
) -> None:
    environ = {} if retry_on is None else {"POLLER_HAPROXY__RETRY_ON": retry_on}
    text = render(BUILTIN, context(load_settings(None, environ=environ), []))
    assert ("retry-on all-retryable-errors" in text) is replays
    rule = "http-request disable-l7-retry unless METH_GET || METH_OPTIONS"
    assert (rule in text) is only_idempotent


def test_ipv6_names_and_endpoints() -> None:
    server = Server("fd00::1", 3000)
    assert server.name == "n_fd00_0000_0000_0000_0000_0000_0000_0001_3000"
    assert str(server) == "[fd00::1]:3000"
    assert Server("10.0.0.1", 80).name == "n_10_0_0_1_80"


def test_probe_headers_are_quoted_as_one_word() -> None:
    settings = load_settings(None, environ={"POLLER_PROBE__HEADERS": "{Host: app example}"})
    text = render(BUILTIN, context(settings, []))
    assert "http-check send meth GET uri / hdr Host 'app example'" in text


@pytest.mark.parametrize(
    ("value", "expected"), [("/healthz", "/healthz"), ("a b", "'a b'"), ("#x", "'#x'")]
)
def test_haproxy_quote(value: str, expected: str) -> None:
    assert haproxy_quote(value) == expected


@pytest.mark.parametrize("value", ["it's", "two\nlines", "carriage\rreturn", "a\n'b"])
def test_haproxy_quote_refuses_what_cannot_be_one_word(value: str) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        haproxy_quote(value)


@pytest.mark.parametrize("value", ["x\ny", "x\ry"])
def test_a_template_variable_with_a_line_break_never_reaches_the_file(value: str) -> None:
    """Template variables reach custom templates through `hq`: a line break in one would
    start a new HAProxy directive."""
    template = Template("mine.j2", "global\n    log {{ vars.target | hq }}\n")
    settings = load_settings(None, environ={})
    variables = context(settings, [])
    variables["vars"] = {"target": value}
    with pytest.raises(TemplateError, match=r"mine\.j2:2: cannot render"):
        render(template, variables)


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
    assert render(template, context(settings, [])) == "maxconn 500\n"


EVERY_VARIABLE = """\
{% for m in members %}{{ m.name }} {{ m.address }} {{ m.port }} {{ m.endpoint }}
{% endfor %}backend={{ backend }} frontend={{ frontend_bind }} stats={{ stats_bind }}
admin={{ admin_socket }} log={{ log_target }} retries={{ retries }} retry_on={{ retry_on }}
connect={{ connect_timeout_ms }} check={{ check_timeout_ms }}
options={{ server_options }}
probe={{ check.method }} {{ check.path }} {{ check.headers }}
vars={{ vars }}"""


def test_a_custom_template_sees_every_documented_variable() -> None:
    """docs/TEMPLATE.md's table of template variables, value by value (and a template that
    does not end its last line gets the newline HAProxy needs)."""
    settings = load_settings(
        None,
        environ={},
        overrides={
            "haproxy": {"template_vars": {"maxconn": 500}, "admin_socket": "/run/a.sock"},
            "probe": {"headers": {"Host": "app.example"}},
        },
    )
    servers = [Server("10.0.0.10", 3000), Server("fd00::1", 80)]
    text = render(Template("all.j2", EVERY_VARIABLE), context(settings, servers))
    h = settings.haproxy
    assert text == (
        "n_10_0_0_10_3000 10.0.0.10 3000 10.0.0.10:3000\n"
        "n_fd00_0000_0000_0000_0000_0000_0000_0001_80 fd00::1 80 [fd00::1]:80\n"
        f"backend=nodes frontend={h.frontend_bind} stats={h.stats_bind}\n"
        f"admin=/run/a.sock log={h.log_target} retries={h.retries} retry_on={h.retry_on}\n"
        f"connect={h.connect_timeout_ms} check={h.check_interval_ms}\n"
        f"options=check inter {h.check_interval_ms}ms fastinter {h.check_fastinter_ms}ms "
        f"fall {h.check_fall} rise {h.check_rise} pool-max-conn -1 pool-purge-delay 5s\n"
        "probe=GET / [('Host', 'app.example')]\n"
        "vars={'maxconn': 500}\n"
    )


def test_the_template_page_documents_every_template_variable() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "TEMPLATE.md").read_text()
    table = page.split("Template variables:", 1)[1].split("\n\n", 2)[1]
    documented = {name for row in table.splitlines() for name in row.split("|")[1].split("`")[1::2]}
    assert documented == set(context(SETTINGS, []))


def test_a_template_file_is_read_as_utf8_and_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.j2"
    path.write_text("# café {{ backend }}\n", encoding="utf-8")
    template = load_template(path)
    assert template == Template(str(path), "# café {{ backend }}\n")
    assert render(template, {"backend": "b"}) == "# café b\n"
    assert load_template(None).name == "haproxy.cfg.j2"


def test_a_filter_refusing_a_value_names_the_template_line() -> None:
    template = Template("mine.j2", "{{ members | hq }}\n")
    with pytest.raises(TemplateError) as caught:
        render(template, {"members": "a\nb"})
    assert str(caught.value).startswith("mine.j2:1: cannot render: ")


SERVICES_YAML = {
    "services": [
        {"name": "web", "ports": [3000], "backend": "nodes", "route": {"default": True}},
        {"name": "api", "ports": [3001], "route": {"path_prefix": "/api", "host": "API.example"}},
        {"name": "admin", "ports": [3002], "route": {"host": ["admin.local", "admin"]}},
    ]
}


def with_services(tmp_path: Path, data: dict[str, object]) -> Settings:
    path = tmp_path / "poller.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path, environ={})


def test_several_services_get_one_backend_each_and_frontend_rules_in_order(
    tmp_path: Path,
) -> None:
    settings = with_services(tmp_path, SERVICES_YAML)
    servers = {"nodes": [Server("10.0.0.2", 3000)], "api": [Server("10.0.0.3", 3001)]}
    text = render(BUILTIN, context(settings, servers))
    frontend = text.split("frontend localnodes\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.strip() for line in frontend] == [
        "bind :80",
        "acl api_host req.hdr(host),field(1,:) -i api.example",
        "acl api_path path_beg /api",
        "use_backend api if api_host api_path",  # host and path together
        "acl admin_host req.hdr(host),field(1,:) -i admin.local admin",
        "use_backend admin if admin_host",
        "default_backend nodes",
    ]
    assert servers_in_file(text) == {**servers, "admin": []}
    blocks = text.split("\nbackend ")[1:]
    assert [block.split("\n", 1)[0] for block in blocks] == ["nodes", "api", "admin"]


def test_one_service_renders_byte_for_byte_as_without_services(tmp_path: Path) -> None:
    one = {"services": [{"name": "web", "ports": [3000], "backend": "nodes"}]}
    settings = with_services(tmp_path, one)
    servers = [Server("10.0.0.2", 3000)]
    assert render(BUILTIN, context(settings, servers)) == rendered(servers)


def test_slowstart_is_a_server_option_off_by_default() -> None:
    assert "slowstart" not in rendered([Server("10.0.0.2", 3000)])
    settings = load_settings(None, environ={"POLLER_HAPROXY__SLOWSTART_SECONDS": "2.5"})
    text = render(BUILTIN, context(settings, [Server("10.0.0.2", 3000)]))
    (line,) = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert line.endswith(" slowstart 2500ms")
