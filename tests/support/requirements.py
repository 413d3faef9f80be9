"""What a test needs from the machine, and the one rule when it is missing.

A test that cannot run here fails with the reason under CI=true (CI installs everything
and runs as root, so a skip there would hide a missing install step) and skips with the
reason elsewhere. It never passes silently. Tests say what they need with the markers
`root` and `haproxy` (checked by a hook in tests/conftest.py) or by calling these.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run here, and CI must run it: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root inside the test namespace (CI runs as root)")


def require_tool(name: str, install: str) -> str:
    """The path of the program `name`; `install` says how to get it."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"needs {name} ({install}; .ci/run installs it)")
    return path


def haproxy_binary() -> str | None:
    """The HAProxy the tests start and validate with: the machine's, or another version
    given by `POLLER_TEST_HAPROXY` (`make test` runs the runtime-API tests against HAProxy
    3.0 that way: tests/support/haproxies.py)."""
    return os.environ.get("POLLER_TEST_HAPROXY") or shutil.which("haproxy")


def require_haproxy() -> str:
    chosen = os.environ.get("POLLER_TEST_HAPROXY")
    if chosen:
        root = os.environ.get("POLLER_HAPROXY_ROOT", "")
        if not Path(root, "done").exists():
            unavailable(f"POLLER_TEST_HAPROXY={chosen}, but its root {root!r} is not prepared")
        return chosen
    return require_tool("haproxy", "apt-get install haproxy")
