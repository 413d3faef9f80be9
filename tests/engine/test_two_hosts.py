"""compose/stack.yml on a real two-node swarm: two Docker daemons in two namespaces joined
by a veth (tests/support/hosts.py), HAProxy and the poller on the lb=true node, web
replicas spread over both. wrk sends requests to HAProxy's host-mode port throughout
each scenario; each says how long HAProxy took to serve the right set, what the poller
did (its log, /pool, the guard) and how many requests failed.

Node loss stops the other node's daemon (it stops its containers first, as a drained or
shut-down host would) and starts it again; a partition cuts the link and repairs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import engine as engines
from tests.support.engine import Load, SwarmStack, problems_in_log, served, timed
from tests.support.hosts import TwoHosts, two_hosts
from tests.support.labs import wait_for
from tests.support.requirements import unavailable

pytestmark = [pytest.mark.engine, pytest.mark.hosts, pytest.mark.timeout(900)]

FRONTEND = "http://127.0.0.1:80/"
RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def swarm() -> Iterator[tuple[TwoHosts, SwarmStack]]:
    problem = engines.problem()
    if problem is not None:
        unavailable(f"the two-host suite cannot run: {problem}")
    with two_hosts() as hosts:
        stack = SwarmStack(hosts.lb)
        try:
            stack.build_images()
            hosts.copy_image("poller-webapp:local")
            stack.deploy()
            yield hosts, stack
        finally:
            log = stack.logs("poller")
            print("\n".join(f"{k}: {v}" for k, v in RESULTS.items()))
            print(*(line for line in log.splitlines() if "guard" in line), sep="\n")
            stack.remove()
    # Warnings a node loss or a partition may rightly cause; anything else is a finding.
    expected = (
        "guard holding removals",
        "HAProxy not updated",
        # sessions to replicas behind a cut link never end by themselves
        "drain timed out; ending the sessions",
        # A hot sweep asks the vacated addresses first: behind a cut link the overlay
        # still answers ARP for them from gossip, so each probe waits its whole deadline.
        # With the ARP rounds that is ~0.6 s of a 1 s interval: on a loaded machine it
        # can overrun, which the operator should hear of (once, see below).
        "sweeps take longer than their interval",
    )
    unexpected = [line for line in problems_in_log(log) if not any(e in line for e in expected)]
    assert unexpected == [], "\n".join(unexpected[:20])
    # A persisting condition is logged when it starts and when it ends, never per tick.
    for kind in ("discovery", "hot"):
        started = logged(log, "sweeps take longer than their interval", kind)
        assert started <= logged(log, "sweeps fit their interval again", kind) + 1, kind


def logged(log: str, message: str, kind: str) -> int:
    """How many lines of a JSON log say `message` about sweeps of `kind`."""
    count = 0
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        count += (
            isinstance(entry, dict) and entry.get("msg") == message and (entry.get("kind") == kind)
        )
    return count


def distinct_hosts(hosts: TwoHosts, tries: int = 24) -> int:
    seen = set()
    for _ in range(tries):
        status, body = hosts.lb.get(80, "/")
        if status == 200:
            seen.add(json.loads(body)["host"])
    return len(seen)


def settle(hosts: TwoHosts, stack: SwarmStack, layout: dict[str, int], timeout: float) -> float:
    """Seconds until the manager runs `layout` (tasks per node) and HAProxy serves them."""

    def right() -> bool:
        return hosts.tasks(stack) == layout and len(served(stack)) == sum(layout.values())

    return timed(right, timeout, f"{layout} running and served")


def holds(stack: SwarmStack) -> int:
    return stack.logs("poller").count("guard holding removals")


def ready_nodes(hosts: TwoHosts) -> int:
    return hosts.lb.docker("node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready")


def test_01_replicas_on_both_nodes_are_served(swarm: tuple[TwoHosts, SwarmStack]) -> None:
    hosts, stack = swarm
    settle(hosts, stack, {"lb1": 2, "node2": 2}, 180)
    assert distinct_hosts(hosts) == 4  # the other node's replicas answer through HAProxy
    pool = hosts.lb.get_json(9345, "/pool")
    assert pool["discovery"]["method"] == "arp"
    assert len([m for m in pool["members"] if m["serving"]]) == 4


def test_02_scale_up_and_down_across_nodes(
    swarm: tuple[TwoHosts, SwarmStack], tmp_path: Path
) -> None:
    hosts, stack = swarm
    with Load(hosts.lb, FRONTEND, tmp_path / "wrk.txt") as load:
        wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
        started = time.monotonic()
        stack.scale("webapp", 8)
        settle(hosts, stack, {"lb1": 4, "node2": 4}, 60)
        up = time.monotonic() - started
        started = time.monotonic()
        stack.scale("webapp", 4)
        settle(hosts, stack, {"lb1": 2, "node2": 2}, 60)
        down = time.monotonic() - started
    requests, failed = load.result()
    RESULTS["scale"] = (
        f"4 -> 8 in {up:.1f} s, 8 -> 4 in {down:.1f} s, {failed} of {requests} failed"
    )
    assert failed == 0, RESULTS["scale"]


def test_03_node_loss_and_return(swarm: tuple[TwoHosts, SwarmStack], tmp_path: Path) -> None:
    hosts, stack = swarm
    with Load(hosts.lb, FRONTEND, tmp_path / "wrk.txt") as load:
        wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
        held_before = holds(stack)
        started = time.monotonic()
        hosts.other.stop_daemon()
        stopped = time.monotonic() - started
        # The other node's replicas leave HAProxy; Swarm starts them again on lb1.
        removed = timed(lambda: len(served(stack)) == 2, 60, "the lost node's replicas out")
        full = settle(hosts, stack, {"lb1": 4}, 120)
        hosts.other.start_daemon()
        wait_for(lambda: ready_nodes(hosts) == 2, 120, "the node back")
        settle(hosts, stack, {"lb1": 4}, 60)  # Swarm does not move tasks back by itself
    requests, failed = load.result()
    RESULTS["node loss"] = (
        f"dockerd stopped (its containers first) in {stopped:.1f} s; its replicas out of "
        f"HAProxy {stopped + removed:.1f} s after the stop began; 4 served again "
        f"{removed + full:.1f} s later; guard holds: {holds(stack) - held_before}; "
        f"{failed} of {requests} requests failed"
    )
    assert failed == 0, RESULTS["node loss"]


def test_04_partition_and_repair(swarm: tuple[TwoHosts, SwarmStack], tmp_path: Path) -> None:
    hosts, stack = swarm
    stack.scale("webapp", 8)  # the spread puts the 4 new replicas on node2
    settle(hosts, stack, {"lb1": 4, "node2": 4}, 60)
    with Load(hosts.lb, FRONTEND, tmp_path / "wrk.txt") as load:
        wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
        held_before = holds(stack)
        hosts.link(up=False)
        removed = timed(lambda: len(served(stack)) <= 4, 120, "node2's replicas out of HAProxy")
        moved = timed(lambda: hosts.tasks(stack).get("lb1", 0) == 8, 180, "Swarm to move them")
        full = timed(lambda: len(served(stack)) == 8, 60, "8 served on lb1")
        hosts.link(up=True)
        after = settle(hosts, stack, {"lb1": 8}, 120)
    requests, failed = load.result()
    RESULTS["partition"] = (
        f"node2's replicas out of HAProxy {removed:.1f} s after the cut; Swarm ran 8 on lb1 "
        f"{moved:.1f} s later and all 8 were served {full:.1f} s after that; after the "
        f"repair, 8 on lb1 and served in {after:.1f} s; guard holds: "
        f"{holds(stack) - held_before}; {failed} of {requests} requests failed"
    )
    print((tmp_path / "wrk.txt").read_text())
    # Requests on their way to node2 when the link was cut never come back: reported, and
    # bounded by the connections wrk holds open (8).
    assert failed <= 8, RESULTS["partition"]
