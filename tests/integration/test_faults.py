"""Faults around a running `poller run` and a real HAProxy, on loopback: the poller killed
mid-apply, a full or read-only config directory, HAProxy's sockets missing or refusing,
the wall clock jumping. Each judges by what a user would check: HAProxy's config file is
whole and valid, HAProxy serves the right nodes, the poller lives and says what failed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from poller.applying.planning import servers_in_file
from poller.config import load_settings
from poller.haproxy.rendering import context, load_template, render
from tests.support.filesystems import fill
from tests.support.labs import wait_for
from tests.support.loopback import Lab, serves, settled
from tests.support.processes import haproxy_accepts
from tests.support.requirements import unavailable

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

A, B, C = "127.0.3.2", "127.0.3.3", "127.0.3.4"
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def changes(lab: Lab, result: str) -> float:
    return lab.metric("poller_haproxy_changes_total", f'result="{result}"')


def whole_render(lab: Lab) -> bool:
    """The installed file is exactly what poller renders for the servers it lists: not
    a prefix of one, not a mix of two."""
    settings = load_settings(lab.poller_yaml, environ={})
    text = lab.config_path.read_text()
    template = load_template(settings.haproxy.template)
    servers = servers_in_file(text)
    return render(template, context(settings, servers)) == text


@pytest.mark.timeout(400)  # 50 starts and kills: about a minute here
def test_poller_killed_mid_apply_never_leaves_a_broken_config(tmp_path: Path) -> None:
    """kill -9 at random moments of 50 starts, half of them on the reload path (the
    longest apply: validate, install, reload): the installed file is always whole and
    valid, HAProxy keeps running, and every tenth restart, left alone, converges with at
    most one change."""
    seed = int(os.environ.get("POLLER_TEST_SEED") or random.randrange(2**32))  # to replay one
    rng = random.Random(seed)
    lab = Lab(tmp_path / "lab")
    try:
        lab.start_haproxy()
        lab.start_node(A, "a")
        for round_number in range(50):
            where = f"seed {seed}, round {round_number}"
            reload_path = round_number % 2 == 1
            lab.write_settings({"haproxy": {"runtime_api": not reload_path}})
            # Toggle B, so every start finds something to change.
            if f"node-{B}" in lab.procs:
                lab.stop_node(B)
            else:
                lab.start_node(B, "b")
            wanted = {A, B} if f"node-{B}" in lab.procs else {A}
            poller = lab.start_poller()
            if round_number % 10 == 9:
                # Converged: HAProxy and the file agree with the nodes, and this poller has
                # brought or found HAProxy in step since it started (HAProxy may already
                # agree when a killed poller did the job: that alone is not convergence).
                def converged(w: set[str] = wanted) -> bool:
                    in_step = lab.metric("poller_haproxy_last_in_step_timestamp_seconds")
                    return in_step > 0 and settled(lab, *w)

                try:
                    wait_for(converged, 15, f"convergence ({where})")
                except TimeoutError as exc:
                    raise AssertionError(
                        f"{exc}; {lab.servers()}\n{lab.log('poller')[-4000:]}"
                    ) from exc
                assert changes(lab, "ok") <= 1, where
                assert changes(lab, "failed") == 0, where

                # Copies staged by killed writers are gone once a poller started (the
                # running poller's own write, e.g. of .last-good, may still be in flight).
                def leftovers() -> list[str]:
                    return [p.name for p in lab.config_path.parent.glob(".haproxy.cfg.*")]

                try:
                    wait_for(lambda: leftovers() == [], 5, "staged copies to go")
                except TimeoutError:
                    raise AssertionError(f"{where}: {leftovers()}") from None
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    poller.wait(rng.uniform(0.0, 1.2))  # a random moment to die at
            lab.stop("poller", signal.SIGKILL)
            haproxy_accepts(lab.config_path, where)
            assert whole_render(lab), where
            assert lab.admin("show info").startswith("Name: HAProxy"), where
    finally:
        lab.close()


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_config_directory_full_or_read_only(
    tmp_path: Path, small_config_dir: Path, fault: str
) -> None:
    lab = Lab(tmp_path / "lab", config_dir=small_config_dir)
    try:
        lab.start_haproxy()
        lab.start_node(A, "a")
        lab.start_poller()
        wait_for(lambda: settled(lab, A), 10, "A to join")
        before = lab.config_path.read_bytes()
        filler = None
        if fault == "full":
            filler = fill(small_config_dir)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(small_config_dir)], check=True)
        lab.start_node(B, "b")
        # The runtime API still takes B; the file cannot follow, and the log says where.
        wait_for(lambda: serves(lab, A, B), 10, "HAProxy to serve B")
        expected = "No space left on device" if fault == "full" else "Read-only file system"
        wait_for(lambda: expected in lab.log("poller"), 10, "the error in the log")
        assert str(lab.config_path) in lab.log("poller")
        assert lab.config_path.read_bytes() == before  # the live config is untouched
        haproxy_accepts(lab.config_path)
        assert sorted(p.name for p in small_config_dir.iterdir()) == sorted(
            ["haproxy.cfg", "haproxy.cfg.last-good"] + (["filler"] if filler else [])
        )  # no half-written copies left behind
        assert lab.poller_alive()
        if filler is not None:
            filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(small_config_dir)], check=True)
        # Retried with backoff (at most 15 s apart) until the file follows.
        wait_for(lambda: settled(lab, A, B), 20, "the file to follow once space returns")
        haproxy_accepts(lab.config_path)
    finally:
        lab.close()


@pytest.mark.parametrize("fault", ["missing", "refusing"])
def test_haproxy_socket_missing_or_refusing_is_retried_with_backoff(
    tmp_path: Path, fault: str
) -> None:
    lab = Lab(tmp_path / "lab")
    try:
        lab.init_config()
        refusing = None
        if fault == "refusing":
            # A socket file nobody listens on: connect() is refused, as after a crash.
            refusing = socket.socket(socket.AF_UNIX)
            refusing.bind(str(lab.admin_socket))
        lab.start_node(A, "a")
        lab.start_poller()
        wait_for(lambda: "waiting for HAProxy's runtime API" in lab.log("poller"), 10, "a retry")
        # Backoff, not a busy loop: doubling from 0.5 s, at most ~5 tries in 6 s.
        failed = ("poller_haproxy_changes_total", 'method="offline",result="failed"')
        first = lab.metric(*failed)
        with contextlib.suppress(subprocess.TimeoutExpired):
            lab.procs["poller"].wait(6.0)  # a measurement window: the poller must not exit
        tries = lab.metric(*failed) - first
        assert 1 <= tries <= 5, tries
        # Logged when it starts, not at every try.
        assert lab.log("poller").count("waiting for HAProxy's runtime API") == 1
        assert lab.poller_alive()
        assert str(lab.admin_socket) in lab.log("poller")
        if refusing is not None:
            refusing.close()
            lab.admin_socket.unlink()
        lab.start_haproxy()
        wait_for(lambda: settled(lab, A), 20, "HAProxy to be brought in step")
    finally:
        lab.close()


@pytest.fixture
def faketime_control(tmp_path: Path) -> Path:
    if not FAKETIME.exists():
        unavailable(f"needs {FAKETIME} (apt-get install faketime; .ci/run installs it)")
    control = tmp_path / "faketime"
    control.write_text("+0\n")
    return control


def test_wall_clock_jumps_neither_expire_members_nor_stall(
    tmp_path: Path, faketime_control: Path
) -> None:
    """The poller sees its wall clock set back an hour, then forward two: members stay,
    a newcomer still joins, a leaver still leaves (libfaketime moves only the wall clock
    of the poller's process; the monotonic clock runs on)."""
    lab = Lab(tmp_path / "lab")
    env = {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(faketime_control),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }
    try:
        lab.start_haproxy()
        lab.start_node(A, "a")
        lab.start_node(B, "b")
        lab.start_poller(env=env)
        wait_for(lambda: settled(lab, A, B), 10, "A and B to join")

        faketime_control.write_text("-1h\n")
        wait_for(lambda: lab.metric("poller_clock_jumps_total") >= 1, 10, "the jump seen")
        lab.start_node(C, "c")
        wait_for(lambda: settled(lab, A, B, C), 10, "C to join after the clock went back")

        faketime_control.write_text("+1h\n")
        wait_for(lambda: lab.metric("poller_clock_jumps_total") >= 2, 10, "the second jump")
        lab.stop_node(C)
        wait_for(lambda: settled(lab, A, B), 10, "C to leave after the clock went forward")
        assert changes(lab, "failed") == 0
        assert lab.status("/healthz") is not None  # ages are monotonic: still healthy
        assert [e["kind"] for e in lab.status("/events")["events"]].count("clock_jump") == 2
    finally:
        lab.close()


ODD = Path(__file__).resolve().parents[1] / "support" / "oddnodes.py"


def send(lab: Lab, method: str) -> int:
    """One request to /work through HAProxy's frontend; its status (5xx: it failed)."""
    # An empty body: HAProxy can replay a POST only when it holds its whole body.
    body = b"" if method == "POST" else None
    url = f"http://127.0.0.1:{lab.frontend_port}/work"
    request = urllib.request.Request(url, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("retry_on", ["idempotent", "all"])
def test_a_request_whose_server_died_before_answering_is_replayed_only_if_safe(
    tmp_path: Path, retry_on: str
) -> None:
    """One of two servers reads each request and drops it unanswered. GETs are always
    answered (replayed on the other server). With the default `idempotent`, a POST sent to
    it fails visibly and ran there exactly once; with `all` it is replayed, so it ran there
    and still answered: the side effect happened, and the POST ran again elsewhere."""
    lab = Lab(
        tmp_path / "lab", subnet="127.0.11.8/29", settings={"haproxy": {"retry_on": retry_on}}
    )
    try:
        lab.start_haproxy()
        dies, good = "127.0.11.10", "127.0.11.11"
        lab.spawn(
            "dies",
            [sys.executable, str(ODD), f"dies@{dies}:3000"],
            ready=lambda: "ready" in lab.log("dies"),
        )
        lab.start_node(good, "good")
        lab.start_poller()
        wait_for(lambda: settled(lab, dies, good), 10, "both servers to join")
        gets = [send(lab, "GET") for _ in range(8)]
        posts = [send(lab, "POST") for _ in range(8)]
        took = lab.log("dies").count("took POST /work")
    finally:
        lab.close()
    assert [s for s in gets if s >= 500] == [], gets  # every GET answered
    assert lab.log("dies").count("took GET /work") >= 1  # some went to the dying server
    failed = [s for s in posts if s >= 500]
    if retry_on == "idempotent":
        assert failed, posts  # the POSTs sent to it failed, visibly
        assert took == len(failed), (took, posts)  # each of them ran there exactly once
    else:
        assert failed == [], posts  # replayed, so answered ...
        assert took >= 1  # ... though they had reached the dying server first
