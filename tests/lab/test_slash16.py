"""Discovery at /16 scale in the namespace lab: a few live nodes among 65,534 addresses
are all found by the daemon with the shipped config (ARP pre-sweep), and the kernel log
gains no overflow line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.labs import wait_for
from tests.support.netlab import NetLab, kernel_log_mark, lab_running, overflow_lines

pytestmark = [pytest.mark.root, pytest.mark.haproxy]  # checked by tests/conftest.py

HOSTS = (300, 21_000, 47_000, 65_000)  # spread over the /16
# ~5 s per sweep with ARP; the bound is for a stuck sweep, not a speed goal (bench/).
SWEEP_BOUND_SECONDS = 60.0


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    workdir = tmp_path_factory.mktemp("netlab16")
    options = {"network": "10.77.0.0/16", "prefix": "pl16", "single_service": True}
    with lab_running(workdir, **options) as lab:
        yield lab


def test_a_slash_16_is_swept_without_misses_or_overflow(lab: NetLab) -> None:
    before = kernel_log_mark()
    lab.start_haproxy()
    expected = set()
    for index, host in enumerate(HOSTS):
        lab.start_node(host, f"wide{index}")
        expected.add(lab.address(host))
    started = time.monotonic()
    lab.start_poller()
    wait_for(lambda: lab.servers() == expected, SWEEP_BOUND_SECONDS, "all nodes of the /16")
    elapsed = time.monotonic() - started
    assert lab.metric("poller_sweeps_total", 'kind="discovery",result="failed"') == 0
    assert json.loads(lab.status("/pool"))["discovery"]["method"] == "arp"
    assert overflow_lines(since=before) == 0
    print(f"/16: {len(expected)} of {len(expected)} nodes served {elapsed:.1f} s after start")
