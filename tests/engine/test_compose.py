"""compose/docker-compose.yml on a real Docker engine, as a user runs it.

The project's own files, unchanged: `docker compose up --build` builds the poller and web
images from their Dockerfiles (on the stand-in base images), HAProxy publishes :80 and
the poller's status page 127.0.0.1:9345, all inside the engine's namespace. wrk sends
requests to HAProxy's published port while the stack changes. Each scenario asserts what
a user would check: the set HAProxy serves (`show servers state` over the shared admin
socket), failed requests, and the master's reload counter. Runs in order on one stack.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.config import load_settings
from tests.support.engine import (
    ComposeProject,
    Engine,
    Load,
    problems_in_log,
    served,
    server_lines,
    timed,
)
from tests.support.labs import wait_for
from tests.support.processes import ROOT

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

SETTINGS = load_settings(ROOT / "config" / "poller.yaml", environ={})
# "Followed within interval x rise + 1 s."
FOLLOW_SECONDS = SETTINGS.discovery.interval_seconds * SETTINGS.pool.rise + 1.0
FRONTEND = "http://127.0.0.1:80/"
STATUS_PORT = 9345
TIMINGS: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def project(engine: Engine) -> Iterator[ComposeProject]:
    project = ComposeProject(engine)
    try:
        project.compose("up", "-d", "--build", "--scale", "webapp=3", timeout=900)
        yield project
    finally:
        poller_log = project.logs("poller")
        print(project.compose("logs", "--no-color", "--tail", "200").stdout)
        project.compose("down", "-v", "--timeout", "5")
    # Read the logs of what ran: nothing at warning or above that no test asked for.
    unexpected = [line for line in problems_in_log(poller_log) if "guard" not in line]
    assert unexpected == [], "\n".join(unexpected[:20])


def follows(project: ComposeProject, what: str, timeout: float = 60) -> float:
    """Seconds until HAProxy serves exactly the running web containers."""
    return timed(lambda: served(project) == project.addresses() != set(), timeout, what)


def under_load(project: ComposeProject, tmp: Path) -> Load:
    load = Load(project.engine, FRONTEND, tmp / f"wrk-{time.monotonic_ns()}.txt")
    return load


def connected(project: ComposeProject) -> None:
    haproxy = project.haproxy()
    wait_for(lambda: haproxy.connections() > 0, 10, "wrk to connect")


def test_01_up_serves_exactly_the_scaled_web_nodes(project: ComposeProject) -> None:
    follows(project, "3 web nodes to be served", timeout=120)
    assert len(project.addresses()) == 3
    hosts = set()
    for _ in range(12):
        status, body = project.engine.get(80, "/")
        assert status == 200, body
        hosts.add(body)
    assert len(hosts) == 3, "requests through :80 did not reach all three nodes"


def test_01b_the_api_service_is_found_by_the_same_sweep_and_routed_by_path(
    project: ComposeProject,
) -> None:
    """The stack's second service (the demo node on port 3001): its own backend, and
    HAProxy sends /api there while everything else stays on the web nodes."""
    api = project.addresses("api")
    assert len(api) == 1
    view = project.haproxy("api")
    wait_for(lambda: view.serving() == api, FOLLOW_SECONDS + 5, "the api node in backend api")
    for path, tag in (("/api/orders", "api"), ("/", "demo")):
        status, body = project.engine.get(80, path)
        assert status == 200, body
        assert json.loads(body).get("tag") == tag, (path, body)


def test_02_status_page_answers_on_the_published_loopback_port(project: ComposeProject) -> None:
    status, page = project.engine.get(STATUS_PORT, "/")
    assert status == 200
    assert b"<title>" in page
    pool = project.engine.get_json(STATUS_PORT, "/pool")
    serving = {(m["service"], m["address"]) for m in pool["members"] if m["serving"]}
    assert serving == {("web", a) for a in project.addresses()} | {
        ("api", a) for a in project.addresses("api")
    }
    assert pool["discovery"]["method"] == "arp"


def test_03_scale_up_and_down_under_load_loses_no_request(
    project: ComposeProject, tmp_path: Path
) -> None:
    with under_load(project, tmp_path) as load:
        connected(project)
        project.compose("up", "-d", "--no-deps", "--scale", "webapp=6", "webapp")
        up = follows(project, "scale to 6")
        assert len(project.addresses()) == 6
        project.compose("up", "-d", "--no-deps", "--scale", "webapp=2", "webapp")
        down = follows(project, "scale to 2")
        assert len(project.addresses()) == 2
    requests, failed = load.result()
    TIMINGS.setdefault("compose scale up", []).append(up)
    TIMINGS.setdefault("compose scale down", []).append(down)
    print(f"scale 3->6 followed in {up:.2f} s, 6->2 in {down:.2f} s; {failed} of {requests}")
    assert requests > 0
    assert failed == 0, f"{failed} of {requests} requests failed"
    assert up <= FOLLOW_SECONDS
    assert down <= FOLLOW_SECONDS


def test_04_killed_web_container_leaves_rotation_within_a_second(
    project: ComposeProject,
) -> None:
    project.compose("up", "-d", "--no-deps", "--scale", "webapp=3", "webapp")
    follows(project, "back to 3")
    victim = project.containers("webapp")[0]
    address = next(iter(project.addresses() - _addresses_without(project, victim)))
    project.engine.docker("kill", victim)
    gone = timed(lambda: address not in served(project), 5, "the killed node out of rotation")
    print(f"killed {address}: out of rotation in {gone:.2f} s")
    assert gone <= 1.0


def _addresses_without(project: ComposeProject, container: str) -> set[str]:
    out = project.engine.docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout
    return project.addresses() - {out.strip()}


def test_05_restarting_the_poller_changes_nothing_in_haproxy(project: ComposeProject) -> None:
    project.compose("up", "-d", "--no-deps", "--scale", "webapp=3", "webapp")
    follows(project, "3 nodes served")
    haproxy = project.haproxy()
    # Settled first: earlier scale-downs may have left removals the guard still holds
    # (HAProxy lists them, DOWN) until guard.max_hold_seconds; a restart forgets holds.
    wait_for(
        lambda: haproxy.listed() == project.addresses(),
        SETTINGS.guard.max_hold_seconds + 15,
        "held removals to be released",
    )
    before_servers, before_reloads = haproxy.states(), haproxy.reloads()
    project.compose("restart", "poller")
    expected = {
        "web": {f"{address}:3000" for address in project.addresses()},
        "api": {f"{address}:3001" for address in project.addresses("api")},
    }

    def reconciled() -> bool:
        pool = project.engine.get_json(STATUS_PORT, "/pool")
        return (
            pool is not None
            and {name: set(live) for name, live in pool["haproxy"]["live_by_service"].items()}
            == expected
        )

    wait_for(reconciled, 30, "the restarted poller to reconcile")
    log = project.logs("poller")
    since_restart = log[log.rfind("status server listening") :]
    assert haproxy.states() == before_servers
    assert haproxy.reloads() == before_reloads
    assert "HAProxy updated" not in since_restart


def test_06_restarting_haproxy_is_resynced(project: ComposeProject) -> None:
    expected = project.addresses()
    project.compose("restart", "haproxy")
    wait_for(lambda: served(project) == expected, 30, "HAProxy back with the same servers")
    assert project.haproxy().listed() == expected


def test_07_scale_with_init_in_the_chain_never_empties_the_live_config(
    project: ComposeProject,
) -> None:
    follows(project, "steady before the scale")
    pool = len(project.addresses())
    path = project.config_file()
    lowest = [server_lines(path.read_text())]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                lowest.append(server_lines(path.read_text()))
            except OSError:
                lowest.append(-1)
            stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Without --no-deps: compose re-runs haproxy-init, the one-shot dependency.
        project.compose("up", "-d", "--scale", "webapp=4")
        follows(project, "scale to 4 with the init step")
    finally:
        stop.set()
        watcher.join()
    assert min(lowest) >= pool, f"the live config fell to {min(lowest)} servers (pool {pool})"
    assert "kept the existing config" in project.logs("haproxy-init")


def test_08_down_then_up_keeps_the_pool_without_a_reload_storm(project: ComposeProject) -> None:
    project.compose("down", "--timeout", "5")  # the named volumes stay
    project.compose("up", "-d", "--scale", "webapp=3")
    follows(project, "the pool back after down/up", timeout=60)
    wait_for(lambda: project.haproxy().answers(), 10, "HAProxy")
    reloads, failed = project.haproxy().reloads()
    assert failed == 0
    assert reloads <= 1, f"{reloads} reloads after up"


def test_09_a_changed_web_service_rolled_out_beside_the_old_loses_no_request(
    project: ComposeProject, tmp_path: Path
) -> None:
    """The zero-downtime way to roll a changed web service out with compose
    (docs/DEPLOYMENT.md): start the new replicas beside the old ones (`--no-recreate
    --scale 2N`), wait until HAProxy serves them, then stop the old ones gracefully;
    poller drains each. Then what plain `up -d` does to the same change: it recreates
    the replicas itself; measured and printed, not asserted."""
    follows(project, "steady before the rollout")
    v2 = tmp_path / "v2.yml"
    v2.write_text("services:\n  webapp:\n    environment:\n      TAG: demo-v2\n")
    changed = ComposeProject(project.engine, project.name, project.file, (v2,))
    old = project.containers("webapp")
    assert len(old) == 3
    with under_load(project, tmp_path) as load:
        connected(project)
        started = time.monotonic()
        changed.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "webapp=6", "webapp")
        wait_for(
            lambda: len(project.addresses()) == 6 and served(project) == project.addresses(),
            60,
            "the old and the new replicas served",
        )
        project.engine.docker("stop", "--time", "15", *old)
        project.engine.docker("rm", *old)
        follows(project, "only the new replicas served")
        rolled = time.monotonic() - started
    requests, failed = load.result()
    new = project.containers("webapp")
    tags = {
        project.engine.docker("inspect", "--format", "{{range .Config.Env}}{{.}} {{end}}", c)
        .stdout.split("TAG=")[1]
        .split()[0]
        for c in new
    }
    print(f"rolled out beside the old in {rolled:.1f} s: {failed} of {requests} failed")
    assert len(new) == 3
    assert set(new).isdisjoint(old)
    assert tags == {"demo-v2"}
    assert requests > 0
    assert failed == 0, f"{failed} of {requests} requests failed"
    with under_load(project, tmp_path) as plain:
        connected(project)
        started = time.monotonic()
        project.compose("up", "-d", "--no-deps", "webapp")  # back to TAG demo: recreated
        follows(project, "the recreated replicas served")
        recreated = time.monotonic() - started
    requests, failed = plain.result()
    print(
        f"plain `up -d` recreated the service in {recreated:.1f} s: {failed} of {requests} failed"
    )
