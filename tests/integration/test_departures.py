"""`discovery.dns_names` against a real poller and a real HAProxy: a member whose address
leaves the name's answer is taken out of rotation and removed while it still answers
its probes, comes back when the answer lists it again, and an answer that fails changes
nothing.

The name is answered from a hosts file bind-mounted over /etc/hosts (with an nsswitch.conf
that asks files only) in a mount namespace of the poller's own: no query leaves the
process's machine, and the machine's files are untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import problems_in_log, timed
from tests.support.labs import wait_for
from tests.support.loopback import Lab, settled
from tests.support.requirements import require_tool

pytestmark = [pytest.mark.haproxy, pytest.mark.root]

NAME = "tasks.web"
A, B, C = "127.0.3.2", "127.0.3.3", "127.0.3.4"
# Mount the two files, then become the poller (exec: the PID stays the one we started).
WRAPPER = (
    'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf && shift && exec "$@"'
)


def answer(hosts: Path, *addresses: str) -> None:
    """What the name resolves to from now on (one write: a reader sees the old answer,
    the new one, or none, which changes nothing)."""
    lines = ["127.0.0.1 localhost", *(f"{a} {NAME}" for a in addresses)]
    hosts.write_text("\n".join(lines) + "\n")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Lab, Path]]:
    unshare = require_tool("unshare", "util-linux")
    hosts, nsswitch = tmp_path / "hosts", tmp_path / "nsswitch.conf"
    answer(hosts, A, B, C)
    nsswitch.write_text("hosts: files\n")
    settings = {"discovery": {"dns_names": [NAME], "dns_interval_seconds": 0.2}}
    lab = Lab(tmp_path / "lab", settings=settings)
    try:
        for address in (A, B, C):
            lab.start_node(address)
        lab.start_haproxy()
        argv = [sys.executable, "-m", "poller", "run", "--config", str(lab.poller_yaml)]
        lab.spawn(
            "poller",
            [unshare, "--mount", "--propagation", "private", "sh", "-c", WRAPPER,
             str(hosts), str(nsswitch), *argv],
            ready=lambda: lab.status("/healthz", ok_only=False) is not None,
        )  # fmt: skip
        wait_for(lambda: settled(lab, A, B, C), 20, "A, B and C served")
        yield lab, hosts
        assert problems_in_log(lab.log("poller")) == []
    finally:
        lab.close()


def test_a_member_dns_stops_listing_leaves_while_it_still_answers(
    lab: tuple[Lab, Path],
) -> None:
    made, hosts = lab
    reloads = made.reloads()
    answer(hosts, A, B)  # C's replica is being stopped: DNS says so first
    out = timed(lambda: C not in made.haproxy.serving(), 5, "C out of rotation")
    timed(lambda: settled(made, A, B), 10, "C removed")
    assert made.metric("poller_members_leaving") == 1
    members = {m["address"]: m for m in made.status("/pool")["members"]}
    assert members[C]["state"] == "up"  # its probes pass: DNS alone took it out
    assert [a for a, m in members.items() if m["leaving"]] == [C]
    assert made.routed_hosts() == {f"node-{A}", f"node-{B}"}
    assert '"members leaving, as DNS says"' in made.log("poller")
    print(f"out of rotation {out:.2f} s after the answer changed")
    # The answer lists C again (the same replica back): served again.
    answer(hosts, A, B, C)
    wait_for(lambda: settled(made, A, B, C), 10, "C served again")
    assert made.metric("poller_members_leaving") == 0
    assert made.reloads() == reloads


def test_an_answer_that_fails_or_names_nobody_changes_nothing(lab: tuple[Lab, Path]) -> None:
    made, hosts = lab
    # The one change that added A, B and C is counted once it is whole (the file too).
    changes = wait_for(lambda: made.metric("poller_haproxy_changes_total"), 5, "it counted")

    def rounds(result: str, more: int) -> None:
        """Let `more` lookups with `result` happen."""
        metric = ("poller_dns_lookups_total", f'result="{result}"')
        seen = made.metric(*metric)
        wait_for(lambda: made.metric(*metric) >= seen + more, 10, f"{more} lookups {result}")

    answer(hosts)  # the name no longer resolves (a DNS outage, a service scaled to 0)
    rounds("failed", 5)
    assert made.log("poller").count("DNS name does not resolve") == 1  # said once
    assert settled(made, A, B, C)
    hosts.write_text(f"127.0.0.1 localhost\n127.0.9.9 {NAME}\n")  # none of the pool
    rounds("ok", 5)
    assert settled(made, A, B, C)
    assert made.metric("poller_members_leaving") == 0
    assert made.metric("poller_haproxy_changes_total") == changes
