"""compose/add-poller.yml added to a compose project that is not poller's, on a real Docker
engine, as the README's "Add poller to your stack" tells a user to do.

Their project: HAProxy with their own haproxy.cfg (a TLS frontend with a certificate
the test makes, an HTTP->HTTPS redirect, a stick table, a static backend), web
replicas, a static server. `docker compose -f theirs.yml -f compose/add-poller.yml up`
adds poller in `haproxy.mode: backends`. Asserted as they would check it: their file
byte for byte, HTTPS requests reaching the replicas, no failed request while scaling,
their own reload keeping the pool served, their static backend untouched.

Twice: with `haproxy:2.6` and with `haproxy:3.0`, the poller image built with
`--build-arg HAPROXY_IMAGE=` the same image, as the README says. On 3.0 their file uses
a keyword 2.6 refuses (`guid`): poller validates with their HAProxy, not its own.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import ComposeProject, Engine, Load, problems_in_log, timed
from tests.support.labs import HAProxyView, unix_command, wait_for
from tests.support.processes import ROOT

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

NAME = "shop"
FRAGMENT = ROOT / "compose" / "add-poller.yml"
FOLLOW_SECONDS = 5.0
VERSIONS = ["2.6", "3.0"]
THEIRS = f"""name: {NAME}
services:
  haproxy:
    image: haproxy:VERSION
    ports: ["80:80", "443:443"]
    sysctls: {{net.ipv4.ip_unprivileged_port_start: 0}}
    volumes: ["./haproxy:/usr/local/etc/haproxy:ro"]
    depends_on: [static]
    networks: [app]
  web:
    image: poller-webapp:local
    build: {{context: {ROOT / "compose" / "webapp"}}}
    environment: {{TAG: shop}}
    networks: [app]
  static:  # not an app replica: another port, which poller does not sweep
    image: poller-webapp:local
    environment: {{TAG: static, PORT: "8080"}}
    networks: [app]
networks:
  app:
    ipam: {{config: [{{subnet: 172.30.7.0/24}}]}}
"""
HAPROXY_CFG = """# The shop's own HAProxy config. poller never writes it.
global
    stats socket /var/run/haproxy/admin.sock mode 660 level admin expose-fd listeners
    stats timeout 30s
    hard-stop-after 10s

defaults
    mode http
    # As the README's checklist suggests, for reloads that drop no keep-alive request.
    option idle-close-on-response
    timeout connect 1s
    timeout client 30s
    timeout server 30s

frontend plain
    bind :80
    http-request redirect scheme https code 301

frontend tls
    bind :443 ssl crt /usr/local/etc/haproxy/site.pem
    stick-table type ip size 10k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    use_backend static if { path_beg /static }
    default_backend web

backend static
    server s1 static:8080 check
