"""What every lab shares: the processes it starts (tracked by PID, logged to files, always
stopped), HAProxy's own view of itself (read over its admin and master sockets, parsed
with poller's own parser), and the small helpers around them.

The loopback lab (`loopback`), the network-namespace lab (`netlab`) and the Docker
engine suite (`engine`) build on these; the tests, the benchmarks and the demo use them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from poller.haproxy.servers import ADMIN_DRAIN, ADMIN_MAINT, ServerState, parse_servers_state

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
WEBAPP = ROOT / "compose" / "webapp" / "app.py"
# What the old 20 Hz check job logged on every tick it skipped: never again, in any lab.
SCHEDULER_SKIP = "maximum number of running instances"


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal a process we started (by its PID) and reap it; SIGKILL after `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def wrk_failures(report: str) -> tuple[int, int]:
    """(requests, failed) from a wrk report: failed = non-2xx/3xx + socket errors."""
    match = re.search(r"(\d+) requests in", report)
    if match is None:
        raise ValueError(f"not a wrk report: {report[:200]!r}")
    requests, failed = int(match.group(1)), 0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    if match:
        failed += int(match.group(1))
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    if match:
        failed += sum(int(x) for x in match.groups())
    return requests, failed


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def unix_command(path: Path, line: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def current_connections(admin_socket: Path) -> int:
    """HAProxy's open client connections (`show info` CurrConns): how to know that a load
    generator is connected, without sleeping on it."""
    match = re.search(r"^CurrConns: (\d+)$", unix_command(admin_socket, "show info"), re.M)
    return int(match.group(1)) if match else 0


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The sum of a metric's samples in Prometheus text (those whose labels start with
    `labels`, e.g. `kind="check",result="ok"`)."""
    prefix = name + (f"{{{labels}" if labels else "")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and not line.startswith(name + "_")
    )


def _try(function: Callable[..., T], *args: Any) -> T | None:
    try:
        return function(*args)
    except OSError:
        return None


class HAProxyView:
    """HAProxy's own view of a backend, over its admin and master sockets."""

    def __init__(self, admin_socket: Path, master_socket: Path, backend: str = "nodes") -> None:
        self.admin_socket = admin_socket
        self.master_socket = master_socket
        self.backend = backend

    def admin(self, line: str) -> str:
        return unix_command(self.admin_socket, line)

    def states(self) -> list[ServerState]:
        return parse_servers_state(self.admin(f"show servers state {self.backend}"), self.backend)

    def serving(self) -> set[str]:
        """Addresses HAProxy sends traffic to: running, not in maintenance or drain."""
        return {
            s.endpoint.address
            for s in self.states()
            if s.op_state == 2 and not s.admin_state & (ADMIN_MAINT | ADMIN_DRAIN)
        }

    def enabled(self) -> set[str]:
        """Addresses not in maintenance or drain (whatever HAProxy's checks say)."""
        return {s.endpoint.address for s in self.states() if s.admin_state == 0}

    def listed(self) -> set[str]:
        return {s.endpoint.address for s in self.states()}

    def reloads(self) -> tuple[int, int]:
        """(reloads, failed) from the master's `show proc`."""
        # The master re-executes itself on a reload: its socket refuses for a moment.
        answer = wait_for(
            lambda: _try(unix_command, self.master_socket, "show proc"), 10, "the master CLI"
        )
        match = re.search(r"master\s+(\d+)\s+\[failed:\s*(\d+)\]", answer)
        if match is None:
            raise RuntimeError(f"unexpected show proc answer: {answer!r}")
        return int(match.group(1)), int(match.group(2))

    def answers(self) -> bool:
        return _try(unix_command, self.admin_socket, "show info") is not None

    def connections(self) -> int:
        return current_connections(self.admin_socket)


class ProcessLab:
    """Processes started for a lab: each logs to `<workdir>/<name>.log`, is tracked by its
    PID and stopped by `close()` (HAProxy with SIGKILL, the rest with SIGTERM), which
    also checks that no poller logged a scheduler skip."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], object] | None = None,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.workdir,
                env=None if env is None else {**os.environ, **env},
            )
        self.procs[name] = proc
        if ready is not None:

            def up() -> object:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}: {self.log(name)[-2000:]}"
                    )
                return ready()

            wait_for(up, timeout, f"{name} to start")
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        self.stopped.append(proc)
        return stop_process(proc, sig, timeout)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, signal.SIGKILL if name.startswith("haproxy") else signal.SIGTERM)
        for path in self.workdir.glob("poller*.log"):
            if SCHEDULER_SKIP in path.read_text(errors="replace"):
                raise AssertionError(f"{path.name}: the scheduler skipped a job run")

    def poller_alive(self) -> bool:
        proc = self.procs.get("poller")
        return proc is not None and proc.poll() is None
