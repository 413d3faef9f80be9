"""Config loading: defaults, precedence, and a clear error for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import Settings, load_settings, parse_status_ranges
from poller.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "poller.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_the_builtin_default_plus_identity_and_two_services() -> None:
    shipped = load_settings(ROOT / "config" / "poller.yaml", environ={})
    assert shipped.probe.identity is not None
    assert shipped.probe.identity.json_field == "host"
    web, api = shipped.resolved_services
    assert (web.name, web.ports, web.backend, web.default) == ("web", (3000,), "nodes", True)
    assert (api.name, api.ports, api.backend, api.path_prefix) == ("api", (3001,), "api", "/api")
    # The lab's subnet is named, never a default: poller sweeps nothing unless told to.
    assert shipped.discovery.subnets == ("192.168.42.0/24",)
    assert shipped.discovery.exclude == ("192.168.42.1", "192.168.42.42")
    # The rest is the built-in default: one service on port 3000, backend `nodes`.
    defaults = Settings()
    assert defaults.discovery.subnets == ()
    update = {
        "probe": defaults.probe,
        "services": (),
        "haproxy": defaults.haproxy,
        "discovery": defaults.discovery,
    }
    assert shipped.discovery.model_copy(update={"subnets": (), "exclude": ()}) == (
        defaults.discovery
    )
    assert shipped.haproxy == defaults.haproxy
    assert shipped.model_copy(update=update) == defaults


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), environ={}) == Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.pool.rise = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("discovery:\n  ports: [3000\n", "poller.yaml:3", "malformed YAML"),
        (
            "probe:\n  timout_seconds: 0.2\n",
            "poller.yaml:2: probe.timout_seconds",
            "unknown key (known: scheme",
        ),
        (
            "pools:\n  rise: 2\n",
            "poller.yaml:1: pools",
            "unknown key (known: discovery, probe, pool, guard, haproxy, status, state, services)",
        ),
        (
            "discovery:\n  subnets: [10.0.0.0/33]\n",
            "discovery.subnets",
            "'10.0.0.0/33' is not a CIDR",
        ),
        ("discovery:\n  subnets: [10.0.0.1]\n", "discovery.subnets", "has no prefix length"),
        ("discovery:\n  subnets: [auto, 10.0.0.0/24]\n", "discovery.subnets", "cannot be combined"),
        (
            "discovery:\n  exclude: [10.0.0.300]\n",
            "discovery.exclude",
            "'10.0.0.300' is not an address",
        ),
        (
            "discovery:\n  ports: [3000, 70000]\n",
            "poller.yaml:2: discovery.ports.1",
            "65535 (got 70000)",
        ),
        ("discovery:\n  ports: [3000, 3000]\n", "discovery.ports", "ports repeat"),
        ("discovery:\n  ports: []\n", "discovery.ports", "at least 1 item"),
        ("pool:\n  rise: 0\n", "poller.yaml:2: pool.rise", "greater than or equal to 1 (got 0)"),
        ("pool:\n  fall: two\n", "pool.fall", "valid integer"),
        (
            "probe:\n  timeout_seconds: 2\npool:\n  interval_seconds: 2\n",
            "poller.yaml: settings",
            "probe.timeout_seconds (2) must be shorter than pool.interval_seconds (2)",
        ),
        ("probe:\n  method: POST\n", "probe.method", "'GET' or 'HEAD'"),
        ("probe:\n  path: health\n", "probe.path", "must start with /"),
        ("probe:\n  expect_status: 2xx\n", "probe.expect_status", "'2xx' is not a status code"),
        ("probe:\n  expect_status: 399-200\n", "probe.expect_status", "low <= high"),
        ("probe:\n  identity: {}\n", "probe.identity", "exactly one of"),
        ("probe:\n  identity: {json_field: host, header: x-id}\n", "probe.identity", "exactly one"),
        ("probe:\n  method: HEAD\n  expect_body: ok\n", "probe", "method HEAD returns no body"),
        ("probe:\n  headers: {'bad name': x}\n", "probe.headers", "not a valid header name"),
        ("probe:\n  scheme: ftp\n", "probe.scheme", "'http' or 'https'"),
        ("discovery:\n  subnets: []\n", "discovery.subnets", "at least one subnet"),
        ("pool:\n  rise: 2\n  rise: 3\n", "poller.yaml:3: pool.rise", "key repeated"),
        ("- a\n- b\n", "poller.yaml", "top level must be a mapping"),
    ],
)
def test_bad_input_names_the_field_and_value(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    message = str(caught.value)
    assert where in message
    assert problem in message
    assert "\n" not in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "pool:\n  rise: 3\n  fall: 4\nprobe:\n  timeout_seconds: 0.2\n")
    env = {"POLLER_POOL__RISE": "5", "POLLER_PROBE__TIMEOUT_SECONDS": "0.3"}
    settings = load_settings(path, environ=env, overrides={"probe": {"timeout_seconds": 0.4}})
    assert settings.pool.rise == 5  # env beats file
    assert settings.pool.fall == 4  # file beats default
    assert settings.probe.timeout_seconds == 0.4  # flag beats env


def test_env_values_are_yaml_and_lists_accept_commas() -> None:
    env = {
        "POLLER_DISCOVERY__PORTS": "3000,8080",
        "POLLER_DISCOVERY__SUBNETS": "10.0.0.0/24, 10.0.1.0/24",
        "POLLER_PROBE__IDENTITY": "{header: x-backend-ip}",
        "POLLER_PROBE__HEADERS": "{Host: app.example}",
        "UNRELATED": "x",
    }
    settings = load_settings(None, environ=env)
    assert settings.discovery.ports == (3000, 8080)
    assert settings.discovery.subnets == ("10.0.0.0/24", "10.0.1.0/24")
    assert settings.probe.identity is not None
    assert settings.probe.identity.header == "x-backend-ip"
    assert settings.probe.headers == {"Host": "app.example"}


@pytest.mark.parametrize(
    ("env", "where", "problem"),
    [
        ({"POLLER_POOL__RISE": "0"}, "POLLER_POOL__RISE", "greater than or equal to 1"),
        ({"POLLER_POOL__RIZE": "2"}, "POLLER_POOL__RIZE", "unknown key"),
        ({"POLLER_POLL__RISE": "2"}, "POLLER_POLL__RISE", "unknown section 'poll'"),
        (
            {"POLLER_DISCOVERY__PORTS": "3000,0"},
            "POLLER_DISCOVERY__PORTS (discovery.ports.1)",
            "got '0'",
        ),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=env)
    assert where in str(caught.value)
    assert problem in str(caught.value)


def test_flag_errors_name_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"command line \(discovery\.concurrency\)"):
        load_settings(None, environ={}, overrides={"discovery": {"concurrency": 0}})


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        ("200-299", ((200, 299),)),
        (200, ((200, 200),)),
        ("200,204", ((200, 200), (204, 204))),
        ([204, "300-399"], ((204, 204), (300, 399))),
        ("200-399, 200-399", ((200, 399),)),
    ],
)
def test_status_ranges(value: object, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_status_ranges(value) == ranges


def test_status_ok_uses_ranges() -> None:
    settings = load_settings(None, environ={"POLLER_PROBE__EXPECT_STATUS": "200,300-302"})
    assert [settings.probe.status_ok(code) for code in (200, 201, 301, 303)] == [
        True,
        False,
        True,
        False,
    ]


# The whole message, exactly as `poller` prints it after "poller: " (file paths relative
# to the config's directory): each names the place and the value.
EXACT = [
    (
        "probe: 3\n",
        "poller.yaml:1: probe: Input should be a valid dictionary or instance of "
        "ProbeSettings (got 3)",
    ),
    (
        "probe:\n  expect_status: 600\n",
        "poller.yaml:2: probe.expect_status: '600' is not within 100-599 with low <= high",
    ),
    (
        "probe:\n  expect_status: 200-100\n",
        "poller.yaml:2: probe.expect_status: '200-100' is not within 100-599 with low <= high",
    ),
    (
        "probe:\n  expect_status: []\n",
        "poller.yaml:2: probe.expect_status: at least one status code is needed (got [])",
    ),
    (
        "discovery:\n  exclude: [10.0.0.9-10.0.0.5]\n",
        "poller.yaml:2: discovery.exclude: '10.0.0.9-10.0.0.5' is not an address, CIDR or range",
    ),
    (
        "discovery:\n  exclude: [10.0.0.5-10.0.0.9-10.0.0.12]\n",
        "poller.yaml:2: discovery.exclude: '10.0.0.5-10.0.0.9-10.0.0.12' is not an address, "
        "CIDR or range",
    ),
    (
        "discovery:\n  exclude: [10.0.0]\n",
        "poller.yaml:2: discovery.exclude: '10.0.0' is not an address, CIDR or range",
    ),
    (
        "discovery:\n  subnets: [10.0.0.0/24]\n  exclude: [{a: 1, a: 2}]\n",
        "poller.yaml:3: discovery.exclude.a: key repeated",
    ),
    (
        "probe:\n  headers: {x-a: '1'}\n  identity: {header: x, header: y}\n",
        "poller.yaml:3: probe.identity.header: key repeated",
    ),
    (
        "discovery:\n  subnets: [10.0.0.0/24, 10.0.1.0/24, 10.0.2.0/33]\n",
        # The bad item is named once: no "(got [...])" repeating it.
        "poller.yaml:2: discovery.subnets: '10.0.2.0/33' is not a CIDR subnet",
    ),
    (
        "discovery:\n  ports: [3000\n",
        "poller.yaml:3: malformed YAML: expected ',' or ']', but got '<stream end>'",
    ),
    ("- a\n- b\n", "poller.yaml: the top level must be a mapping of sections"),
    (
        "pool:\n  rise: 0\n",
        "poller.yaml:2: pool.rise: Input should be greater than or equal to 1 (got 0)",
    ),
]


@pytest.mark.parametrize(("text", "message"), EXACT)
def test_the_whole_message_as_users_read_it(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert str(caught.value).replace(f"{tmp_path}/", "") == message


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "poller.yaml"
    path.write_bytes(b"probe:\n  path: /\xff\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == f"{path}: is not UTF-8 text"


@pytest.mark.parametrize(
    ("value", "ranges"),
    [("100", ((100, 100),)), ("599", ((599, 599),)), ("100-599", ((100, 599),))],
)
def test_status_codes_span_100_to_599(value: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_status_ranges(value) == ranges


@pytest.mark.parametrize("value", ["99", "600", "0-200", "500-600"])
def test_status_codes_outside_100_to_599_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_status_ranges(value)


def test_an_exclude_range_is_inclusive_at_both_ends() -> None:
    settings = load_settings(
        None, environ={}, overrides={"discovery": {"exclude": ["10.0.0.5-10.0.0.9"]}}
    )
    from poller.discovery.targets import parse_address_set_item

    assert parse_address_set_item(settings.discovery.exclude[0]).size == 5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POLLER___RISE": "1"}, "POLLER___RISE: expected POLLER_SECTION__KEY"),
        ({"POLLER_POOL__": "1"}, "POLLER_POOL__: expected POLLER_SECTION__KEY"),
        ({"POLLER_POOL__RISE__X": "1"}, "POLLER_POOL__RISE__X: expected POLLER_SECTION__KEY"),
        ({"POLLER_POOL__RISE": "[1"}, "POLLER_POOL__RISE: not a YAML value: '[1'"),
    ],
)
def test_malformed_variables_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=env)
    assert str(caught.value) == message


def test_variables_outside_the_scheme_are_ignored_and_each_one_counts() -> None:
    env = {"POLLER_POOL": "9", "POLLERX__Y": "1", "OTHER__X": "2"}
    env |= {"POLLER_POOL__RISE": "3", "POLLER_POOL__FALL": "4"}
    settings = load_settings(None, environ=env)
    assert (settings.pool.rise, settings.pool.fall) == (3, 4)


def test_without_a_file_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLER_POOL__RISE", "4")
    assert load_settings(None).pool.rise == 4


def test_a_section_the_environment_adds_to_must_be_a_mapping_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "pool: []\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"POLLER_POOL__RISE": "2"})
    assert str(caught.value) == f"{path}: pool: must be a mapping"


TWO_SERVICES = """\
services:
  - name: web
    ports: [3000]
    route: {default: true}
  - name: api
    ports: [3001]
    probe: {path: /healthz}
    route: {path_prefix: /api, host: [API.example.com, api.local]}
