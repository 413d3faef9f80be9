"""Suite-wide guards and fixtures.

The whole suite must run inside a private network namespace (`make test` does this with
`unshare --net`), so that no test can reach a real network: at start, the only interface
must be loopback and there must be no route off the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.processes import Processes
from tests.support.requirements import require_haproxy, require_root

ROOT = Path(__file__).resolve().parents[1]

# Fuzzing budgets (tests/unit/test_fuzz.py and every other property): `ci` by default,
# `long` for local runs: HYPOTHESIS_PROFILE=long.
settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _private_namespace_problem() -> str | None:
    # /proc/net is per network namespace (/sys/class/net is not remounted by unshare).
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    interfaces = sorted(line.split(":", 1)[0].strip() for line in lines)
    if interfaces != ["lo"]:
        return f"network interfaces {interfaces} are visible"
    routes = Path("/proc/net/route").read_text().splitlines()[1:]
    if routes:
        return "an IPv4 route exists"
    return None


def pytest_configure(config: pytest.Config) -> None:
    problem = _private_namespace_problem()
    if problem is not None:
        raise pytest.UsageError(
            f"refusing to run: {problem}. The suite runs only inside a private network "
            "namespace; use `make test` (unshare --net) so no test can reach a real network."
        )


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The markers say what a test needs; what is missing fails it under CI, else skips
    it (tests/support/requirements.py)."""
    if item.get_closest_marker("root") is not None:
        require_root()
    if item.get_closest_marker("haproxy") is not None:
        require_haproxy()
