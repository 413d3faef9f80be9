"""`haproxy.mode: backends` against a real HAProxy: the user keeps their own config file
(global with the admin socket, defaults, their frontend, a static backend with a stick
table) and HAProxy runs `-f theirs.cfg -f poller's.cfg`; poller writes only its
backends. Judged as the user would: their file byte for byte, requests through their
frontend, their static backend, a reload of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.labs import unix_command, wait_for
from tests.support.loopback import Lab, settled

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

A, B = "127.0.8.2", "127.0.8.3"
STATIC = "127.0.8.20"  # outside poller's subnet: the user's own server


def their_config(lab: Lab, extra: str = "", socket_options: str = "level admin") -> str:
    return f"""# The user's own HAProxy config: poller never writes it.
global
    master-worker
    stats socket {lab.admin_socket} mode 600 {socket_options} expose-fd listeners
    stats timeout 30s
    hard-stop-after 5s

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend www
    bind 127.0.0.1:{lab.frontend_port}
    use_backend static if {{ path_beg /static }}
    default_backend nodes

backend static
    stick-table type ip size 1k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    server s1 {STATIC}:3000 check
{extra}"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab", subnet="127.0.8.0/28")
    theirs = lab.workdir / "haproxy.cfg"
    lab.config_path = lab.workdir / "poller-backends.cfg"
    lab.user_configs = [theirs]
    lab.write_settings(
        {
            "haproxy": {
                "mode": "backends",
                "user_configs": [str(theirs)],
                "config_path": str(lab.config_path),
                "reconcile_interval_seconds": 0.5,
            }
        }
    )
    theirs.write_text(their_config(lab))
    try:
        lab.start_node(STATIC, "static")
        lab.start_haproxy()
        yield lab
    finally:
        lab.close()


def test_poller_writes_only_its_backends_and_never_the_users_file(lab: Lab) -> None:
    theirs = lab.user_configs[0]
    before = theirs.read_bytes()
    static_before = unix_command(lab.admin_socket, "show servers state static").split("\n")[2:]
    lab.start_poller()
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    wait_for(lambda: lab.routed_hosts(20) == {"a", "b"}, 15, "A and B to be served")
    ours = lab.config_path.read_text()
    sections = [line for line in ours.splitlines() if line[:1].isalpha()]
    assert sections == ["backend nodes"]
    lab.stop_node(B)
    wait_for(lambda: lab.addresses() == {A}, 15, "B to be removed")
    assert lab.routed_hosts(20) == {"a"}
    # Theirs: the file, the static backend and its server, all as they were.
    assert theirs.read_bytes() == before
    status, body = lab.get("/static/x")
    assert (status, body and body.get("host")) == (200, "static")
    static_after = unix_command(lab.admin_socket, "show servers state static").split("\n")[2:]
    assert [row.split()[:7] for row in static_after if row] == [
        row.split()[:7] for row in static_before if row
    ]
    assert lab.reloads() == (0, 0)
    assert "HAProxy updated" in lab.log("poller")
    assert "your HAProxy config" not in lab.log("poller")  # nothing to warn about


def test_a_reload_the_user_makes_keeps_the_pool_served(lab: Lab) -> None:
    lab.start_poller()
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    wait_for(lambda: settled(lab, A, B), 15, "A and B to be served and in poller's file")
    # Their own change: a new frontend rule, then a reload of theirs.
    theirs = lab.user_configs[0]
    theirs.write_text(
        their_config(lab).replace(
            "    default_backend nodes",
            "    http-response set-header X-Theirs 1\n    default_backend nodes",
        )
    )
    unix_command(lab.master_socket, "reload")
    wait_for(lambda: lab.reloads() == (1, 0), 15, "their reload")
    # The members are in poller's file: the new workers serve them at once.
    assert lab.addresses() == {A, B}
    assert lab.routed_hosts(20) == {"a", "b"}


def test_check_config_says_what_the_users_file_lacks(lab: Lab) -> None:
    theirs = lab.user_configs[0]
    theirs.write_text(their_config(lab, socket_options="level operator"))
    run = lab.poller_command("check-config")
    assert run.returncode == 3, run.stderr
    assert "the admin socket is not at `level admin`" in run.stderr
    assert f"stats socket {lab.admin_socket} mode 660 level admin expose-fd listeners" in (
        run.stderr
    )
    theirs.write_text(their_config(lab, extra="\nbackend nodes\n    server x 127.0.0.1:9\n"))
    run = lab.poller_command("check-config")
    assert run.returncode == 3, run.stderr
    assert "defines `nodes`, a backend poller writes" in run.stderr
    theirs.write_text(their_config(lab).replace("default_backend nodes", "default_backend static"))
    run = lab.poller_command("check-config")
    assert run.returncode == 0, run.stderr
    assert "no traffic reaches poller's backend `nodes`" in run.stderr


def test_a_combination_haproxy_rejects_is_never_installed(lab: Lab) -> None:
    """`haproxy -c` judges their file and poller's together: poller's file is not
    installed while theirs references a backend nobody defines (the running HAProxy
    still gets the new member through the runtime API; the file waits)."""
    lab.start_poller()
    lab.start_node(A, "a")
    wait_for(lambda: settled(lab, A), 15, "A to be served, and the file to follow")
    before = lab.config_path.read_bytes()
    theirs = lab.user_configs[0]
    theirs.write_text(their_config(lab).replace("use_backend static", "use_backend nowhere"))
    lab.start_node(B, "b")
    wait_for(lambda: "HAProxy rejected" in lab.log("poller"), 15, "the rejection")
    wait_for(lambda: lab.addresses() == {A, B}, 5, "B to be served at runtime")
    assert lab.config_path.read_bytes() == before  # nothing installed
