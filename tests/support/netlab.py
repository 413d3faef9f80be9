"""The compose topology in Linux network namespaces: no Docker engine needed.

A bridge `heig` lives in a namespace of its own (the "host" side of the Docker network,
holding the gateway address); HAProxy runs in a namespace at .42 with the same command
line as the compose service; the poller sidecar runs in its own namespace with the same
`config/poller.yaml` and entrypoint (only the shared-volume paths are pointed into the
lab's directory, through POLLER_* environment variables); web nodes each get a namespace
at their own address. No namespace has a default route. Everything started is stopped
by PID, and every namespace (with its links) is deleted by `close()`, also after errors.

Needs root (CAP_NET_ADMIN and mounts for `ip netns`). As a script it plays the demo's
timeline in namespaces (`make demo-netns`):

    sudo python -m tests.support.netlab --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.labs import ROOT, WEBAPP, HAProxyView, ProcessLab, metric_value

POLLER_YAML = ROOT / "config" / "poller.yaml"
# The lab's address resolution gives up after one try of 100 ms instead of 3 x 1 s: the
# sweep then waits 0.1 s for an empty address, not 3 s (docs/ARCHITECTURE.md, "Measured facts").
FAST_ARP = {"mcast_solicit": "1", "retrans_time_ms": "100"}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@contextlib.contextmanager
def lab_running(workdir: Path, **options: Any) -> Iterator[NetLab]:
    """A NetLab for a test or a module of tests: closed however the test ends, and, when
    it ended well, checked to leave nothing behind: no namespace, no process running, no
    new "neighbor table overflow" in the kernel log."""
    lab = NetLab(workdir, **options)
    mark = kernel_log_mark()
    try:
        yield lab
    finally:
        lab.close()
    assert lab.leftovers() == [], "namespaces left behind"
    assert all(proc.poll() is not None for proc in lab.stopped), "processes left running"
    assert overflow_lines(since=mark) == 0, "the kernel log gained 'neighbor table overflow'"


def _kernel_log() -> str:
    run = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"dmesg is not readable: {run.stderr.strip()}")
    return run.stdout


_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]", re.MULTILINE)
_OVERFLOW = re.compile(r"^(?:\[\s*(\d+\.\d+)\])?[^\n]*neighbou?r table overflow", re.MULTILINE)


def kernel_log_mark() -> float:
    """The stamp of the newest kernel log line (seconds since boot; 0 when empty): what
    `overflow_lines` counts after."""
    stamps = _STAMP.findall(_kernel_log())
    return float(stamps[-1]) if stamps else 0.0


def overflow_lines(since: float = -1.0) -> int:
    """How many 'neighbor table overflow' lines the kernel log holds stamped after `since`
    (a `kernel_log_mark()`). By stamp, not by count: old lines leaving the ring buffer can
    neither hide new ones nor look like a change. A line without a stamp always counts."""
    return count_overflows(_kernel_log(), since)


def count_overflows(log: str, since: float) -> int:
    return sum(
        1
        for match in _OVERFLOW.finditer(log)
        if match.group(1) is None or float(match.group(1)) > since
    )


class NetLab(ProcessLab):
    """One lab: `prefix` names its namespaces, `network` is the bridge's subnet."""

    def __init__(
        self,
        workdir: Path,
        network: str = "192.168.42.0/24",
        prefix: str | None = None,
        fast_arp: bool = True,
        single_service: bool = False,
    ) -> None:
        """`single_service`: config/poller.yaml without its `services` (the web nodes'
        port 3000 alone, backend `nodes`), for the /16 sweeps: two ports there are twice
        the targets, over the default `max_targets`."""
        if os.geteuid() != 0:
            raise PermissionError("the namespace lab needs root (ip netns, veth, bridge)")
        super().__init__(workdir)
        self.network = network
        self.prefix = prefix or f"pl{os.getpid() % 100000}"
        self.fast_arp = fast_arp
        self.namespaces: list[str] = []
        base, length = self.network.split("/")
        self.prefixlen = int(length)
        octets = base.split(".")
        self.base = ".".join(octets[:3]) if self.prefixlen >= 24 else ".".join(octets[:2])
        self.bridge_ns = self._ns("heig")
        self.gateway = self.address(1)
        sh("ip", "netns", "exec", self.bridge_ns, "ip", "link", "add", "heig", "type", "bridge")
        sh(
            "ip",
            "netns",
            "exec",
            self.bridge_ns,
            "ip",
            "addr",
            "add",
            f"{self.gateway}/{self.prefixlen}",
            "dev",
            "heig",
        )
        sh("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", "heig", "up")
        self.config_dir = self.workdir / "haproxy-config"
        self.run_dir = self.workdir / "haproxy-run"
        self.config_dir.mkdir(exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.haproxy = HAProxyView(self.run_dir / "admin.sock", self.run_dir / "master.sock")
        self.poller_yaml = POLLER_YAML
        if single_service:
            data = yaml.safe_load(POLLER_YAML.read_text())
            del data["services"]
            data["discovery"]["ports"] = [3000]
            data["haproxy"]["backend"] = "nodes"
            self.poller_yaml = self.workdir / "poller.yaml"
            self.poller_yaml.write_text(yaml.safe_dump(data))

    def address(self, host: int) -> str:
        if self.prefixlen >= 24:
            return f"{self.base}.{host}"
        return f"{self.base}.{host // 256}.{host % 256}"

    # -- namespaces and links ------------------------------------------------------------

    def _ns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        sh("ip", "netns", "exec", full, "ip", "link", "set", "lo", "up")
        return full

    def host(self, name: str, address: str) -> str:
        """A namespace with one veth on the bridge at `address` and no default route."""
        ns = self._ns(name)
        index = len(self.namespaces)
        outer, inner = f"{self.prefix}v{index}", "eth0"
        sh(
            "ip",
            "link",
            "add",
            outer,
            "netns",
            self.bridge_ns,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            ns,
        )
        sh("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", outer, "master", "heig")
        sh("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", outer, "up")
        self.add_address(ns, address, inner)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
        if self.fast_arp:
            for key, value in FAST_ARP.items():
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    f"net.ipv4.neigh.{inner}.{key}={value}",
                )
        return ns

    def add_address(self, ns: str, address: str, dev: str = "eth0") -> None:
        """One more address of the bridge's network on `ns`'s link."""
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            "ip",
            "addr",
            "add",
            f"{address}/{self.prefixlen}",
            "dev",
            dev,
        )

    def wrk(self, ns: str, seconds: int, out: Path, path: str = "/") -> subprocess.Popen[bytes]:
        """Load through HAProxy's frontend from namespace `ns`; the report goes to `out`."""
        with out.open("wb") as handle:
            return subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "wrk",
                    "-t1",
                    "-c8",
                    f"-d{seconds}s",
                    "--timeout",
                    "3s",
                    f"http://{self.address(42)}{path}",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def link(self, ns: str, up: bool) -> None:
        """Cut or restore a host's link (a partition)."""
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up" if up else "down")

    # -- processes -----------------------------------------------------------------------

    def start(
        self,
        name: str,
        ns: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready: Callable[[], object] | None = None,
        timeout: float = 15.0,
    ) -> subprocess.Popen[bytes]:
        return self.spawn(name, ["ip", "netns", "exec", ns, *argv], ready, timeout, env, ROOT)

    def close(self) -> None:
        try:
            super().close()
        finally:
            for ns in reversed(self.namespaces):
                sh("ip", "netns", "del", ns, check=False)  # takes its veths along
            self.namespaces.clear()

    # -- the compose services --------------------------------------------------------------

    def poller_env(self) -> dict[str, str]:
        """Only the shared volumes move: the config file is config/poller.yaml itself."""
        return {
            "POLLER_HAPROXY__CONFIG_PATH": str(self.config_dir / "haproxy.cfg"),
            "POLLER_HAPROXY__ADMIN_SOCKET": str(self.run_dir / "admin.sock"),
            "POLLER_HAPROXY__MASTER_SOCKET": str(self.run_dir / "master.sock"),
            "POLLER_HAPROXY__LOG_TARGET": "null",
            "POLLER_STATE__PATH": str(self.workdir / "poller-state" / "state.json"),
            "POLLER_DISCOVERY__SUBNETS": self.network,
            "POLLER_DISCOVERY__EXCLUDE": f"{self.gateway},{self.address(42)}",
        }

    def start_haproxy(self) -> None:
        self.ha_ns = self.host("ha", self.address(42))
        init = subprocess.run(
            [
                sys.executable,
                "-m",
                "poller",
                "render",
                "--config",
                str(self.poller_yaml),
                "--output",
                str(self.config_dir / "haproxy.cfg"),
            ],
            env={**os.environ, **self.poller_env()},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if init.returncode != 0:
            raise RuntimeError(f"haproxy-init failed: {init.stderr}")
        master = self.run_dir / "master.sock"
        # The compose service's command line (the image's entrypoint adds -W -db).
        self.start(
            "haproxy",
            self.ha_ns,
            [
                "haproxy",
                "-W",
                "-db",
                "-S",
                f"{master},mode,660",
                "-f",
                str(self.config_dir / "haproxy.cfg"),
            ],
            ready=self.haproxy.answers,
        )

    def start_poller(self, *extra_env: tuple[str, str]) -> None:
        self.poller_ns = self.host("poller", self.address(2))
        self.start(
            "poller",
            self.poller_ns,
            [sys.executable, "-m", "poller", "run", "--config", str(self.poller_yaml)],
            env={**self.poller_env(), **dict(extra_env)},
            ready=lambda: "poller running" in self.log("poller"),
        )

    def start_node(self, host: int, name: str, *extra: str, port: int = 3000) -> str:
        address = self.address(host)
        ns = self.namespace_of(address) or self.host(f"n{host}", address)
        self.start(
            f"node-{address}",
            ns,
            [sys.executable, str(WEBAPP), "--port", str(port), "--host", name, *extra],
            ready=lambda: "listening" in self.log(f"node-{address}"),
        )
        return ns

    def namespace_of(self, address: str) -> str | None:
        host = int(address.rsplit(".", 1)[1]) if self.prefixlen >= 24 else None
        wanted = f"{self.prefix}-n{host}" if host is not None else None
        return wanted if wanted in self.namespaces else None

    def stop_node(self, address: str, sig: int = signal.SIGTERM) -> None:
        self.stop(f"node-{address}", sig)

    # -- observing -----------------------------------------------------------------------

    def status(self, path: str) -> str:
        """GET the poller's status server (loopback inside the poller's namespace)."""
        port = 9345
        code = (
            "import sys, urllib.request; "
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}{path}', "
            "timeout=2).read().decode())"
        )
        run = subprocess.run(
            ["ip", "netns", "exec", self.poller_ns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return run.stdout

    def metric(self, name: str, labels: str = "") -> float:
        return metric_value(self.status("/metrics"), name, labels)

    def tcp_counter(self, ns: str, name: str) -> int:
        """A TCP counter of namespace `ns` (`ActiveOpens`, `PassiveOpens`: connections
        made, connections accepted) from its /proc/net/snmp."""
        run = sh("ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
        header, values = (
            line.split() for line in run.stdout.splitlines() if line.startswith("Tcp:")
        )
        return int(dict(zip(header, values, strict=True))[name])

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist (after close(): none)."""
        run = sh("ip", "netns", "list", check=False)
        return [
            line.split()[0]
            for line in run.stdout.splitlines()
            if line.startswith(f"{self.prefix}-")
        ]

    def servers(self, backend: str = "nodes") -> set[str]:
        """Addresses a backend lists and does not hold in maintenance or drain."""
        if backend == self.haproxy.backend:
            return self.haproxy.enabled()
        return HAProxyView(self.haproxy.admin_socket, self.haproxy.master_socket, backend).enabled()

    def get(self, ns: str, path: str) -> dict[str, Any]:
        """One request through HAProxy's frontend from namespace `ns`: the JSON answer."""
        code = (
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            f"'http://{self.address(42)}{path}', timeout=3).read().decode())"
        )
        run = sh("ip", "netns", "exec", ns, sys.executable, "-c", code)
        return dict(json.loads(run.stdout))


def main() -> None:
    """The demo's timeline, in namespaces: nodes come and go, HAProxy follows."""
    from tests.support.demo import TIMELINE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poller-netlab-") as tmp:
        lab = NetLab(Path(tmp))
        before = kernel_log_mark()
        try:
            lab.start_haproxy()
            lab.start_poller()
            print(
                f"netlab: bridge heig {lab.network} in namespace {lab.bridge_ns}; "
                f"HAProxy at {lab.address(42)}; Ctrl-C stops everything",
                flush=True,
            )
            started = time.monotonic()
            pending = list(TIMELINE)
            last: set[str] = set()
            while time.monotonic() - started < args.seconds:
                elapsed = time.monotonic() - started
                while pending and pending[0][0] <= elapsed:
                    _, action, host, name, _why = pending.pop(0)
                    print(f"[{elapsed:5.1f}s] {action} {lab.address(host)} ({name})", flush=True)
                    if action.startswith("start"):
                        extra = ("--status", "500") if action == "start-500" else ()
                        lab.start_node(host, name, *extra)
                    else:
                        sig = signal.SIGKILL if action == "kill" else signal.SIGTERM
                        lab.stop_node(lab.address(host), sig)
                now = lab.servers()
                if now != last:
                    print(f"[{elapsed:5.1f}s] HAProxy serves {sorted(now)}", flush=True)
                    last = now
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            lab.close()
        print(
            f"netlab: stopped; neighbour table overflow lines added: {overflow_lines(since=before)}"
        )


if __name__ == "__main__":
    main()
