"""End to end in the network-namespace lab that mirrors compose: a bridge `heig` in its
own namespace, HAProxy at .42, the poller sidecar with config/poller.yaml, demo nodes in
namespaces of their own, wrk in a client namespace. No namespace has a default route.

One lab runs the scenarios in order, each under wrk load: 2 nodes, scale to 5, a graceful
stop, a kill -9, a new node at a reused address, a host speaking SSH on :3000, a node
answering 500, a partition and its repair, the config's second service (API nodes on
:3001, routed by /api) churning beside the web nodes. Each change must show in HAProxy within
interval x rise + 1 s; graceful changes and (with retry-on) kill -9 cost 0 failed
requests; the kernel log gains no neighbour-table overflow line.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from poller.config import load_settings
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.netlab import NetLab, lab_running
from tests.support.processes import ROOT
from tests.support.requirements import require_tool

pytestmark = [pytest.mark.root, pytest.mark.haproxy]  # checked by tests/conftest.py

SETTINGS = load_settings(ROOT / "config" / "poller.yaml", environ={})
# "Each change is reflected in HAProxy within interval x rise + 1 s."
DEADLINE = SETTINGS.pool.interval_seconds * SETTINGS.pool.rise + 1.0
ODD = ROOT / "tests" / "support" / "oddnodes.py"


class Load:
    """wrk in the client namespace, for one scenario; failed = non-2xx/3xx + socket errors."""

    def __init__(self, lab: NetLab, ns: str, seconds: int, path: str = "/") -> None:
        self.out = lab.workdir / f"wrk-{time.monotonic_ns()}.txt"
        self.proc = lab.wrk(ns, seconds, self.out, path)
        # The change under test must happen under load: wait until wrk is connected.
        wait_for(lambda: current_connections(lab.run_dir / "admin.sock") > 0, 10, "wrk to connect")

    def failed(self) -> tuple[int, int]:
        self.proc.wait(60)
        return wrk_failures(self.out.read_text())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    require_tool("wrk", "apt-get install wrk")
    require_tool("dmesg", "apt-get install util-linux")
    with lab_running(tmp_path_factory.mktemp("netlab")) as lab:
        lab.start_haproxy()
        # A node replacing another at its address within a fraction of a second, with no
        # failed HAProxy check between (test_05), is found by poller's own verify probe:
        # 2 s here instead of 60, so the scenario can say so within its deadline.
        lab.start_poller(
            ("POLLER_HAPROXY__RETRY_ON", "true"), ("POLLER_POOL__VERIFY_INTERVAL_SECONDS", "2")
        )
        lab.client_ns = lab.host("client", lab.address(200))
        yield lab


def served_within(lab: NetLab, expected: set[str], what: str) -> float:
    started = time.monotonic()
    wait_for(lambda: lab.servers() == expected, DEADLINE, what)
    return time.monotonic() - started


def addresses(lab: NetLab, *hosts: int) -> set[str]:
    return {lab.address(h) for h in hosts}


def test_01_two_nodes(lab: NetLab) -> None:
    lab.start_node(11, "s1")
    lab.start_node(22, "s2")
    served_within(lab, addresses(lab, 11, 22), "s1 and s2")


def test_02_scale_to_five(lab: NetLab) -> None:
    load = Load(lab, lab.client_ns, 6)
    for host in (33, 44, 55):
        lab.start_node(host, f"s{host // 11}")
    served_within(lab, addresses(lab, 11, 22, 33, 44, 55), "five nodes")
    requests, failed = load.failed()
    assert requests > 0
    assert failed == 0


def test_03_graceful_stop(lab: NetLab) -> None:
    load = Load(lab, lab.client_ns, 6)
    lab.stop_node(lab.address(55), signal.SIGTERM)
    served_within(lab, addresses(lab, 11, 22, 33, 44), "s5 to leave")
    requests, failed = load.failed()
    assert requests > 0
    assert failed == 0


def test_04_kill_9_with_retry_on(lab: NetLab) -> None:
    load = Load(lab, lab.client_ns, 6)
    lab.stop_node(lab.address(44), signal.SIGKILL)
    served_within(lab, addresses(lab, 11, 22, 33), "the killed node to leave")
    requests, failed = load.failed()
    assert requests > 0
    assert failed == 0


def test_05_new_node_at_a_reused_address(lab: NetLab) -> None:
    address = lab.address(33)
    lab.stop_node(address, signal.SIGKILL)
    lab.start_node(33, "s3-replacement")
    started = time.monotonic()

    def replacement_up() -> bool:
        return any(
            '"msg": "member up"' in line and '"identity": "s3-replacement"' in line
            for line in lab.log("poller").splitlines()
        )

    wait_for(replacement_up, DEADLINE + 2.0, "the new node to join as a new member")
    served_within(lab, addresses(lab, 11, 22, 33), "the new node to be served")
    assert time.monotonic() - started <= DEADLINE + 2.0
    assert "member identity_changed" in lab.log("poller") or "member down" in lab.log("poller")


def test_06_ssh_and_500_are_never_served(lab: NetLab) -> None:
    ssh_ns = lab.host("ssh", lab.address(66))
    lab.start(
        "ssh",
        ssh_ns,
        [sys.executable, str(ODD), f"banner@{lab.address(66)}:3000"],
        ready=lambda: "ready" in lab.log("ssh"),
    )
    lab.start_node(77, "broken", "--status", "500")
    deadline = time.monotonic() + 2 * DEADLINE
    while time.monotonic() < deadline:  # a bounded watch: they must never appear
        assert lab.servers() == addresses(lab, 11, 22, 33)
        time.sleep(0.2)
    # They were there to be seen: the sweeps reached both, and neither passed.
    assert lab.metric("poller_probes_total", 'result="not_http"') > 0
    assert lab.metric("poller_probes_total", 'result="unexpected_status"') > 0


def test_07_partition_and_repair(lab: NetLab) -> None:
    ns = lab.namespace_of(lab.address(22))
    assert ns is not None
    reloads = lab.haproxy.reloads()
    lab.link(ns, up=False)
    try:
        # HAProxy's own checks take it out of rotation at once; poller deletes it after
        # HAProxy's check failed and `fall` of poller's own probes timed out: up to a
        # second later than when poller probed every member itself.
        wait_for(
            lambda: lab.servers() == addresses(lab, 11, 33),
            DEADLINE + 1.0,
            "the partitioned node to leave",
        )
    finally:
        lab.link(ns, up=True)
    served_within(lab, addresses(lab, 11, 22, 33), "the node to come back")
    # Deleted at runtime although HAProxy held idle connections to it: no reload.
    assert lab.haproxy.reloads() == reloads
    assert "reloading instead" not in lab.log("poller")


def test_08_the_pollers_own_link_cut_holds_the_pool(lab: NetLab) -> None:
    before = lab.servers()
    assert before, "the earlier scenarios leave members behind"
    changes = lab.metric("poller_haproxy_changes_total")
    # Discovery sweeps tell: the members' checks are HAProxy's while its own pass.
    failed = lab.metric("poller_sweeps_total", 'kind="discovery",result="failed"')
    load = Load(lab, lab.client_ns, 8)
    lab.link(lab.poller_ns, up=False)
    try:
        wait_for(
            lambda: (
                lab.metric("poller_sweeps_total", 'kind="discovery",result="failed"') >= failed + 3
            ),
            10,
            "the poller to see its own sweeps fail",
        )
        # /healthz turns 503 (urllib prints nothing) once no sweep succeeded for 3 intervals.
        wait_for(lambda: lab.status("/healthz") == "", 10, "/healthz to say it is blind")
        assert lab.servers() == before
    finally:
        lab.link(lab.poller_ns, up=True)
    sweeps = lab.metric("poller_sweeps_total", 'kind="discovery",result="ok"')
    wait_for(
        lambda: lab.metric("poller_sweeps_total", 'kind="discovery",result="ok"') >= sweeps + 3,
        10,
        "good sweeps again",
    )
    assert lab.status("/healthz") != ""
    assert lab.servers() == before
    assert lab.metric("poller_haproxy_changes_total") == changes  # no spurious removal
    assert load.failed()[1] == 0


def test_09_a_second_service_from_the_same_sweep(lab: NetLab) -> None:
    """config/poller.yaml's second service: API nodes on port 3001 join backend `api` from
    the same sweep, /api reaches them, and each service's churn changes only its own
    backend: 0 failed requests on either, 0 reloads."""
    web = lab.servers()
    reloads = lab.haproxy.reloads()
    pool = json.loads(lab.status("/pool"))
    assert pool["discovery"]["ports"] == [3000, 3001]  # one sweep asks both ports
    for host in (101, 102):
        lab.start_node(host, f"api{host}", port=3001)
    started = time.monotonic()
    wait_for(lambda: lab.servers("api") == addresses(lab, 101, 102), DEADLINE, "the API nodes")
    print(f"API nodes served {time.monotonic() - started:.1f} s after they started")
    assert lab.servers() == web  # the web backend did not move
    assert lab.get(lab.client_ns, "/api/orders")["host"].startswith("api")
    assert not lab.get(lab.client_ns, "/")["host"].startswith("api")

    web_load = Load(lab, lab.client_ns, 8)
    api_load = Load(lab, lab.client_ns, 8, "/api/orders")
    lab.stop_node(lab.address(102), signal.SIGTERM)
    lab.start_node(103, "api103", port=3001)
    wait_for(lambda: lab.servers("api") == addresses(lab, 101, 103), DEADLINE + 1, "API churn")
    assert lab.servers() == web  # an API node leaving changes only backend `api`
    gone = sorted(web)[-1]
    lab.stop_node(gone, signal.SIGTERM)
    wait_for(lambda: lab.servers() == web - {gone}, DEADLINE, "a web node to leave")
    assert lab.servers("api") == addresses(lab, 101, 103)
    for load in (web_load, api_load):
        requests, failed = load.failed()
        assert requests > 0
        assert failed == 0
    assert lab.haproxy.reloads() == reloads
    members = {(m["service"], m["address"]) for m in json.loads(lab.status("/pool"))["members"]}
    assert {("api", lab.address(101)), ("api", lab.address(103))} <= members
    assert ("web", lab.address(101)) not in members  # joined the service whose probe passed
