"""One real Docker engine for the engine suite, in a network namespace of its own.

The daemon, every container, network and published port live in that namespace (lo
only, no default route); it is stopped by PID and the namespace deleted after the
session, also after a failure. Needs root, Debian's docker.io and the stand-in images
(`make test` prepares them before entering the private namespace); under CI=true a test
that cannot run fails with the reason instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import engine as engines
from tests.support.requirements import unavailable


@pytest.fixture(scope="session")
def engine() -> Iterator[engines.Engine]:
    problem = engines.problem()
    if problem is not None:
        unavailable(f"the engine suite cannot run: {problem}")
    with engines.running("one") as running:
        yield running
    leftovers = engines.leftover_namespaces()
    assert leftovers == [], f"namespaces left behind: {leftovers}"
