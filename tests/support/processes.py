"""Processes the tests start, and only those: tracked by PID, always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)
        last = condition()
    return last


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
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()
