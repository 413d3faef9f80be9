"""Processes the tests start, and only those: tracked by PID, always stopped."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.labs import stop_process

ROOT = Path(__file__).resolve().parents[2]


def haproxy_accepts(path: Path, context: str = "") -> None:
    """`haproxy -c` accepts the config at `path`; else fail with HAProxy's message."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed; .ci/run installs it")
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, f"{context} {check.stdout}{check.stderr}".strip()


def bench_rows(script: str, prefix: str, timeout: float) -> list[list[str]]:
    """Run `python -m bench.<script> --smoke`; the cells of its table rows starting with
    `prefix`."""
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{script.removesuffix('.py')}", "--smoke"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in run.stdout.splitlines()
        if line.startswith(f"| {prefix}")
    ]


def run_poller(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `poller` command as users run it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "poller", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(
        self,
        argv: Sequence[str],
        ready_line: str | None = None,
        timeout: float = 10.0,
        **kwargs: object,
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,  # type: ignore[call-overload]
        )
        self.started.append(proc)
        if ready_line is not None:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            line = ""
            while ready_line not in line:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"{argv[:3]} did not print {ready_line!r}: {line!r}")
                line = proc.stdout.readline()
        return proc

    def python(
        self, script: Path, *args: str, ready_line: str | None = None
    ) -> subprocess.Popen[str]:
        return self.start([sys.executable, str(script), *args], ready_line=ready_line)

    def stop(
        self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, grace: float = 5.0
    ) -> None:
        stop_process(proc, sig, grace)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()
