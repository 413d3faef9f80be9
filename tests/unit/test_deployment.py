"""Static checks of the compose and swarm deployments (no Docker engine here): the files
parse, everything they reference exists, the poller config they mount is valid, and
ports and subnets agree with it."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
STACK = ROOT / "compose" / "stack.yml"


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes, short (`a:b:ro`) or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            found.append((source, target))
    return found


def mounted_config(document: dict[str, Any], base: Path) -> Path:
    """The poller config a deployment gives the poller service."""
    service = document["services"]["poller"]
    for source, target in mounts(service):
        if target == "/etc/poller/poller.yaml":
            return (base / source).resolve()
    config = service["configs"][0]
    return (base / document["configs"][config["source"]]["file"]).resolve()


def settings_of(path: Path) -> Settings:
    return load_settings(path, environ={})


def port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


@pytest.mark.parametrize("path", [COMPOSE, STACK])
def test_every_referenced_file_exists(path: Path) -> None:
    document = load(path)
    base = path.parent
    for name, service in document["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            context = (base / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        elif isinstance(build, str):
            assert (base / build / "Dockerfile").is_file()
        for source, _ in mounts(service):
            if source.startswith("."):
                assert (base / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in document.get("volumes", {}), f"{name}: volume {source} undeclared"
    for config in document.get("configs", {}).values():
        assert (base / config["file"]).is_file()


@pytest.mark.parametrize("path", [COMPOSE, STACK])
def test_no_docker_socket_anywhere(path: Path) -> None:
    assert "docker.sock" not in path.read_text()


@pytest.mark.parametrize("path", [COMPOSE, STACK])
def test_mounted_config_passes_check_config(path: Path) -> None:
    config = mounted_config(load(path), path.parent)
    run = subprocess.run(
        [sys.executable, "-m", "poller", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: ")


@pytest.mark.parametrize("path", [COMPOSE, STACK])
def test_ports_and_subnets_agree_with_the_poller_config(path: Path) -> None:
    document = load(path)
    settings = settings_of(mounted_config(document, path.parent))
    network = document["networks"]["heig"]
    subnet = ipaddress.ip_network(network["ipam"]["config"][0]["subnet"])
    assert [ipaddress.ip_network(s) for s in settings.discovery.subnets] == [subnet]
    haproxy = document["services"]["haproxy"]
    published = {p if isinstance(p, int) else p["target"] for p in _ports(haproxy)}
    assert published == {
        port_of(settings.haproxy.frontend_bind),
        port_of(settings.haproxy.stats_bind),
    }
    command = " ".join(haproxy["command"])
    assert str(settings.haproxy.master_socket) in command
    assert str(settings.haproxy.config_path) in command
    for mount in (
        ("haproxy-config", "/usr/local/etc/haproxy"),
        ("haproxy-run", "/var/run/haproxy"),
    ):
        assert mount in mounts(haproxy)
        assert mount in mounts(document["services"]["poller"])
    assert settings.haproxy.config_path.parent == Path("/usr/local/etc/haproxy")
    assert settings.haproxy.admin_socket.parent == Path("/var/run/haproxy")


def _ports(service: dict[str, Any]) -> list[Any]:
    ports = []
    for port in service["ports"]:
        if isinstance(port, str):
            ports.append(int(port.split(":")[-1]))
        else:
            ports.append(port)
    return ports


def test_compose_excludes_the_gateway_and_haproxy() -> None:
    document = load(COMPOSE)
    settings = settings_of(mounted_config(document, COMPOSE.parent))
    network = document["networks"]["heig"]["ipam"]["config"][0]
    haproxy_ip = document["services"]["haproxy"]["networks"]["heig"]["ipv4_address"]
    assert set(settings.discovery.exclude) == {network["gateway"], haproxy_ip}


def test_webapp_port_is_probed() -> None:
    settings = settings_of(mounted_config(load(COMPOSE), COMPOSE.parent))
    app = (ROOT / "compose" / "webapp" / "app.py").read_text()
    assert 'os.environ.get("PORT", "3000")' in app
    assert settings.discovery.ports == (3000,)


def test_poller_image_is_non_root_with_exec_form_entrypoint_and_healthcheck() -> None:
    dockerfile = (ROOT / "compose" / "poller.Dockerfile").read_text()
    assert "\nUSER poller\n" in dockerfile
    assert 'ENTRYPOINT ["/opt/poller/bin/poller"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "/healthz" in dockerfile
    assert "requirements.lock" in dockerfile
    assert dockerfile.count("FROM ") == 3  # HAProxy's binary, the build, the image
    compose = load(COMPOSE)
    assert compose["services"]["poller"]["init"] is True


def test_the_image_validates_with_the_haproxy_image_the_stack_runs() -> None:
    """One knob, HAPROXY_IMAGE: the HAProxy service's image and the image whose binary
    the poller image copies to validate with, the same default in every place."""
    dockerfile = (ROOT / "compose" / "poller.Dockerfile").read_text()
    assert "\nARG HAPROXY_IMAGE=haproxy:2.6\n" in dockerfile
    assert "\nFROM ${HAPROXY_IMAGE} AS haproxy\n" in dockerfile
    assert "\nCOPY --from=haproxy /validator /opt/haproxy\n" in dockerfile
    services = load(COMPOSE)["services"]
    assert services["haproxy"]["image"] == "${HAPROXY_IMAGE:-haproxy:2.6}"
    for name in ("haproxy-init", "poller"):
        assert services[name]["build"]["args"] == {"HAPROXY_IMAGE": "${HAPROXY_IMAGE:-haproxy:2.6}"}


def test_webapp_scales_without_fixed_addresses() -> None:
    webapp = load(COMPOSE)["services"]["webapp"]
    assert "container_name" not in webapp
    assert webapp["networks"] == ["heig"]


def test_poller_gets_only_net_raw_and_the_sockets_are_not_world_writable() -> None:
    """Security review, as files: the poller keeps one capability (the ARP pre-sweep's
    raw socket) and no privilege escalation path; HAProxy's sockets are 660."""
    for document in (load(COMPOSE), load(ROOT / "compose" / "stack.yml")):
        poller = document["services"]["poller"]
        assert poller["cap_drop"] == ["ALL"]
        assert poller["cap_add"] == ["NET_RAW"]
        assert "privileged" not in poller
    haproxy = load(COMPOSE)["services"]["haproxy"]
    assert any(",mode,660" in part for part in haproxy["command"])
    template = (ROOT / "poller" / "templates" / "haproxy.cfg.j2").read_text()
    assert "stats socket {{ admin_socket }} mode 660 level admin" in template


