"""`poller run` stays quiet while a condition persists, and stops cleanly at any moment.

Real processes on loopback: HAProxy, the poller, demo nodes. A stalled node (SIGSTOP)
keeps its port open and never answers, so every probe of it waits out the deadline:
what made the old 20 Hz check job overrun and log a warning per tick.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.haproxy.servers import parse_sessions
from tests.support.labs import wait_for
from tests.support.loopback import Lab, serves

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

NODES = [f"127.0.3.{i}" for i in range(2, 7)]
A_NAME = "n_127_0_3_2_3000"  # NODES[0] as HAProxy names it
SOAK_SECONDS = 20.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    stopped: list[int] = []
    lab.stalled = stopped  # type: ignore[attr-defined]
    try:
        lab.start_haproxy()
        yield lab
    finally:
        for pid in stopped:  # a stopped process would not see SIGTERM
            os.kill(pid, signal.SIGCONT)
        lab.close()


def stall(lab: Lab, address: str) -> None:
    pid = lab.procs[f"node-{address}"].pid
    os.kill(pid, signal.SIGSTOP)
    lab.stalled.append(pid)  # type: ignore[attr-defined]


def log_lines(lab: Lab) -> list[dict[str, object]]:
    return [json.loads(line) for line in lab.log("poller").splitlines() if line.startswith("{")]


def test_five_members_stalled_at_once_make_no_line_per_tick(lab: Lab) -> None:
    for i, address in enumerate(NODES):
        lab.start_node(address, f"n{i}")
    lab.start_poller()
    wait_for(lambda: serves(lab, *NODES), 10, "five members")
    before = len(log_lines(lab))
    for address in NODES:
        stall(lab, address)
    # The soak: a fixed window to see whether anything repeats, not a synchronisation.
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        assert lab.poller_alive()
        time.sleep(0.5)
    window = log_lines(lab)[before:]
    loud = [(e["level"], e["msg"]) for e in window if e["level"] != "info"]
    assert "maximum number of running instances" not in lab.log("poller")
    # Five members failing together look like the poller's own fault: one hold, logged once.
    assert loud == [("warning", "guard holding removals")]
    assert [e["msg"] for e in window].count("member down") == len(NODES)
    # Everything else in 20 s of five stalled members: a handful of lines, not one a tick.
    assert len(window) <= len(NODES) + 5, [e["msg"] for e in window]


def test_sigint_during_a_sweep_exits_0_with_no_traceback(lab: Lab) -> None:
    lab.start_node(NODES[0], "slow")
    stall(lab, NODES[0])  # unknown to the pool: every sweep waits out its probe
    lab.start_poller("--log-level", "debug")
    starts = lab.log("poller").count("sweep starting")
    wait_for(lambda: lab.log("poller").count("sweep starting") > starts, 10, "a sweep to start")
    assert lab.stop("poller", signal.SIGINT, timeout=15) == 0
    log = lab.log("poller")
    assert "Traceback" not in log
    assert "CancelledError" not in log
    assert '"msg": "stopped"' in log


def slow_clients(lab: Lab, delay_ms: int, count: int, timeout: float) -> list[threading.Thread]:
    """Members `a` and `b` served, `a` made to answer in `delay_ms`, and `count` clients
    started through HAProxy: those sent to `a` hold sessions there."""
    lab.start_node(NODES[0], "a")
    lab.start_node(NODES[1], "b")
    lab.start_poller()
    wait_for(lambda: serves(lab, NODES[0], NODES[1]), 10, "two members")
    request = urllib.request.Request(
        f"http://{NODES[0]}:3000/delay",
        data=json.dumps({"delay": delay_ms}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()
    clients = [threading.Thread(target=lab.get, kwargs={"timeout": timeout}) for _ in range(count)]
    for client in clients:
        client.start()
    return clients


def busy(lab: Lab) -> bool:
    """HAProxy has sessions on `a`."""
    return parse_sessions(lab.admin("show stat nodes 4 -1"), "nodes").get(A_NAME, 0) > 0


def test_sigterm_during_a_drain_finishes_the_apply_and_exits_0(lab: Lab) -> None:
    # Slow requests hold sessions on `a` while `a` leaves: the apply drains them.
    clients = slow_clients(lab, delay_ms=1500, count=8, timeout=10)
    try:
        wait_for(lambda: busy(lab), 5, "slow requests on the leaving member")
        # Graceful: it finishes what it serves (not waited for here: that is the drain).
        os.kill(lab.procs[f"node-{NODES[0]}"].pid, signal.SIGTERM)

        def draining() -> bool:
            admin = lab.servers().get(A_NAME)
            return admin is not None and bool(admin[2] & 0x08)

        wait_for(draining, 10, "the leaving member to be drained")
        assert lab.stop("poller", signal.SIGTERM, timeout=20) == 0
    finally:
        for client in clients:
            client.join(30)
    log = lab.log("poller")
    assert "Traceback" not in log
    assert '"msg": "stopped"' in log
    # The apply finished before the stop: HAProxy and its file agree on `b` alone.
    assert serves(lab, NODES[1])
    assert A_NAME not in lab.config_path.read_text()


def test_a_member_that_stops_answering_mid_request_is_deleted_at_runtime(lab: Lab) -> None:
    """A partition, on loopback: `a` holds slow requests and then stops answering
    (SIGSTOP), so its sessions never end by themselves. After the drain timeout poller
    ends them (`shutdown sessions server`) and deletes `a` at runtime: no reload, and the
    stuck clients get their answer in seconds, not after HAProxy's `timeout server`."""
    lab.write_settings({"haproxy": {"drain_timeout_seconds": 1.0}})
    clients = slow_clients(lab, delay_ms=3000, count=6, timeout=60)
    wait_for(lambda: busy(lab), 5, "slow requests on the member")
    stall(lab, NODES[0])
    started = time.monotonic()
    wait_for(lambda: serves(lab, NODES[1]), 15, "the stalled member removed")
    removed_after = time.monotonic() - started
    for client in clients:
        client.join(10)
    assert not any(client.is_alive() for client in clients), "clients still stuck on `a`"
    assert removed_after < 10
    assert lab.reloads() == (0, 0)
    log = lab.log("poller")
    assert "drain timed out; ending the sessions still on the servers" in log
    assert "reloading instead" not in log
    wait_for(lambda: A_NAME not in lab.config_path.read_text(), 10, "the file to follow")
