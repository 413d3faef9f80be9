"""The command line as users meet it: exit codes, one-line errors, `auto` subnets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.processes import run_poller as poller
from tests.support.requirements import require_root


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["scan", "--port", "0"],
            3,
            "command line (discovery.ports.0): Input should be greater than or equal to 1",
        ),
        (
            ["scan", "--subnet", "10.0.0.0/8"],
            3,
            "discovery.max_targets: 10.0.0.0/8 x 1 port is 16,777,214 targets",
        ),
        (["scan", "--subnet", "nonsense"], 3, "'nonsense' is not a CIDR subnet"),
        (
            ["scan", "--timeout", "5"],
            3,
            "probe.timeout_seconds (5) must be shorter than pool.interval_seconds (1)",
        ),
        (["scan", "--concurrency", "lots"], 2, "invalid int value: 'lots'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (
            ["scan", "--config", "/nonexistent/poller.yaml"],
            3,
            "/nonexistent/poller.yaml: cannot read",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_an_exit_code(
    args: list[str], code: int, message: str
) -> None:
    run = poller(*args)
    assert run.returncode == code
    assert message in run.stderr
    assert run.stdout == ""
    if code == 3:
        assert run.stderr.count("\n") == 1
        assert run.stderr.startswith("poller: error: ")


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    run = poller("check-config", "--config", config(tmp_path, "pool:\n  rise: 2\n fall: 3\n"))
    assert run.returncode == 3
    assert "bad.yaml:3: malformed YAML" in run.stderr


def test_unknown_key_reports_its_path(tmp_path: Path) -> None:
    run = poller("scan", "--config", config(tmp_path, "probe:\n  identity:\n    jsonfield: host\n"))
    assert run.returncode == 3
    assert (
        "bad.yaml:3: probe.identity.jsonfield: unknown key (known: json_field, header)"
        in run.stderr
    )


def test_env_errors_name_the_variable() -> None:
    env = dict(os.environ, POLLER_POOL__RISE="0")
    run = poller("check-config", env=env)
    assert run.returncode == 3
    assert "POLLER_POOL__RISE: Input should be greater than or equal to 1" in run.stderr


def test_check_config_accepts_the_shipped_config() -> None:
    run = poller("check-config", "--config", "config/poller.yaml")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ok: 504 targets in 192.168.42.0/24, ports 3000, 3001\n"


def test_check_config_json_prints_effective_settings() -> None:
    env = dict(os.environ, POLLER_POOL__FALL="5", POLLER_DISCOVERY__SUBNETS="127.0.0.0/30")
    run = poller("check-config", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["pool"]["fall"] == 5


def test_check_config_json_shows_each_service_as_poller_uses_it() -> None:
    """Per-service probes with what they inherit from the top-level one, and none of
    the top-level keys the services replace (they would be refused or unused)."""
    run = poller("check-config", "--json", "--config", "config/poller.yaml")
    assert run.returncode == 0, run.stderr
    effective = json.loads(run.stdout)
    web, api = effective["services"]
    assert (web["name"], web["ports"], web["backend"]) == ("web", [3000], "nodes")
    assert (api["name"], api["ports"], api["backend"]) == ("api", [3001], "api")
    assert web["probe"]["identity"] == {"json_field": "host", "header": None}  # inherited
    assert api["probe"]["timeout_seconds"] == effective["probe"]["timeout_seconds"]
    assert api["route"]["path_prefix"] == "/api"
    assert "ports" not in effective["discovery"]
    assert "backend" not in effective["haproxy"]


def test_failed_sweep_is_exit_4_not_an_empty_pool() -> None:
    # No route to 10.255.255.0/30 exists in the test namespace: every connect fails at once
    # with ENETUNREACH, on the poller's side, and no packet leaves.
    run = poller("scan", "--subnet", "10.255.255.0/30", "--json")
    assert run.returncode == 4
    assert "sweep failed" in run.stderr
    assert "Network is unreachable" in run.stderr
    assert run.stdout == ""


def test_without_a_subnet_nothing_is_swept_and_the_error_says_how_to_give_one() -> None:
    for command in (["scan", "--port", "9"], ["check-config"]):
        run = poller(*command)
        assert run.returncode == 3, run.stderr
        assert run.stderr.startswith("poller: error: discovery.subnets: no subnet to sweep")
        assert "--subnet CIDR" in run.stderr
        assert "POLLER_DISCOVERY__SUBNETS" in run.stderr
        assert run.stdout == ""


def test_a_public_subnet_is_refused_naming_the_opt_in_and_a_private_one_accepted() -> None:
    refused = poller("scan", "--subnet", "8.8.8.0/30", "--port", "9")
    assert refused.returncode == 3
    assert "discovery.subnets: 8.8.8.0/30 is neither a private range" in refused.stderr
    assert "--allow-public" in refused.stderr
    assert refused.stdout == ""
    env = dict(os.environ, POLLER_DISCOVERY__SUBNETS="10.0.0.0/30")
    accepted = poller("check-config", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("ok: 2 targets in 10.0.0.0/30")
    # The scan itself runs: no route to 10.0.0.0/30 in the test namespace, so the sweep
    # fails on the poller's side (exit 4), after the subnet was accepted.
    swept = poller("scan", "--subnet", "10.0.0.0/30", "--port", "9")
    assert swept.returncode == 4, swept.stderr
    assert "sweep failed" in swept.stderr


def test_an_ipv6_loopback_scan_probes_ipv6_only() -> None:
    run = poller("scan", "--subnet", "::1/128", "--port", "9", "--json", "--all")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert [(r["address"], r["result"]) for r in found["results"]] == [("::1", "refused")]
    assert found["method"] == "connect"


@pytest.mark.root
def test_a_small_ipv6_subnet_below_two_to_the_32_is_swept_as_ipv6() -> None:
    """`::a00:1/126` once became 10.0.0.0-10.0.0.3. Swept in a namespace of its own whose
    only route makes the four addresses local (each connect refused at once)."""
    line = (
        "ip link set lo up && ip -6 route add local ::a00:0/126 dev lo && exec "
        f"{sys.executable} -m poller scan --subnet ::a00:1/126 --allow-public --port 9 "
        "--json --all"
    )
    run = subprocess.run(
        ["unshare", "--net", "sh", "-c", line],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["subnets"] == ["::a00:0/126"]
    assert found["normalised"] == {"::a00:1/126": "::a00:0/126"}
    assert [r["address"] for r in found["results"]] == ["::a00:0", "::a00:1", "::a00:2", "::a00:3"]
    assert found["outcomes"] == {"refused": 4}


def test_a_subnet_with_host_bits_set_is_swept_as_its_network_and_the_summary_says_so() -> None:
    run = poller("scan", "--subnet", "127.0.0.5/30", "--port", "9")
    assert run.returncode == 0, run.stderr
    summary = run.stdout.splitlines()[-1]
    assert summary.startswith("2 targets (127.0.0.4/30 x port 9, connect)")
    assert summary.endswith("; 127.0.0.5/30 has host bits set, swept as 127.0.0.4/30")
    one = poller("scan", "--subnet", "127.0.0.1/32", "--port", "9")
    assert one.stdout.splitlines()[-1].startswith("1 target (127.0.0.1/32")


def test_auto_without_a_usable_interface_is_a_config_error() -> None:
    run = poller("check-config", env=dict(os.environ, POLLER_DISCOVERY__SUBNETS="auto"))
    assert run.returncode == 3
    assert "discovery.subnets: `auto` found no up, non-loopback IPv4 interface" in run.stderr


@pytest.fixture
def veth_interface() -> Iterator[str]:
    """A veth pair inside the suite's private namespace: an address, no route out."""
    require_root()
    name = "pt-auto0"
    subprocess.run(
        ["ip", "link", "add", name, "type", "veth", "peer", "name", "pt-auto1"], check=True
    )
    try:
        subprocess.run(["ip", "addr", "add", "10.200.0.1/29", "dev", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        subprocess.run(["ip", "link", "set", "pt-auto1", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)  # takes its peer along


@pytest.mark.root
def test_auto_finds_the_host_networks_and_skips_its_own_address(veth_interface: str) -> None:
    run = poller("check-config", env=dict(os.environ, POLLER_DISCOVERY__SUBNETS="auto"))
    assert run.returncode == 0, run.stderr
    # 10.200.0.0/29 has 6 hosts; our own .1 is excluded.
    assert run.stdout == "ok: 5 targets in 10.200.0.0/29, ports 3000\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "--output", "x.cfg"], "--output needs --render"),
        (["scan", "--render", "--json"], "--json does not go with --render"),
        (["scan", "--render", "--all"], "--all does not go with --render"),
        (["render", "--keep-valid"], "--keep-valid needs --output"),
    ],
)
def test_a_flag_that_would_be_ignored_is_a_usage_error(args: list[str], message: str) -> None:
    run = poller(*args)
    assert run.returncode == 2
    assert f"poller {args[0]}: error: {message}" in run.stderr  # the command's own usage
    assert f"usage: poller {args[0]} " in run.stderr
    assert run.stdout == ""  # nothing was swept or written


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["scan", "--subnets", "127.0.0.0/30"], "--subnets (did you mean --subnet?)"),
        (["scan", "--ports", "3000"], "--ports (did you mean --port?)"),
        (["check-config", "--jsn"], "--jsn (did you mean --json?)"),
        (["render", "--members=10.0.0.1:80"], "--members=10.0.0.1:80 (did you mean --member?)"),
        (["check-config", "--subnet", "127.0.0.0/30"], "--subnet 127.0.0.0/30"),
    ],
)
def test_a_flag_a_command_does_not_take_is_said_with_its_usage_and_a_likely_meaning(
    args: list[str], said: str
) -> None:
    run = poller(*args)
    assert run.returncode == 2
    assert f"usage: poller {args[0]} " in run.stderr
    assert f"poller {args[0]}: error: unrecognized arguments: {said}" in run.stderr
    assert run.stdout == ""


