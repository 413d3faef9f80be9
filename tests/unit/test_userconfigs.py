"""`haproxy.mode: backends`: what poller reads from the config files a user keeps, the
settings that choose the mode, and the backends-only file it renders. (HAProxy's own
verdict on the combination is tests/integration/test_backends_mode.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import load_settings
from poller.errors import ConfigError
from poller.haproxy import userconfigs
from poller.haproxy.configs import check_user_configs
from poller.haproxy.rendering import context, load_template, render

SOCKET = Path("/var/run/haproxy/admin.sock")
GOOD = """\
global
    master-worker
    stats socket /var/run/haproxy/admin.sock mode 660 level admin expose-fd listeners

defaults
    mode http

frontend www
    bind :443 ssl crt /etc/ssl/site.pem
    use_backend api if { path_beg /api }   # a comment
    default_backend web

backend static
    server s1 10.1.0.5:80
"""


def check(text: str, backends: tuple[str, ...] = ("web", "api")) -> userconfigs.Findings:
    return userconfigs.check({"haproxy.cfg": text}, SOCKET, backends)


def test_a_file_with_what_poller_needs_has_no_findings() -> None:
    found = check(GOOD)
    assert (found.errors, found.warnings) == ([], [])


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            ("stats socket /var/run/haproxy/admin.sock", "stats socket /run/other.sock"),
            "no `stats socket /var/run/haproxy/admin.sock` in the global section",
        ),
        (
            ("level admin", "level operator"),
            "haproxy.cfg:3: the admin socket is not at `level admin`",
        ),
        (("level admin ", ""), "haproxy.cfg:3: the admin socket is not at `level admin`"),
        (
            ("backend static", "backend web"),
            "haproxy.cfg:13 defines `web`, a backend poller writes",
        ),
        (("backend static", "listen api"), "haproxy.cfg:13 defines `api`, a backend poller writes"),
    ],
)
def test_what_poller_cannot_work_without_is_an_error_naming_the_line(
    change: tuple[str, str], error: str
) -> None:
    found = check(GOOD.replace(*change))
    assert len(found.errors) == 1
    assert found.errors[0].startswith(error), found.errors


def test_the_error_shows_the_line_to_add() -> None:
    [error] = check(GOOD.replace("level admin", "level user")).errors
    assert error.endswith(
        "\n    stats socket /var/run/haproxy/admin.sock mode 660 level admin expose-fd listeners"
    )


def test_a_socket_line_outside_global_or_commented_out_does_not_count() -> None:
    moved = GOOD.replace(
        "    stats socket /var/run/haproxy/admin.sock mode 660 level admin expose-fd listeners\n",
        "    # stats socket /var/run/haproxy/admin.sock level admin\n",
    )
    assert check(moved).errors[0].startswith("no `stats socket")
    elsewhere = moved + "    stats socket /var/run/haproxy/admin.sock level admin\n"
    assert check(elsewhere).errors[0].startswith("no `stats socket")


def test_the_socket_may_be_written_with_its_unix_prefix() -> None:
    prefixed = GOOD.replace("socket /var", "socket unix@/var")
    assert check(prefixed).errors == []


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        (
            (" expose-fd listeners", ""),
            "haproxy.cfg:3: the admin socket lacks `expose-fd listeners`",
        ),
        (
            ("    default_backend web\n", ""),
            "no `use_backend web` or `default_backend web` in haproxy.cfg",
        ),
    ],
)
def test_what_may_not_work_as_expected_is_a_warning(change: tuple[str, str], warning: str) -> None:
    found = check(GOOD.replace(*change))
    assert found.errors == []
    assert len(found.warnings) == 1
    assert found.warnings[0].startswith(warning), found.warnings


def test_a_backend_chosen_by_an_expression_may_be_any_so_none_is_warned_about() -> None:
    dynamic = GOOD.replace("    default_backend web\n", "    use_backend %[req.hdr(host)]\n")
    assert check(dynamic).warnings == []


def test_findings_name_each_file_and_the_socket_may_be_in_any_of_them() -> None:
    first = "global\n    stats socket /var/run/haproxy/admin.sock level admin expose-fd listeners\n"
    second = "frontend www\n    default_backend web\nbackend api\n    server x 10.0.0.1:80\n"
    found = userconfigs.check({"global.cfg": first, "sites.cfg": second}, SOCKET, ["web", "api"])
    assert found.errors == [
        "sites.cfg:3 defines `api`, a backend poller writes: rename one of them "
        "(services[].backend, or haproxy.backend without services)"
    ]


# -- the settings that choose the mode ---------------------------------------------------------


def settings(**haproxy: object) -> object:
    return load_settings(
        None, environ={}, overrides={"discovery": {"subnets": ["10.0.0.0/24"]}, "haproxy": haproxy}
    )


@pytest.mark.parametrize(
    ("haproxy", "message"),
    [
        ({"mode": "backends"}, "mode `backends` needs user_configs"),
        ({"user_configs": ["/etc/haproxy/haproxy.cfg"]}, "user_configs is only read with mode"),
        (
            {
                "mode": "backends",
                "user_configs": ["/usr/local/etc/haproxy/haproxy.cfg"],
            },
            "config_path (/usr/local/etc/haproxy/haproxy.cfg) is one of user_configs",
        ),
        ({"mode": "partial"}, "haproxy.mode"),
    ],
)
def test_mode_and_files_must_agree(haproxy: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(**haproxy)
    assert message in str(refused.value)


def test_unreadable_user_files_are_a_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.cfg"
    chosen = load_settings(
        None,
        environ={},
        overrides={
            "discovery": {"subnets": ["10.0.0.0/24"]},
            "haproxy": {"mode": "backends", "user_configs": [str(missing)]},
        },
    )
    with pytest.raises(ConfigError) as refused:
        check_user_configs(chosen.haproxy, ["nodes"])
    assert str(refused.value) == (
        f"haproxy.user_configs: {missing}: cannot read: No such file or directory"
    )
    missing.write_text(GOOD.replace("level admin", "level user"))
    with pytest.raises(ConfigError, match="not at `level admin`"):
        check_user_configs(chosen.haproxy, ["nodes"])
    missing.write_text(GOOD)
    assert check_user_configs(chosen.haproxy, ["nodes"]) == [
        f"no `use_backend nodes` or `default_backend nodes` in {missing}: no traffic "
        "reaches poller's backend `nodes`"
    ]


def test_the_backends_mode_renders_only_poller_backends(tmp_path: Path) -> None:
    from poller.endpoints import Endpoint

    chosen = load_settings(
        None,
        environ={},
        overrides={
            "discovery": {"subnets": ["10.0.0.0/24"]},
            "haproxy": {"mode": "backends", "user_configs": [str(tmp_path / "theirs.cfg")]},
        },
    )
    template = load_template(chosen.haproxy.template, chosen.haproxy.mode)
    assert template.name == "backends.cfg.j2"
    text = render(template, context(chosen, [Endpoint("10.0.0.7", 3000)]))
    sections = [line for line in text.splitlines() if line[:1].isalpha()]
    assert sections == ["backend nodes"]
    assert "    mode http\n" in text
    assert "    server n_10_0_0_7_3000 10.0.0.7:3000 check inter 500ms" in text
    assert "    http-request disable-l7-retry unless METH_GET || METH_OPTIONS\n" in text
