"""Discovery methods on a real bridge: the ARP pre-sweep, its fallback, and the paced
connect sweep, each finding every live node with no neighbour-table overflow."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.labs import ROOT
from tests.support.netlab import NetLab, kernel_log_mark, lab_running, overflow_lines, sh
from tests.support.requirements import unavailable
from tests.support.staging import problem_running_as, stage

pytestmark = pytest.mark.root  # checked by tests/conftest.py

ODDNODES = ROOT / "tests" / "support" / "oddnodes.py"
LIVE_HOSTS = (7, 300, 700, 1000)


@dataclass(frozen=True)
class Bridge:
    lab: NetLab
    probe_ns: str  # where the scans run, at .42
    stage_dir: Path | None = None  # world-readable: a copy of poller for runs as another user

    @property
    def live(self) -> set[str]:
        return {self.lab.address(h) for h in LIVE_HOSTS}

    def scan(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "poller", "scan", *argv]
        env, cwd = None, ROOT
        if user is not None:
            # Drop root and every capability: the poller image without CAP_NET_RAW. The
            # checkout may be unreadable to `user` (a 0700 clone): run a staged copy.
            python, env, cwd = self.staged(user)
            setpriv = shutil.which("setpriv")
            assert setpriv is not None, "setpriv (util-linux) is missing"
            privileges = [f"--reuid={user}", f"--regid={user}", "--clear-groups"]
            command = [setpriv, *privileges, "--inh-caps=-all", "--bounding-set=-all"]
            command += [python, "-m", "poller", "scan", *argv]
        return subprocess.run(
            ["ip", "netns", "exec", self.probe_ns, *command],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            env=env,
        )

    def staged(self, user: str) -> tuple[str, dict[str, str], Path]:
        assert self.stage_dir is not None, "this bridge runs poller as root only"
        python, env = stage_once(self.stage_dir)
        problem = problem_running_as(user, python, env, self.stage_dir)
        if problem is not None:
            unavailable(f"cannot run poller as {user}: {problem}")
        return python, env, self.stage_dir


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    options = {"network": "10.79.0.0/22", "prefix": "pldi"}
    with lab_running(tmp_path_factory.mktemp("discovery"), **options) as lab:
        for index, host in enumerate(LIVE_HOSTS):
            lab.start_node(host, f"live{index}")
        silent = lab.address(20)
        lab.start(
            "silent",
            lab.host("silent", silent),
            [sys.executable, str(ODDNODES), f"silent@{silent}:3000"],
            ready=lambda: "ready" in lab.log("silent"),
        )
        lab.host("closed", lab.address(21))
        stage_dir = Path(tempfile.mkdtemp(prefix="poller-staged-"))
        try:
            yield Bridge(lab, lab.host("probe", lab.address(42)), stage_dir)
        finally:
            shutil.rmtree(stage_dir)


@functools.cache
def stage_once(into: Path) -> tuple[str, dict[str, str]]:
    into.chmod(0o755)
    return stage(into)


def healthy(run: subprocess.CompletedProcess[str]) -> tuple[str, set[str], dict[str, int]]:
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    found = {r["address"] for r in report["results"] if r["healthy"]}
    return report["method"], found, report["outcomes"]


def test_arp_pre_sweep_finds_every_live_node(bridge: Bridge) -> None:
    before = kernel_log_mark()
    method, found, outcomes = healthy(bridge.scan("--subnet", bridge.lab.network, "--json"))
    assert method == "arp"
    assert found == bridge.live
    # The silent host answered ARP, was probed, and timed out; the closed one refused;
    # everything else stayed silent to ARP and counts as unreachable, none is dropped.
    assert outcomes["timeout"] == 1
    assert outcomes["refused"] >= 2  # the closed host and the gateway
    assert sum(outcomes.values()) == 1022
    assert overflow_lines(since=before) == 0


def test_connect_sweep_finds_the_same_nodes_at_the_neighbour_pace(bridge: Bridge) -> None:
    before = kernel_log_mark()
    run = bridge.scan("--subnet", bridge.lab.network, "--json", "--method", "connect")
    method, found, outcomes = healthy(run)
    assert method == "connect"
    assert found == bridge.live
    assert sum(outcomes.values()) == 1022
    assert overflow_lines(since=before) == 0


def test_without_cap_net_raw_auto_falls_back_to_connect(bridge: Bridge) -> None:
    run = bridge.scan("--subnet", bridge.lab.network, "--json", user="65534")
    method, found, _ = healthy(run)
    assert method == "connect"
    assert found == bridge.live


def test_without_cap_net_raw_arp_is_a_config_error_naming_the_field(bridge: Bridge) -> None:
    run = bridge.scan("--subnet", bridge.lab.network, "--method", "arp", user="65534")
    assert run.returncode == 3, run.stderr
    assert "discovery.method" in run.stderr
    assert "CAP_NET_RAW" in run.stderr
    assert run.stdout == ""


def test_arp_on_a_subnet_off_the_segment_is_a_config_error(bridge: Bridge) -> None:
    run = bridge.scan("--subnet", "10.99.0.0/24", "--method", "arp")
    assert run.returncode == 3
    assert "discovery.method" in run.stderr
    assert "10.99.0.0/24" in run.stderr


def test_the_table_names_the_method(bridge: Bridge) -> None:
    run = bridge.scan("--subnet", bridge.lab.network)
    assert run.returncode == 0, run.stderr
    assert f"{bridge.lab.network} x port 3000, arp)" in run.stdout


def test_a_segment_that_never_answers_arp_is_swept_with_connects(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Like an overlay that forwards traffic but answers no ARP: nobody replies (arp_ignore
    8), the poller reaches the nodes through static neighbour entries. Silence must not
    hide them: the segment is swept with connects instead."""
    options = {"network": "10.80.5.0/24", "prefix": "plna"}
    with lab_running(tmp_path_factory.mktemp("noarp"), **options) as lab:
        hosts = (11, 22)
        namespaces = [lab.start_node(host, f"quiet{host}") for host in hosts]
        probe = lab.host("probe", lab.address(42))
        sh("ip", "netns", "exec", lab.bridge_ns, "sysctl", "-qw", "net.ipv4.conf.heig.arp_ignore=8")
        for host, ns in zip(hosts, namespaces, strict=True):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=8")
            link = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address").stdout
            sh("ip", "netns", "exec", probe, "ip", "neigh", "replace", lab.address(host),
               "lladdr", link.strip(), "dev", "eth0", "nud", "permanent")  # fmt: skip
        bridge = Bridge(lab, probe)
        method, found, _ = healthy(bridge.scan("--subnet", lab.network, "--json"))
        assert method == "arp"
        assert found == {lab.address(h) for h in hosts}
