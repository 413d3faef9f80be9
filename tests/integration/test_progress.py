"""`poller scan` on a terminal shows how far it has come, the way a person sees it: in a
real pseudo-terminal (tmux), whose screen is captured while it runs and after it ends.

Six loopback listeners that accept and never answer make each probe wait out its
deadline, so a scan of 14 targets, one at a time, takes about three seconds.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.labs import wait_for
from tests.support.processes import ROOT, run_poller

SILENT = [f"127.0.9.{i}" for i in range(2, 8)]
SCAN = ["scan", "--subnet", "127.0.9.0/28", "--port", "3000", "--concurrency", "1"]
LIVE_LINE = re.compile(r"\d+/14 targets · \d+ answered · \d+ healthy · [\d.]+ s( · ETA .+)?")


@pytest.fixture
def silent_listeners() -> Iterator[None]:
    sockets = []
    try:
        for address in SILENT:
            sock = socket.socket()
            sock.bind((address, 3000))
            sock.listen(16)  # the kernel accepts; nobody reads, nobody answers
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; .ci/run installs it")
    command = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    try:
        yield command
    finally:
        subprocess.run([*command, "kill-server"], capture_output=True, timeout=10)


def screen(tmux: list[str]) -> str:
    run = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "scan"], capture_output=True, text=True, timeout=10
    )
    return run.stdout


def start(tmux: list[str], *args: str) -> None:
    line = " ".join([sys.executable, "-m", "poller", *args]) + "; echo SCAN-ENDED; sleep 60"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "scan", "-x", "160", "-y", "40", "-c", str(ROOT), line],
        check=True,
        timeout=10,
    )


@pytest.mark.usefixtures("silent_listeners")
def test_a_live_line_shows_progress_then_is_erased(tmux: list[str]) -> None:
    start(tmux, *SCAN)
    wait_for(lambda: LIVE_LINE.search(screen(tmux)), 20, "the live progress line")
    # Once a few targets are done, the line also says how long the rest will take.
    wait_for(lambda: "ETA" in screen(tmux), 20, "an ETA")

    def ended() -> str:
        now = screen(tmux)
        return now if "SCAN-ENDED" in now else ""

    final = wait_for(ended, 30, "the end")
    assert LIVE_LINE.search(final) is None, final  # erased before the results
    assert "14 targets (127.0.9.0/28 x port 3000, connect)" in final
    assert final.count("timeout") >= len(SILENT)


@pytest.mark.usefixtures("silent_listeners")
def test_quiet_shows_no_line(tmux: list[str]) -> None:
    start(tmux, *SCAN, "--quiet")
    seen: list[str] = []

    def ended() -> bool:
        seen.append(screen(tmux))
        return "SCAN-ENDED" in seen[-1]

    wait_for(ended, 30, "the end", interval=0.1)
    assert not any(LIVE_LINE.search(s) for s in seen)


def test_no_line_when_stderr_is_not_a_terminal() -> None:
    run = run_poller("scan", "--subnet", "127.0.9.0/30", "--port", "3000")
    assert run.returncode == 0, run.stderr
    assert "\033[K" not in run.stderr
    assert "targets ·" not in run.stderr