def test_ports_are_given_as_the_variable_takes_them_comma_separated_or_repeated() -> None:
    scans = [
        poller("scan", "--subnet", "127.0.0.0/30", "--json", *ports)
        for ports in (["--port", "3000,3001"], ["--port", "3000", "--port", "3001"])
    ]
    for run in scans:
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["ports"] == [3000, 3001]
    bad = poller("scan", "--port", "3000,web")
    assert bad.returncode == 2
    assert "argument --port: not a port or comma-separated ports: '3000,web'" in bad.stderr


def test_config_has_a_short_flag_before_the_command_and_after() -> None:
    for args in (
        ["-c", "config/poller.yaml", "check-config"],
        ["check-config", "-c", "config/poller.yaml"],
    ):
        run = poller(*args)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("ok: 504 targets")


def test_scan_port_with_services_in_the_config_is_an_ad_hoc_scan_of_that_port() -> None:
    run = poller(
        "scan", "--config", "config/poller.yaml", "--subnet", "127.0.0.0/30", "--port", "8080",
        "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["ports"] == [8080]
    assert {r["service"] for r in found["results"]} <= {"default"}
    assert "ad-hoc scan of these ports with the top-level probe" in run.stderr


def test_common_options_go_before_the_command_too(tmp_path: Path) -> None:
    path = config(tmp_path, "discovery:\n  subnets: [127.0.0.0/30]\npool:\n  fall: 7\n")
    before = poller("--config", path, "--log-level", "debug", "check-config", "--json")
    after = poller("check-config", "--json", "--config", path, "--log-level", "debug")
    assert before.returncode == after.returncode == 0, before.stderr
    assert json.loads(before.stdout)["pool"]["fall"] == 7
    assert before.stdout == after.stdout
    # After the command wins when both are given.
    both = poller("--config", "/nonexistent.yaml", "check-config", "--config", path)
    assert both.returncode == 0, both.stderr


@pytest.mark.parametrize("command", ["scan", "run", "render", "check-config"])
def test_every_flag_has_help_and_scan_flags_show_their_defaults(command: str) -> None:
    run = poller(command, "--help")
    assert run.returncode == 0
    description = run.stdout.split("\n\n", 1)[1].split("options:", 1)[0]
    assert len(description.split()) > 10, f"{command} --help has no description"
    options = run.stdout.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", "\n" + options.strip("\n"))
    for entry in (e for e in entries if e.strip()):
        flag, _, text = entry.strip().partition("  ")
        assert text.strip() or "\n" in entry, f"{command} {flag} has no help"
    if command == "scan":
        text = " ".join(run.stdout.split())
        for setting in (
            "(discovery.subnets; default: none)",
            "(discovery.allow_public; default: False)",
            "(discovery.ports; default: 3000)",
            "(probe.timeout_seconds; default: 0.5)",
            "(discovery.concurrency; default: 256)",
            "(discovery.method; default: auto)",
        ):
            assert setting in text
        assert "connects to every address of every subnet" in text
