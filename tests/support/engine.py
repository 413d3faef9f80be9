"""A real Docker engine for the tests, inside a network namespace the test made.

`Engine` starts Debian's `dockerd` in a new namespace (loopback only, no default route),
with its own socket, data root, exec root, pid file and key, so every container, network
and published port it makes stays inside. The test talks to it through the `docker` CLI
(with Compose v2 as a CLI plugin from the stand-in cache), reaches published ports from
a thread that entered the namespace (a socket keeps the namespace it was made in), and
runs load generators there with `ip netns exec`.

`close()` stops the daemon by its PID (SIGTERM, then SIGKILL), kills what is left in the
namespace (container shims and their processes: all started by this daemon), unmounts
what it mounted under its directory, and deletes the namespace, also after a failure.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support import standins
from tests.support.labs import HAProxyView, stop_process, wait_for, wrk_failures

ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0
T = TypeVar("T")


def namespace_prefix() -> str:
    return f"pe{os.getpid() % 100000}-"


def leftover_namespaces() -> list[str]:
    """This process's engine namespaces that still exist (after close(): none)."""
    run = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [
        line.split()[0] for line in run.stdout.splitlines() if line.startswith(namespace_prefix())
    ]


def problem() -> str | None:
    """Why an engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "a Docker engine in a namespace needs root"
    for tool in ("dockerd", "docker", "ip", "nsenter", "wrk"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs docker.io, iproute2, wrk)"
    return standins.ready()


@dataclass
class Engine:
    """One dockerd in one namespace. `name` names the namespace; `hostname` (optional)
    gives the daemon a host name of its own (a UTS namespace), for multi-node swarms."""

    name: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="poller-engine-")))
    hostname: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ns = namespace_prefix() + self.name
        self.socket = self.workdir / "docker.sock"
        self.config = self.workdir / "docker-config"
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.config),
            "DOCKER_CLI_HINTS": "false",
            "COMPOSE_STATUS_STDOUT": "0",
        }
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=30)
        self._ip("link", "set", "lo", "up")
        plugins = self.config / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        (plugins / "docker-compose").symlink_to(standins.cache_dir() / "docker-compose")
        # The daemon's identity key, in its own directory (not /etc/docker/key.json).
        key = {"deprecated-key-path": str(self.workdir / "key.json")}
        (self.workdir / "daemon.json").write_text(json.dumps(key) + "\n")
        self.start_daemon()

    def start_daemon(self) -> None:
        """Start (or start again) this engine's dockerd, with the data it had."""
        argv = [
            "dockerd",
            "--host",
            f"unix://{self.socket}",
            "--data-root",
            str(self.workdir / "data"),
            "--exec-root",
            str(self.workdir / "exec"),
            "--pidfile",
            str(self.workdir / "dockerd.pid"),
            "--config-file",
            str(self.workdir / "daemon.json"),
            "--dns",
            "127.0.0.1",
        ]
        if self.hostname is not None:
            argv = [
                "unshare",
                "--uts",
                "sh",
                "-c",
                'hostname "$0" && exec "$@"',
                self.hostname,
                *argv,
            ]
        # Swarm tasks would otherwise try to pull their image from a registry (refused:
        # no route) even with `--resolve-image never`.
        env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
        with (self.workdir / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log()[-3000:]}")
            return self.docker("version", check=False, timeout=10).returncode == 0

        wait_for(answers, START_TIMEOUT_SECONDS, "dockerd to answer", interval=0.2)

    def stop_daemon(self) -> None:
        """Stop this engine's dockerd by its PID (it stops its containers first)."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, STOP_TIMEOUT_SECONDS)
            self.proc = None

    def import_standins(self) -> None:
        standins.import_images(["docker"], self.env, self.workdir)

    def close(self) -> None:
        """Stop everything this engine started; leave no namespace, mount or process."""
        for proc in self.started:
            stop_process(proc, signal.SIGTERM, 10)
        self.started.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.stop_daemon()
        for pid in self.pids_in_namespace():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait_for(lambda: not self.pids_in_namespace(), 10, "the namespace to empty")
        _unmount_under(self.workdir)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def pids_in_namespace(self) -> list[int]:
        """Processes whose network namespace is this engine's (all started by it)."""
        try:
            wanted = os.stat(f"/run/netns/{self.ns}").st_ino
        except FileNotFoundError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.stat(entry / "ns" / "net").st_ino == wanted:
                    found.append(int(entry.name))
        return found

    def log(self) -> str:
        path = self.workdir / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- commands ----------------------------------------------------------------------

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, cwd: Path = ROOT
    ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=cwd,
        )
        if check and run.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({run.returncode}):\n{run.stdout}{run.stderr}"
            )
        return run

    def ns_run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns, "ip", *args], check=True, timeout=30)

    def volume_path(self, name: str) -> Path:
        out = self.docker("volume", "inspect", name, "--format", "{{.Mountpoint}}").stdout
        return Path(out.strip())

    # -- reaching inside ---------------------------------------------------------------

    def _in_namespace(self, function: Callable[[], T]) -> T:
        """Run `function` on a thread that entered the namespace: sockets it makes
        belong there, and work from any thread afterwards."""
        if self._executor is None:
            path = f"/run/netns/{self.ns}"

            def enter() -> None:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(path, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {path}")
                finally:
                    os.close(fd)

            self._executor = concurrent.futures.ThreadPoolExecutor(1, initializer=enter)
        return self._executor.submit(function).result()

    def connect(self, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        return self._in_namespace(lambda: socket.create_connection((host, port), timeout))

    def get(
        self,
        port: int,
        path: str = "/",
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> tuple[int, bytes]:
        """One HTTP GET inside the namespace: (status, body); (0, b"") when it fails.
        With `tls`, over TLS, the certificate checked for `server_name`."""
        try:
            sock = self.connect(host, port, timeout)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=server_name or host)
        except OSError:
            return 0, b""
        connection = http.client.HTTPConnection(server_name or host, port, timeout=timeout)
        connection.sock = sock
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
        finally:
            connection.close()

    def get_json(self, port: int, path: str) -> Any:
        status, body = self.get(port, path)
        return json.loads(body) if status == 200 else None

    def wrk(
        self, url: str, seconds: float, out: Path, connections: int = 8, post: bool = False
    ) -> subprocess.Popen[bytes]:
        """wrk against `url`; `post`: every request a POST with a small JSON body."""
        script: list[str] = []
        if post:
            lua = out.with_suffix(".post.lua")
            lua.write_text(
                'wrk.method = "POST"\nwrk.body = \'{"order": 1}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            script = ["-s", str(lua)]
        with out.open("wb") as handle:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{max(1, round(seconds))}s",
                    "--timeout",
                    "5s",
                    *script,
                    url,
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.started.append(proc)
        return proc


@dataclass
class Load:
    """wrk through a URL in the engine's namespace, for the length of a `with` block."""

    engine: Engine
    url: str
    out: Path
    seconds: float = 600
    post: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Load:
        self.proc = self.engine.wrk(self.url, self.seconds, self.out, post=self.post)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            # SIGINT makes wrk stop and print its report.
            stop_process(self.proc, signal.SIGINT, 10)

    def result(self) -> tuple[int, int]:
        """(requests, failed)."""
        return wrk_failures(self.out.read_text(errors="replace"))


def _unmount_under(directory: Path) -> None:
    """Lazily unmount what is still mounted below `directory`, deepest first."""
    prefix = str(directory.resolve()) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, timeout=30)


@contextlib.contextmanager
def running(name: str, hostname: str | None = None) -> Iterator[Engine]:
    engine = Engine(name, hostname=hostname)
    try:
        engine.start()
        engine.import_standins()
        yield engine
    finally:
        engine.close()


def timed(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until `condition` holds (polled every 20 ms), failing after `timeout`."""
    started = time.monotonic()
    wait_for(condition, timeout, what)
    return time.monotonic() - started


@dataclass
class ComposeProject:
    """compose/docker-compose.yml as users run it, on `engine`, as project `name`."""

    engine: Engine
    name: str = "pl"
    file: Path = ROOT / "compose" / "docker-compose.yml"
    more: tuple[Path, ...] = ()  # override files, merged over `file` in order

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        files = [word for path in (self.file, *self.more) for word in ("-f", str(path))]
        return self.engine.docker("compose", *files, "-p", self.name, *args, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return [line for line in out.split() if line]

    def addresses(self, service: str = "webapp") -> set[str]:
        """The running containers' addresses (on their one network: `heig` here)."""
        ids = self.containers(service)
        if not ids:
            return set()
        out = self.engine.docker(
            "inspect",
            "--format",
            "{{.State.Running}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            *ids,
        ).stdout
        return {
            address
            for running, _, address in (line.partition(" ") for line in out.splitlines())
            if running == "true" and address
        }

    def haproxy(self, backend: str = "nodes") -> HAProxyView:
        run_dir = self.engine.volume_path(f"{self.name}_haproxy-run")
        return HAProxyView(run_dir / "admin.sock", run_dir / "master.sock", backend)

    def config_file(self) -> Path:
        return self.engine.volume_path(f"{self.name}_haproxy-config") / "haproxy.cfg"

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--no-log-prefix", service).stdout


def server_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip().startswith("server "))


def problems_in_log(text: str) -> list[str]:
    """Lines of a poller's JSON log at warning level or above, and tracebacks."""
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                found.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            found.append(line)
    return found


@dataclass
class SwarmStack:
    """compose/stack.yml deployed with `docker stack deploy` as `name` on a swarm whose
    manager is `engine`."""

    engine: Engine
    name: str = "poller"
    file: Path = ROOT / "compose" / "stack.yml"

    def build_images(self) -> None:
        """The two images the stack names, built as its header says."""
        self.engine.docker(
            "build", "-q", "-t", "poller:local", "-f", "compose/poller.Dockerfile", ".", timeout=900
        )
        self.engine.docker("build", "-q", "-t", "poller-webapp:local", "compose/webapp")

    def deploy(self) -> None:
        self.engine.docker(
            "stack", "deploy", "-c", str(self.file), "--resolve-image", "never", self.name
        )

    def remove(self) -> None:
        self.engine.docker("stack", "rm", self.name, check=False)

        def gone() -> bool:
            out = self.engine.docker(
                "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={self.name}"
            ).stdout
            return not out.strip()

        wait_for(gone, 60, "the stack's containers to go")

    def scale(self, service: str, replicas: int) -> None:
        self.engine.docker(
            "service", "scale", "--detach", f"{self.name}_{service}={replicas}", timeout=60
        )

    def addresses(self, service: str = "webapp") -> set[str]:
        """Addresses on the stack's overlay of this node's running containers of
        `service`."""
        out = self.engine.docker("network", "inspect", f"{self.name}_heig").stdout
        containers = json.loads(out)[0].get("Containers") or {}
        return {
            c["IPv4Address"].split("/")[0]
            for c in containers.values()
            if c["Name"].startswith(f"{self.name}_{service}.")
        }

    def haproxy(self) -> HAProxyView:
        run_dir = self.engine.volume_path(f"{self.name}_haproxy-run")
        return HAProxyView(run_dir / "admin.sock", run_dir / "master.sock")

    def healthy(self, service: str = "webapp") -> int:
        """Running containers of `service` on this node whose HEALTHCHECK passed: Swarm
        lists a task in its DNS (`tasks.<service>`) only from then on."""
        label = f"com.docker.swarm.service.name={self.name}_{service}"
        out = self.engine.docker(
            "ps", "-q", "--filter", f"label={label}", "--filter", "health=healthy"
        ).stdout
        return len(out.split())

    def logs(self, service: str) -> str:
        run = self.engine.docker(
            "service", "logs", "--raw", "--no-trunc", f"{self.name}_{service}", check=False
        )
        return run.stdout + run.stderr


def join_swarm(engine: Engine, address: str = "127.0.0.1") -> str:
    """`docker swarm init` on `engine`; returns the node's id, labelled lb=true."""
    engine.docker("swarm", "init", "--advertise-addr", address)
    node = engine.docker("node", "ls", "-q").stdout.split()[0]
    engine.docker("node", "update", "--label-add", "lb=true", node)
    return node


def served(stack: ComposeProject | SwarmStack) -> set[str]:
    """What the stack's HAProxy serves; nothing while its volume or sockets are not there
    yet (a node's global services start after the manager says its tasks run)."""
    try:
        return stack.haproxy().serving()
    except (OSError, RuntimeError):
        return set()
