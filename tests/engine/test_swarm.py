"""compose/stack.yml on a real one-node Docker swarm, as a user deploys it.

`docker stack deploy` of the shipped file, with the images its header says to build;
HAProxy's ports are published in host mode inside the engine's namespace (this kernel
has no IPVS, so no routing mesh), and wrk sends requests to them while the web service
scales. Runs after the compose scenarios, on the same engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.config import load_settings
from tests.support.engine import (
    Engine,
    Load,
    SwarmStack,
    join_swarm,
    problems_in_log,
    served,
    timed,
)
from tests.support.labs import wait_for
from tests.support.processes import ROOT

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

SETTINGS = load_settings(ROOT / "config" / "poller-swarm.yaml", environ={})
# A newcomer is asked by the next hot sweep (every discovery.interval_seconds): Docker hands
# out overlay addresses in order. Starting the tasks takes Docker a few seconds on top.
JOIN_BOUND = SETTINGS.discovery.interval_seconds + 15.0
LEAVE_BOUND = SETTINGS.pool.interval_seconds * SETTINGS.pool.fall + 3.0
FRONTEND = "http://127.0.0.1:80/"
ORDERS = "http://127.0.0.1:80/orders"  # POST: the app counts each (not idempotent)


@pytest.fixture(scope="module")
def stack(engine: Engine) -> Iterator[SwarmStack]:
    stack = SwarmStack(engine)
    join_swarm(engine)
    try:
        stack.build_images()
        stack.deploy()
        yield stack
    finally:
        poller_log = stack.logs("poller")
        print(poller_log[-5000:])
        stack.remove()
        engine.docker("swarm", "leave", "--force", check=False)
    unexpected = [line for line in problems_in_log(poller_log) if "guard" not in line]
    assert unexpected == [], "\n".join(unexpected[:20])


def follows(stack: SwarmStack, replicas: int, timeout: float) -> float:
    """Seconds until HAProxy serves exactly the `replicas` running web tasks."""

    def right() -> bool:
        running = stack.addresses()
        return len(running) == replicas and served(stack) == running

    return timed(right, timeout, f"{replicas} replicas served")


def test_01_the_stack_starts_and_serves_its_replicas(stack: SwarmStack) -> None:
    follows(stack, 4, timeout=180)
    hosts = set()
    for _ in range(16):
        status, body = stack.engine.get(80, "/")
        assert status == 200, body
        hosts.add(body)
    assert len(hosts) == 4


def test_02_discovery_asks_the_overlay_with_arp(stack: SwarmStack) -> None:
    # The task's log reaches `docker service logs` a moment after it is written.
    log = wait_for(
        lambda: next((x for x in stack.logs("poller").splitlines() if "poller running" in x), ""),
        30,
        "the poller's start line",
    )
    assert '"method": "arp"' in log
    assert '"subnets": ["10.42.0.0/16"]' in log
    assert '"targets": 65533' in log  # the /16 less its gateway


def test_03_scale_up_and_down_is_followed_under_load(stack: SwarmStack, tmp_path: Path) -> None:
    with Load(stack.engine, FRONTEND, tmp_path / "wrk.txt") as load:
        wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
        started = time.monotonic()
        stack.scale("webapp", 8)
        follows(stack, 8, JOIN_BOUND)
        up = time.monotonic() - started
        # Swarm lists a task in its DNS once its HEALTHCHECK passed (the demo app's: within
        # 10 s); from then on, Docker's DNS (discovery.dns_names: tasks.webapp) says which
        # 6 are going before Swarm stops them: out of rotation while they still answer,
        # with no guard hold.
        wait_for(lambda: stack.healthy() == 8, 60, "the 8 replicas healthy")
        before, started = stack.addresses(), time.monotonic()
        stack.scale("webapp", 2)
        gone = timed(lambda: len(served(stack)) == 2, LEAVE_BOUND + 15, "6 out of rotation")
        follows(stack, 2, LEAVE_BOUND + 15)
        down = time.monotonic() - started
    requests, failed = load.result()
    print(
        f"swarm scale 4->8 served in {up:.1f} s, 8->2: out of rotation in {gone:.1f} s, "
        f"followed in {down:.1f} s; {failed} of {requests} failed"
    )
    assert requests > 0
    assert failed == 0, f"{failed} of {requests} requests failed"
    log = stack.logs("poller")
    leaving = [json.loads(line) for line in log.splitlines() if "members leaving, as DNS" in line]
    assert {a for said in leaving for a in said["addresses"]} == before - stack.addresses()
    assert "guard holding removals" not in log


def update_state(stack: SwarmStack, service: str = "webapp") -> str:
    return stack.engine.docker(
        "service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
        f"{stack.name}_{service}",
    ).stdout.strip()  # fmt: skip


def tasks(stack: SwarmStack, service: str = "webapp") -> set[str]:
    """The running containers of the service on this node."""
    label = f"com.docker.swarm.service.name={stack.name}_{service}"
    return set(stack.engine.docker("ps", "-q", "--filter", f"label={label}").stdout.split())


@pytest.mark.parametrize("order", ["stop-first", "start-first"])
def test_04_a_rolling_update_loses_no_get_and_no_post(
    stack: SwarmStack, tmp_path: Path, order: str
) -> None:
    """`docker service update --force`, every replica replaced one at a time, under GETs
    and POSTs at once: the reference app's stop (docs/RELIABILITY.md) and poller's drain
    lose none of either, with no reload."""
    stack.scale("webapp", 3)
    follows(stack, 3, JOIN_BOUND + LEAVE_BOUND)
    wait_for(lambda: update_state(stack) in ("", "completed"), 60, "no update under way")
    old, reloads = tasks(stack), stack.haproxy().reloads()
    with (
        Load(stack.engine, FRONTEND, tmp_path / "get.txt") as gets,
        Load(stack.engine, ORDERS, tmp_path / "post.txt", post=True) as posts,
    ):
        wait_for(lambda: stack.haproxy().connections() >= 16, 10, "both loads to connect")
        started = time.monotonic()
        stack.engine.docker(
            "service", "update", "--force", "--detach", "--update-order", order,
            f"{stack.name}_webapp", timeout=60,
        )  # fmt: skip
        wait_for(lambda: update_state(stack) == "completed", 240, f"the {order} update")
        follows(stack, 3, LEAVE_BOUND + 15)
        converged = time.monotonic() - started
    (got, got_failed), (posted, post_failed) = gets.result(), posts.result()
    print(
        f"rolling update {order}: converged in {converged:.1f} s; GET {got_failed} of {got} "
        f"failed, POST {post_failed} of {posted}"
    )
    assert tasks(stack).isdisjoint(old), "not every replica was replaced"
    assert got > 0
    assert posted > 0
    assert got_failed == 0, f"{got_failed} of {got} GETs failed"
    assert post_failed == 0, f"{post_failed} of {posted} POSTs failed"
    assert stack.haproxy().reloads() == reloads
