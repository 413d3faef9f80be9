"""Several services behind one HAProxy, from one sweep: a real HAProxy, the poller and
demo nodes on loopback. `web` (port 3000) takes what no other takes, `api` (port 3001)
the paths under /api, `admin` (port 3002) the requests for Host admin.local; each
backend must hold exactly its nodes, a change in one must leave the others alone, and
membership changes must never reload HAProxy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import problems_in_log
from tests.support.labs import HAProxyView, wait_for, wrk_failures
from tests.support.loopback import Lab

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

WEB = ["127.0.3.2", "127.0.3.3"]
API = ["127.0.3.4", "127.0.3.5"]
ADMIN = ["127.0.3.6"]
SERVICES = [
    {"name": "web", "ports": [3000], "route": {"default": True}},
    {
        "name": "api",
        "ports": [3001],
        "probe": {"path": "/healthz"},
        "route": {"path_prefix": "/api"},
    },
    {"name": "admin", "ports": [3002], "route": {"host": ["admin.local"]}},
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    # GETs are idempotent: HAProxy may replay one a stopping node dropped. Without that, a
    # graceful node restart at thousands of requests a second loses a request now and then
    # (also with HAProxy and the demo node alone, no poller: docs/RELIABILITY.md).
    settings = {"services": SERVICES, "haproxy": {"retry_on": True}}
    lab = Lab(tmp_path / "lab", settings=settings)
    try:
        lab.start_haproxy()
        yield lab
        # Read the log of what ran: nothing at warning or above, no traceback.
        assert problems_in_log(lab.log("poller")) == []
    finally:
        lab.close()


def backend(lab: Lab, name: str) -> HAProxyView:
    return HAProxyView(lab.admin_socket, lab.master_socket, name)


def holds(lab: Lab, **expected: list[str]) -> bool:
    """Each named backend serves exactly these addresses."""
    return all(
        backend(lab, name).serving() == set(addresses) for name, addresses in expected.items()
    )


def start_all(lab: Lab) -> None:
    for i, address in enumerate(WEB):
        lab.start_node(address, f"web-{i}", "--tag", "web")
    for i, address in enumerate(API):
        lab.start_node(address, f"api-{i}", "--tag", "api", port=3001)
    for i, address in enumerate(ADMIN):
        lab.start_node(address, f"admin-{i}", "--tag", "admin", port=3002)


def tag_of(lab: Lab, path: str, host: str | None = None) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{lab.frontend_port}{path}")
    if host is not None:
        request.add_header("Host", host)
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body.get("tag")


def test_each_backend_holds_exactly_its_nodes_found_in_one_sweep(lab: Lab) -> None:
    start_all(lab)
    lab.start_poller()
    wait_for(lambda: holds(lab, web=WEB, api=API, admin=ADMIN), 15, "three backends filled")
    # One sweep asked all three ports: one pre-connect per address and port, no more.
    pool = lab.status("/pool")
    assert [s["name"] for s in pool["services"]] == ["web", "api", "admin"]
    assert sorted(pool["discovery"]["ports"]) == [3000, 3001, 3002]
    by_service = {m["service"] for m in pool["members"]}
    assert by_service == {"web", "api", "admin"}
    # Requests are routed by path and by Host.
    assert {tag_of(lab, "/") for _ in range(4)} == {"web"}
    assert {tag_of(lab, "/api/orders") for _ in range(4)} == {"api"}
    assert {tag_of(lab, "/", host="admin.local:8080") for _ in range(4)} == {"admin"}
    assert lab.reloads() == (0, 0)
    metrics = lab.status("/metrics")
    assert 'poller_members{service="api",state="up"} 2.0' in metrics


def test_a_node_of_one_service_leaving_changes_only_its_backend(lab: Lab) -> None:
    start_all(lab)
    lab.start_poller()
    wait_for(lambda: holds(lab, web=WEB, api=API, admin=ADMIN), 15, "three backends filled")
    web_servers = backend(lab, "web").states()
    lab.stop_node(API[0])

    def downs() -> list[tuple[str, str]]:
        events = lab.status("/events")["events"]
        return [(e["service"], e["member"]) for e in events if e["kind"] == "down"]

    wait_for(lambda: downs() and backend(lab, "api").listed() == {API[1]}, 10, "api node out")
    assert downs() == [("api", f"{API[0]}:3001")]
    assert holds(lab, web=WEB, api=API[1:], admin=ADMIN)
    assert backend(lab, "web").states() == web_servers  # untouched, not even re-added
    assert lab.reloads() == (0, 0)


def test_both_services_churn_under_load_with_no_failed_request_and_no_reload(
    lab: Lab, tmp_path: Path
) -> None:
    start_all(lab)
    lab.start_poller()
    wait_for(lambda: holds(lab, web=WEB, api=API, admin=ADMIN), 15, "three backends filled")
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (apt-get install wrk)")
    report = tmp_path / "wrk.txt"
    url = f"http://127.0.0.1:{lab.frontend_port}/api/x"
    with report.open("wb") as out:
        load = subprocess.Popen(
            ["wrk", "-t1", "-c8", "-d10s", "--timeout", "5s", url], stdout=out, stderr=out
        )
    try:
        for round_number in range(2):
            lab.stop_node(API[1])
            lab.stop_node(WEB[1])
            wait_for(lambda: holds(lab, web=WEB[:1], api=API[:1]), 10, f"leaves ({round_number})")
            lab.start_node(API[1], "api-1", "--tag", "api", port=3001)
            lab.start_node(WEB[1], "web-1", "--tag", "web")
            wait_for(lambda: holds(lab, web=WEB, api=API), 10, f"joins ({round_number})")
    finally:
        load.wait(30)
    requests, failed = wrk_failures(report.read_text())
    assert requests > 100
    assert failed == 0, report.read_text()
    assert lab.reloads() == (0, 0)