"""


def test_services_are_filled_in_from_the_top_level_settings(tmp_path: Path) -> None:
    text = "probe:\n  headers: {X-Probe: '1'}\n  timeout_seconds: 0.3\n" + TWO_SERVICES
    settings = load_settings(write(tmp_path, text), environ={})
    web, api = settings.resolved_services
    assert (web.name, web.ports, web.backend, web.default) == ("web", (3000,), "web", True)
    assert (api.backend, api.hosts, api.path_prefix, api.default) == (
        "api",
        ("api.example.com", "api.local"),
        "/api",
        False,
    )
    assert (web.probe.path, api.probe.path) == ("/", "/healthz")
    assert api.probe.headers == {"X-Probe": "1"}  # inherited
    assert api.probe.timeout_seconds == 0.3
    assert settings.ports() == (3000, 3001)


def test_without_services_the_top_level_settings_are_one_service() -> None:
    settings = load_settings(None, environ={})
    (only,) = settings.resolved_services
    assert (only.name, only.ports, only.backend, only.default) == (
        "default",
        (3000,),
        "nodes",
        True,
    )
    assert only.probe == settings.probe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services:\n  - {name: web, ports: [3000]}\n  - {name: web, ports: [3001]}\n",
            "services.0 (web) and services.1: the same name",
        ),
        (
            "services:\n  - {name: a, ports: [1], backend: b, route: {default: true}}\n"
            "  - {name: b, ports: [2], route: {path_prefix: /b}}\n",
            "services.0 (a) and services.1 (b): the same backend 'b'",
        ),
        (
            "services:\n  - {name: a, ports: [3000], route: {default: true}}\n"
            "  - {name: b, ports: [3000, 3001], route: {path_prefix: /b}}\n",
            "services.0 (a) and services.1 (b) share port 3000 and probe it the same way, so a "
            "node there would join both: give one of them another probe.path, "
            "probe.expect_body, probe.identity or probe.headers, or another port",
        ),
        (
            "services:\n  - {name: a, ports: [1], route: {default: true}}\n"
            "  - {name: b, ports: [2], route: {default: true}}\n",
            "route.default is set by services.0 (a), services.1 (b): one at most",
        ),
        (
            "services:\n  - {name: a, ports: [1], route: {default: true}}\n"
            "  - {name: b, ports: [2]}\n",
            "services.1 (b): no route (set route.host, route.path_prefix or route.default), "
            "so no request would reach it",
        ),
        (
            "discovery:\n  ports: [3000]\nservices:\n  - {name: a, ports: [1]}\n",
            "discovery.ports (or --port, POLLER_DISCOVERY__PORTS) is not used with services: "
            "give each service its ports",
        ),
        (
            "haproxy:\n  backend: x\nservices:\n  - {name: a, ports: [1]}\n",
            "haproxy.backend is not used with services: give each service its backend",
        ),
    ],
)
def test_services_that_cannot_be_told_apart_or_reached_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert str(caught.value).replace(f"{tmp_path}/", "") == f"poller.yaml: settings: {message}"


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "services:\n  - {name: Web, ports: [1]}\n",
            "poller.yaml:2: services.0.name",
            "not a service name",
        ),
        ("services:\n  - {name: a}\n", "poller.yaml:2: services.0.ports", "Field required"),
        (
            "services:\n  - name: a\n    ports: [1]\n    probe: {scheme: https}\n",
            "poller.yaml:4: services.0.probe.scheme",
            "unknown key (known: method, path, expect_status, expect_body, headers, identity)",
        ),
        (
            "services:\n  - name: a\n    ports: [1]\n    route: {host: ['a b']}\n",
            "poller.yaml:4: services.0.route.host",
            "'a b' is not a host name",
        ),
        (
            "services:\n  - name: a\n    ports: [1]\n    route: {path_prefix: api}\n",
            "poller.yaml:4: services.0.route.path_prefix",
            "'api' must start with /",
        ),
        ("services:\n  - {name: a, ports: [1], colour: red}\n", "services.0.colour", "unknown key"),
    ],
)
def test_bad_service_keys_name_the_service_and_the_line(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert where in str(caught.value)
    assert problem in str(caught.value)


def test_services_cannot_come_from_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"POLLER_SERVICES__NAME": "web"})
    assert str(caught.value) == (
        "POLLER_SERVICES__NAME: services are a list: set them in the YAML file"
    )


def test_a_copy_with_other_services_resolves_its_own() -> None:
    """Services are resolved once per settings object; a copy made with other sections
    must not keep the original's."""
    from poller.config import ServiceSettings

    settings = load_settings(None, environ={})
    assert [s.name for s in settings.resolved_services] == ["default"]
    web = ServiceSettings(name="web", ports=(8080,))
    copied = settings.model_copy(update={"services": (web,)})
    assert [s.name for s in copied.resolved_services] == ["web"]
    assert copied.ports() == (8080,)
    assert [s.name for s in settings.resolved_services] == ["default"]
    deep = settings.model_copy(deep=True)
    assert deep == settings
    assert deep.probe.headers is not settings.probe.headers  # a deep copy, as asked
    assert settings.model_copy().probe.headers is settings.probe.headers  # else shallow
    fresh = load_settings(None, environ={})
    assert fresh.model_copy().resolved_services == fresh.resolved_services  # never resolved
