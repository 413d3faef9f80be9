"""Fixtures shared by the integration tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.requirements import require_root


@pytest.fixture
def small_config_dir(tmp_path: Path) -> Iterator[Path]:
    """HAProxy's config directory on a 256 KiB tmpfs of its own (root: a mount)."""
    require_root()
    directory = tmp_path / "config"
    directory.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(directory)],
        check=True,
        timeout=10,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True, timeout=10)


@pytest.fixture
def broken_loopback_route() -> Iterator[Callable[[bool], None]]:
    """Break and mend the poller's own network: without the local route of 127.0.0.0/8,
    every connect to the nodes fails at once with ENETUNREACH (127.0.0.1 keeps its own
    route, so HAProxy's sockets and the status server stay reachable)."""
    require_root()
    route = ["local", "127.0.0.0/8", "dev", "lo", "table", "local"]
    broken = False

    def set_broken(value: bool) -> None:
        nonlocal broken
        subprocess.run(["ip", "route", "del" if value else "add", *route], check=True)
        broken = value

    try:
        yield set_broken
    finally:
        if broken:
            set_broken(False)
