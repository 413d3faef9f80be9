"""The fragments that add poller to a user's stack (compose/add-poller.yml and its Swarm
twin): their poller settings are valid and agree with HAProxy's command line. (The
compose fragment runs on a real engine in tests/engine/test_your_stack.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import load_settings
from tests.support.processes import ROOT

FRAGMENTS = [ROOT / "compose" / "add-poller.yml", ROOT / "compose" / "add-poller.stack.yml"]


def services(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["services"])


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.name)
def test_a_fragments_poller_settings_are_valid_and_match_haproxys_command(path: Path) -> None:
    found = services(path)
    settings = load_settings(None, environ=found["poller"]["environment"])
    haproxy = settings.haproxy
    assert haproxy.mode == "backends"
    assert settings.discovery.subnets == ("auto",)
    command = found["haproxy"]["command"]
    words = command if len(command) > 3 else command[-1].split()
    files = [words[i + 1] for i, word in enumerate(words) if word == "-f"]
    assert files == [*map(str, haproxy.user_configs), str(haproxy.config_path)]
    assert f"{haproxy.master_socket},mode,660" in words
    # What the poller mounts: the backends file's directory and the sockets' directory.
    mounts = " ".join(
        v if isinstance(v, str) else v["target"] for v in found["poller"].get("volumes", [])
    )
    assert str(haproxy.config_path.parent) in mounts
    assert str(haproxy.admin_socket.parent) in mounts
    assert found["poller"]["cap_drop"] == ["ALL"]
    assert found["poller"]["cap_add"] == ["NET_RAW"]


def test_the_two_fragments_set_poller_alike() -> None:
    compose, swarm = (services(path)["poller"]["environment"] for path in FRAGMENTS)
    assert compose == swarm


def test_the_compose_fragment_renders_before_haproxy_starts() -> None:
    found = services(FRAGMENTS[0])
    init = found["poller-init"]
    assert init["command"][:2] == ["render", "--keep-valid"]
    assert found["haproxy"]["depends_on"] == {
        "poller-init": {"condition": "service_completed_successfully"}
    }
