"""The compose stack on loopback: HAProxy, the poller sidecar and demo nodes as local
processes, started with the same command lines as the compose services.

Used by the demo (`make demo`), the integration tests and the benchmarks. Every process it
starts is tracked by PID and stopped by `close()`; every file lives in its work directory.
Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
WEBAPP = ROOT / "compose" / "webapp" / "app.py"
T = TypeVar("T")


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
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
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


def current_connections(admin_socket: Path) -> int:
    """HAProxy's open client connections (`show info` CurrConns): how to know that a load
    generator is connected, without sleeping on it."""
    match = re.search(r"^CurrConns: (\d+)$", unix_command(admin_socket, "show info"), re.M)
    return int(match.group(1)) if match else 0


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


@dataclass
class Lab:
    workdir: Path
    subnet: str = "127.0.3.0/27"
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    config_dir: Path | None = None  # where haproxy.cfg lives (default: the workdir)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.frontend_port = free_port()
        self.stats_port = free_port()
        self.status_port = free_port()
        self.config_path = (self.config_dir or self.workdir) / "haproxy.cfg"
        self.admin_socket = self.workdir / "admin.sock"
        self.master_socket = self.workdir / "master.sock"
        self.poller_yaml = self.workdir / "poller.yaml"
        self.write_settings()

    # -- settings ------------------------------------------------------------------------

    def base_settings(self) -> dict[str, dict[str, Any]]:
        return {
            "discovery": {
                "subnets": [self.subnet],
                "exclude": [],
                "ports": [3000],
                "interval_seconds": 0.5,
            },
            "probe": {"timeout_seconds": 0.3, "identity": {"json_field": "host"}},
            "pool": {"interval_seconds": 0.5, "rise_interval_seconds": 0.1, "rise": 2, "fall": 2},
            "haproxy": {
                "config_path": str(self.config_path),
                "admin_socket": str(self.admin_socket),
                "master_socket": str(self.master_socket),
                "frontend_bind": f"127.0.0.1:{self.frontend_port}",
                "stats_bind": f"127.0.0.1:{self.stats_port}",
                "log_target": None,
                "min_reload_gap_seconds": 0.2,
                "drain_timeout_seconds": 2.0,
            },
            "status": {"listen": f"127.0.0.1:{self.status_port}"},
            "state": {"path": str(self.workdir / "state.json")},
        }

    def write_settings(self, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        merged = self.base_settings()
        for layer in (self.settings, extra or {}):
            for section, values in layer.items():
                merged.setdefault(section, {}).update(values)
        self.poller_yaml.write_text(yaml.safe_dump(merged, sort_keys=True))

    # -- processes -----------------------------------------------------------------------

    def _start(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], object] | None,
        log: Path | None = None,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        out = open(log or self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=None if env is None else {**os.environ, **env},
        )
        out.close()
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
        return None if proc is None else stop_process(proc, sig, timeout)

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, signal.SIGKILL if name.startswith("haproxy") else signal.SIGTERM)

    def poller_alive(self) -> bool:
        proc = self.procs.get("poller")
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def poller_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "poller", *args, "--config", str(self.poller_yaml)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    def init_config(self) -> None:
        """What the compose init step does: a valid config with an empty backend (503)."""
        run = self.poller_command("render", "--output", str(self.config_path))
        if run.returncode != 0:
            raise RuntimeError(f"poller render failed: {run.stderr}")

    def start_haproxy(self) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        if not self.config_path.exists():
            self.init_config()
        # The compose service's command line: master-worker, foreground, master CLI.
        self._start(
            "haproxy",
            [binary, "-W", "-db", "-S", str(self.master_socket), "-f", str(self.config_path)],
            ready=lambda: self.admin_socket.exists() and self._answers(self.admin_socket),
        )

    def _answers(self, path: Path) -> bool:
        try:
            unix_command(path, "show info", timeout=1.0)
        except OSError:
            return False
        return True

    def start_poller(
        self, *extra: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env_python = sys.executable
        return self._start(
            "poller",
            [env_python, "-m", "poller", "run", "--config", str(self.poller_yaml), *extra],
            ready=lambda: self.status("/healthz", ok_only=False) is not None,
            env=env,
        )

    def start_node(self, address: str, host: str | None = None, *extra: str) -> None:
        if connects(address, 3000):
            raise RuntimeError(
                f"{address}:3000 is already taken by another process: stop it and retry"
            )
        self._start(
            f"node-{address}",
            [
                sys.executable,
                str(WEBAPP),
                "--bind",
                address,
                "--port",
                "3000",
                "--host",
                host or f"node-{address}",
                *extra,
            ],
            ready=lambda: connects(address, 3000),
        )

    def stop_node(self, address: str, sig: int = signal.SIGTERM) -> None:
        self.stop(f"node-{address}", sig)

    # -- observing -----------------------------------------------------------------------

    def admin(self, line: str) -> str:
        return unix_command(self.admin_socket, line)

    def servers(self) -> dict[str, tuple[str, int, int]]:
        """HAProxy's servers in `nodes`: name -> (address, port, admin_state)."""
        found = {}
        for line in self.admin("show servers state nodes").splitlines():
            fields = line.split()
            if len(fields) > 18 and fields[0].isdigit():
                found[fields[3]] = (fields[4], int(fields[18]), int(fields[6]))
        return found

    def addresses(self) -> set[str]:
        return {address for address, _, _ in self.servers().values()}

    def reloads(self) -> tuple[int, int]:
        """(reloads, failed) from the master's `show proc`."""
        # The master re-executes itself on a reload: its socket refuses for a moment.
        answer = wait_for(
            lambda: _try(unix_command, self.master_socket, "show proc"), 5, "the master CLI"
        )
        match = re.search(r"master\s+(\d+)\s+\[failed:\s*(\d+)\]", answer)
        if match is None:
            raise RuntimeError(f"unexpected show proc answer: {answer!r}")
        return int(match.group(1)), int(match.group(2))

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, dict[str, Any] | None]:
        """One request through HAProxy's frontend: (status, JSON body or None)."""
        url = f"http://127.0.0.1:{self.frontend_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def routed_hosts(self, requests: int = 12) -> set[str]:
        hosts = set()
        for _ in range(requests):
            status, body = self.get()
            if status == 200 and body:
                hosts.add(str(body.get("host")))
        return hosts

    def status(self, path: str, ok_only: bool = True) -> Any:
        url = f"http://127.0.0.1:{self.status_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if ok_only:
                return None
            raw = exc.read()
        except OSError:
            return None
        return raw.decode() if path == "/metrics" else json.loads(raw)

    def metric(self, name: str, labels: str = "") -> float:
        text = self.status("/metrics") or ""
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + (f"{{{labels}" if labels else "")) and not line.startswith(
                name + "_"
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total


def _try(function: Callable[..., T], *args: Any) -> T | None:
    try:
        return function(*args)
    except OSError:
        return None


def connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