"""


def their_config(version: str) -> str:
    if version == "2.6":
        return HAPROXY_CFG
    return HAPROXY_CFG.replace("    bind :443 ssl", "    guid shop-tls\n    bind :443 ssl")


class Shop:
    def __init__(self, engine: Engine, directory: Path, version: str) -> None:
        self.engine = engine
        self.directory = directory
        self.version = version
        self.text = their_config(version)
        self.compose_file = directory / "compose.yml"
        self.config = directory / "haproxy" / "haproxy.cfg"
        self.certificate = directory / "haproxy" / "site.pem"
        self.ca = directory / "ca.pem"
        self.project = ComposeProject(engine, NAME, self.compose_file, (FRAGMENT,))

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.project.compose(*args, timeout=timeout)

    def haproxy(self, backend: str = "web") -> HAProxyView:
        return self.project.haproxy(backend)

    def replicas(self) -> set[str]:
        return self.project.addresses("web")

    def served(self) -> set[str]:
        try:
            return self.haproxy().serving()
        except OSError:
            return set()

    def https(self, path: str = "/") -> tuple[int, bytes]:
        """One HTTPS GET through their frontend, the certificate checked against theirs."""
        context = ssl.create_default_context(cafile=str(self.ca))
        return self.engine.get(443, path, tls=context, server_name="shop.test")


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda version: f"haproxy{version}")
def shop(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Shop]:
    made = Shop(engine, tmp_path_factory.mktemp("shop"), request.param)
    (made.directory / "haproxy").mkdir()
    made.compose_file.write_text(THEIRS.replace("haproxy:VERSION", f"haproxy:{made.version}"))
    made.config.write_text(made.text)
    key = made.directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=shop.test", "-addext", "subjectAltName=DNS:shop.test",
         "-keyout", str(key), "-out", str(made.ca)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    made.certificate.write_bytes(made.ca.read_bytes() + key.read_bytes())
    # Containers read these as their own users (HAProxy: uid 99, poller: uid 10001).
    for path in (made.directory, made.directory / "haproxy"):
        path.chmod(0o755)
    for path in (made.config, made.certificate):
        path.chmod(0o644)
    engine.docker(
        "build", "-t", "poller:local", "-f", "compose/poller.Dockerfile",
        "--build-arg", f"HAPROXY_IMAGE=haproxy:{made.version}", ".", timeout=900,
    )  # fmt: skip
    try:
        made.compose("up", "-d", "--build", "--scale", "web=3", timeout=900)
        yield made
    finally:
        poller_log = made.compose("logs", "--no-color", "--no-log-prefix", "poller").stdout
        print(made.compose("logs", "--no-color", "--tail", "100").stdout)
        made.compose("down", "-v", "--timeout", "5")
    assert problems_in_log(poller_log) == []


def follows(shop: Shop, what: str, timeout: float = 60) -> float:
    return timed(lambda: shop.served() == shop.replicas() != set(), timeout, what)


def test_01_https_reaches_every_replica_and_http_is_redirected(shop: Shop) -> None:
    follows(shop, "3 replicas to be served", timeout=120)
    hosts = set()
    for _ in range(15):
        status, body = shop.https("/")
        assert status == 200, body
        hosts.add(body)
    assert len(hosts) == 3, "HTTPS requests did not reach all three replicas"
    assert shop.engine.get(80, "/")[0] == 301  # their redirect, untouched
    status, body = shop.https("/static/logo.png")
    assert status == 200
    assert b'"tag": "static"' in body or b'"tag":"static"' in body


def test_02_scaling_under_https_load_loses_no_request_and_their_file_stays_theirs(
    shop: Shop, tmp_path: Path
) -> None:
    before = hashlib.sha256(shop.config.read_bytes()).hexdigest()
    static = HAProxyView(shop.haproxy().admin_socket, shop.haproxy().master_socket, "static")
    static_before = [(s.name, s.endpoint, s.admin_state) for s in static.states()]
    with Load(shop.engine, "https://127.0.0.1:443/", tmp_path / "wrk.txt") as load:
        wait_for(lambda: shop.haproxy().connections() > 0, 10, "wrk to connect")
        shop.compose("up", "-d", "--no-deps", "--scale", "web=6", "web")
        up = follows(shop, "scale to 6")
        # Half at once at most: more is a mass removal the guard holds (tested elsewhere).
        shop.compose("up", "-d", "--no-deps", "--scale", "web=3", "web")
        down = follows(shop, "scale to 3")
    requests, failed = load.result()
    print(f"scale 3->6 followed in {up:.2f} s, 6->3 in {down:.2f} s; {failed} of {requests}")
    assert requests > 0
    assert failed == 0, f"{failed} of {requests} requests failed"
    assert up <= FOLLOW_SECONDS
    assert down <= FOLLOW_SECONDS
    assert hashlib.sha256(shop.config.read_bytes()).hexdigest() == before
    assert [(s.name, s.endpoint, s.admin_state) for s in static.states()] == static_before
    assert shop.haproxy().reloads() == (0, 0)


def test_03_a_reload_of_their_own_keeps_the_pool_served(shop: Shop, tmp_path: Path) -> None:
    follows(shop, "steady before their reload")
    expected = shop.replicas()
    with Load(shop.engine, "https://127.0.0.1:443/", tmp_path / "wrk.txt") as load:
        wait_for(lambda: shop.haproxy().connections() > 0, 10, "wrk to connect")
        # Their change to their own file, then the reload they would do.
        rule = "    http-response set-header X-Shop 1\n    default_backend web"
        shop.config.write_text(shop.text.replace("    default_backend web", rule))
        unix_command(shop.haproxy().master_socket, "reload")
        wait_for(lambda: shop.haproxy().reloads()[0] == 1, 30, "their reload")
        assert shop.haproxy().reloads()[1] == 0
        assert shop.served() == expected  # poller's file holds the members
        wait_for(lambda: shop.https("/")[0] == 200, 10, "the new workers to answer")
    requests, failed = load.result()
    assert requests > 0
    assert failed == 0, f"{failed} of {requests} requests failed across their reload"
