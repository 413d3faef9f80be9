"""The compose stack on loopback: HAProxy, the poller sidecar and demo nodes as local
processes, started with the same command lines as the compose services.

Used by the demo (`make demo`), the integration tests and the benchmarks. Every process it
starts is tracked by PID and stopped by `close()`; every file lives in its work directory.
Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.labs import (
    ROOT,
    WEBAPP,
    HAProxyView,
    ProcessLab,
    free_port,
    metric_value,
)
from tests.support.requirements import haproxy_binary


class Lab(ProcessLab):
    def __init__(
        self,
        workdir: Path,
        subnet: str = "127.0.3.0/27",
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        config_dir: Path | None = None,  # where haproxy.cfg lives (default: the workdir)
    ) -> None:
        super().__init__(workdir)
        self.subnet = subnet
        self.settings = settings or {}
        self.frontend_port = free_port()
        self.stats_port = free_port()
        self.status_port = free_port()
        self.config_path = (config_dir or self.workdir) / "haproxy.cfg"
        self.admin_socket = self.workdir / "admin.sock"
        self.master_socket = self.workdir / "master.sock"
        self.poller_yaml = self.workdir / "poller.yaml"
        self.haproxy = HAProxyView(self.admin_socket, self.master_socket)
        # `haproxy.mode: backends`: the user's own files, loaded before poller's.
        self.user_configs: list[Path] = []
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
                "binary": haproxy_binary() or "haproxy",
                "min_reload_gap_seconds": 0.2,
                "drain_timeout_seconds": 2.0,
            },
            "status": {"listen": f"127.0.0.1:{self.status_port}"},
            "state": {"path": str(self.workdir / "state.json")},
        }

    def write_settings(self, extra: Mapping[str, Any] | None = None) -> None:
        merged: dict[str, Any] = self.base_settings()
        for layer in (self.settings, extra or {}):
            for section, values in layer.items():
                if isinstance(values, list):  # services: a list, taken whole
                    merged[section] = values
                else:
                    merged.setdefault(section, {}).update(values)
        if merged.get("services"):
            merged["discovery"].pop("ports", None)  # each service has its own
        self.poller_yaml.write_text(yaml.safe_dump(merged, sort_keys=True))

    # -- processes -----------------------------------------------------------------------

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
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        if not self.config_path.exists():
            self.init_config()
        # The compose service's command line: master-worker, foreground, master CLI.
        self.spawn(
            "haproxy",
            [
                binary,
                "-W",
                "-db",
                "-S",
                str(self.master_socket),
                *(word for path in self.user_configs for word in ("-f", str(path))),
                "-f",
                str(self.config_path),
            ],
            ready=self.haproxy.answers,
        )

    def start_poller(
        self, *extra: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            "poller",
            [sys.executable, "-m", "poller", "run", "--config", str(self.poller_yaml), *extra],
            ready=lambda: self.status("/healthz", ok_only=False) is not None,
            env=env,
        )

    def start_node(
        self, address: str, host: str | None = None, *extra: str, port: int = 3000
    ) -> None:
        if connects(address, port):
            raise RuntimeError(
                f"{address}:{port} is already taken by another process: stop it and retry"
            )
        self.spawn(
            f"node-{address}",
            [
                sys.executable,
                str(WEBAPP),
                "--bind",
                address,
                "--port",
                str(port),
                "--host",
                host or f"node-{address}",
                *extra,
            ],
            ready=lambda: connects(address, port),
        )

    def stop_node(self, address: str, sig: int = signal.SIGTERM) -> None:
        self.stop(f"node-{address}", sig)

    # -- observing -----------------------------------------------------------------------

    def admin(self, line: str) -> str:
        return self.haproxy.admin(line)

    def servers(self) -> dict[str, tuple[str, int, int]]:
        """HAProxy's servers in `nodes`: name -> (address, port, admin_state)."""
        return {
            s.name: (s.endpoint.address, s.endpoint.port, s.admin_state)
            for s in self.haproxy.states()
        }

    def addresses(self, backend: str = "nodes") -> set[str]:
        if backend == self.haproxy.backend:
            return self.haproxy.listed()
        return HAProxyView(self.admin_socket, self.master_socket, backend).listed()

    def reloads(self) -> tuple[int, int]:
        return self.haproxy.reloads()

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, dict[str, Any] | None]:
        """One request through HAProxy's frontend: (status, JSON body or None)."""
        url = f"http://127.0.0.1:{self.frontend_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except http.client.RemoteDisconnected:
            # Closed without an answer: HAProxy 3.0 does that to a client whose session it
            # was told to shut down (`shutdown sessions server`); 2.6 answered them.
            return 0, None

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
        return metric_value(self.status("/metrics") or "", name, labels)


def connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def serves(lab: Lab, *addresses: str) -> bool:
    return lab.addresses() == set(addresses)


def settled(lab: Lab, *addresses: str) -> bool:
    """HAProxy serves exactly these, and its config file lists exactly these too (the
    runtime change comes first, the file follows)."""
    from poller.applying.planning import servers_in_file

    in_file = {s.address for s in servers_in_file(lab.config_path.read_text())["nodes"]}
    return serves(lab, *addresses) and in_file == set(addresses)
