"""Hot sweeps on a /16 in the namespace lab: new nodes appear where Docker's IPAM puts
them (in order, in the gaps removals leave, wrapping around at the top), and poller,
sweeping the whole /16 only every 10 s, asks those few addresses every second.

The nodes get addresses in Docker's allocation order; one is placed far from them, and
only the next full sweep may find it. The kernel log gains no overflow line.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest

from tests.support.labs import wait_for
from tests.support.netlab import NetLab, kernel_log_mark, lab_running, overflow_lines

pytestmark = [pytest.mark.root, pytest.mark.haproxy]  # checked by tests/conftest.py

INTERVAL, FULL = 1.0, 10.0


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    workdir = tmp_path_factory.mktemp("nethot")
    options = {"network": "10.78.0.0/16", "prefix": "plh", "single_service": True}
    with lab_running(workdir, **options) as lab:
        yield lab


def join(lab: NetLab, host: int, bound: float) -> float:
    """Start a node at `host`; seconds from its listening to HAProxy serving it."""
    lab.start_node(host, f"h{host}")
    started = time.monotonic()
    wait_for(lambda: lab.address(host) in lab.servers(), bound, f"{lab.address(host)} served")
    return time.monotonic() - started


def test_new_nodes_where_docker_puts_them_are_served_within_a_hot_sweep(lab: NetLab) -> None:
    before = kernel_log_mark()
    lab.start_haproxy()
    for host in (3, 4, 5):  # .1 is the gateway, .2 the poller
        lab.start_node(host, f"h{host}")
    lab.start_poller(
        ("POLLER_DISCOVERY__INTERVAL_SECONDS", str(INTERVAL)),
        ("POLLER_DISCOVERY__FULL_INTERVAL_SECONDS", str(FULL)),
    )
    wait_for(lambda: len(lab.servers()) == 3, 30, "the first full sweep")
    full_before = lab.metric("poller_sweeps_total", 'kind="discovery",result="ok"')

    # In order (serial and first-free alike), then a far one, then the wrap at the top.
    times = [join(lab, host, FULL) for host in (6, 7, 8, 9)]
    far = join(lab, 65_533, 2 * FULL)  # nowhere near: the next full sweep finds it
    times += [join(lab, 65_534, FULL)]  # just after the highest in use
    times += [join(lab, 10, FULL)]  # wrapped around: the lowest free again

    found_hot = lab.metric("poller_sweep_found_total", 'kind="hot"')
    print(f"hot joins {[round(t, 2) for t in times]} s, far node {far:.1f} s")
    assert found_hot >= len(times)  # hot sweeps found every node in the likely set
    assert max(times) < FULL / 2  # never waited for a full sweep
    assert statistics.median(times) <= INTERVAL + 0.5
    assert lab.metric("poller_sweeps_total", 'kind="discovery",result="ok"') > full_before
    assert overflow_lines(since=before) == 0