def test_haproxy_never_fills_the_shared_volumes_from_its_image() -> None:
    """The poller image owns the shared volumes' first contents (uid 10001, group 99);
    HAProxy's image would leave root-owned directories if its container came first."""
    for document in (load(COMPOSE), load(STACK)):
        for volume in document["services"]["haproxy"]["volumes"]:
            assert volume["volume"] == {"nocopy": True}, volume


def test_status_server_listens_on_loopback_by_default() -> None:
    settings = load_settings(None, environ={})
    assert settings.status.listen.startswith("127.0.0.1:")
    for path in (ROOT / "config" / "poller.yaml", ROOT / "config" / "poller-swarm.yaml"):
        assert load_settings(path, environ={}).status.listen.startswith("127.0.0.1:")


def test_the_status_page_is_published_on_the_hosts_loopback_only() -> None:
    poller = load(COMPOSE)["services"]["poller"]
    assert poller["ports"] == ["127.0.0.1:9345:9345"]
    assert poller["environment"]["POLLER_STATUS__LISTEN"] == "0.0.0.0:9345"


def test_init_steps_keep_a_valid_config() -> None:
    """An init step that runs again (compose re-runs haproxy-init on `up --scale`; a
    restarted swarm task) must not replace a live config with an empty backend."""
    init = load(COMPOSE)["services"]["haproxy-init"]["command"]
    assert init[:2] == ["render", "--keep-valid"]
    stack = load(STACK)["services"]["poller"]
    assert "command" not in stack  # the image's entrypoint is poller: a shell must replace it
    assert "poller render --keep-valid" in " ".join(stack["entrypoint"])
    assert stack["init"] is True
