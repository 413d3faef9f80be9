"""`poller run` against a real HAProxy (master-worker, started by the test) on loopback.

Each test judges by what HAProxy does: `show servers state`, `show proc`, and requests sent
through its frontend reaching exactly the live nodes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poller.haproxy import configs
from poller.haproxy.rendering import BUILTIN_TEMPLATE
from poller.haproxy.runtime import Runtime
from tests.support.labs import wait_for
from tests.support.loopback import Lab, serves, settled
from tests.support.processes import ROOT
from tests.support.requirements import haproxy_binary

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

TEMPLATE = ROOT / "poller" / "templates" / BUILTIN_TEMPLATE
A, B, C = "127.0.3.2", "127.0.3.3", "127.0.3.4"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    try:
        lab.start_haproxy()
        yield lab
    finally:
        lab.close()


def test_join_is_routed_without_a_reload(lab: Lab) -> None:
    lab.start_poller()
    assert lab.get()[0] == 503  # an empty backend answers 503, never a stale server
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    wait_for(lambda: settled(lab, A, B), 10, "HAProxy and its file to serve A and B")
    assert wait_for(lambda: lab.routed_hosts() == {"a", "b"}, 5, "requests to reach a and b")
    assert lab.reloads() == (0, 0)
    runtime_ok = 'method="runtime",result="ok"'
    wait_for(lambda: lab.metric("poller_haproxy_changes_total", runtime_ok) >= 1, 5, "a report")
    pool = lab.status("/pool")
    assert {(m["address"], m["state"], m["identity"]) for m in pool["members"]} == {
        (A, "up", "a"),
        (B, "up", "b"),
    }
    # The file on disk carries the same pool, so any reload reproduces it.
    text = lab.config_path.read_text()
    assert "server n_127_0_3_2_3000 127.0.3.2:3000" in text
    assert "server n_127_0_3_3_3000 127.0.3.3:3000" in text


def test_haproxy_says_its_version_and_when_a_server_may_be_deleted(lab: Lab) -> None:
    """The version `show info` gives is the validator's here (the applier warns when they
    differ); `wait srv-removable` answers where HAProxy has it (3.0), and where it does not
    (2.6: `Unknown command`) the pause between deletes is a sleep, never an error."""
    runtime = Runtime(lab.admin_socket, 5.0)
    running = asyncio.run(runtime.version())
    validator = asyncio.run(configs.binary_version(haproxy_binary() or "haproxy"))
    major = configs.major_minor(running)
    assert major is not None, running
    assert major == configs.major_minor(validator), (running, validator)
    assert lab.admin("add server nodes/leaving 127.0.3.9:3000").strip() == "New server registered."
    has_wait = tuple(int(part) for part in major.split(".")) >= (3, 0)
    assert asyncio.run(runtime.wait_removable("nodes", "leaving", 0.5)) is has_wait
    assert runtime.can_wait is has_wait
    assert asyncio.run(runtime.del_server("nodes", "leaving")) == "Server deleted."
    assert "leaving" not in lab.servers()


def test_graceful_leave_then_nobody_answers_503(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    lab.start_poller()
    wait_for(lambda: serves(lab, A, B), 10, "HAProxy to serve A and B")
    lab.stop_node(A)
    wait_for(lambda: serves(lab, B), 10, "A to leave")
    assert lab.routed_hosts() == {"b"}
    lab.stop_node(B)
    wait_for(lambda: settled(lab), 10, "B to leave HAProxy and its file")
    assert lab.get()[0] == 503
    assert lab.reloads() == (0, 0)


def test_crash_is_removed(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    lab.start_poller()
    wait_for(lambda: serves(lab, A, B), 10, "HAProxy to serve A and B")
    lab.stop_node(B, signal.SIGKILL)
    wait_for(lambda: serves(lab, A), 10, "the killed node to leave")
    assert lab.routed_hosts() == {"a"}
    assert "member down" in lab.log("poller")


def test_haproxys_passed_checks_stand_in_for_poller_probes_and_a_death_is_still_seen(
    lab: Lab,
) -> None:
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    lab.start_poller()
    wait_for(lambda: serves(lab, A, B), 10, "HAProxy to serve A and B")
    borrowed = 'service="default"'

    def vouched(at_least: float) -> bool:
        return lab.metric("poller_checks_borrowed_total", borrowed) >= at_least

    # Once HAProxy's own state of each server is older than poller's last probe of it
    # (HAProxy dates it in whole seconds: a joiner may get one more probe first).
    wait_for(lambda: vouched(6), 10, "HAProxy's checks to answer for A and B")
    probed = lab.metric("poller_probes_total", 'result="ok"')
    now = lab.metric("poller_checks_borrowed_total", borrowed)
    wait_for(lambda: vouched(now + 6), 10, "three more intervals of both")
    # Each interval was HAProxy's word: poller sent A and B nothing (its own probe of a
    # member comes once per pool.verify_interval_seconds, 60 s).
    assert lab.metric("poller_probes_total", 'result="ok"') == probed
    lab.stop_node(B, signal.SIGKILL)
    wait_for(lambda: serves(lab, A), 10, "the killed node to leave")
    assert "member down" in lab.log("poller")
    assert lab.routed_hosts() == {"a"}


def test_flapping_node_never_joins(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_node(C, "flappy", "--flap")  # every other answer is a 500
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")

    def probed_often() -> bool:
        return lab.metric("poller_probes_total", 'result="unexpected_status"') >= 6

    wait_for(probed_often, 10, "the flapping node to fail several probes")
    assert serves(lab, A)
    assert lab.routed_hosts() == {"a"}


def test_identity_change_at_the_same_address_is_a_new_member(lab: Lab) -> None:
    lab.start_node(A, "first")
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")
    lab.stop_node(A, signal.SIGKILL)
    lab.start_node(A, "second")  # Docker gives the address to another container
    wait_for(lambda: "member identity_changed" in lab.log("poller"), 10, "the identity change")

    def second_is_up() -> bool:
        members = lab.status("/pool")["members"]
        return [(m["identity"], m["state"]) for m in members] == [("second", "up")]

    wait_for(second_is_up, 10, "the new node to rise")
    wait_for(lambda: settled(lab, A), 10, "HAProxy to serve the address again")
    # The old member left and the new one joined: remove and add, never an address change.
    # (An apply is counted once its file writes are done, off the loop, a moment after
    # HAProxy and the file show it.)
    runtime_ok = 'method="runtime",result="ok"'
    wait_for(
        lambda: lab.metric("poller_haproxy_changes_total", runtime_ok) >= 3,
        5,
        "the remove and the add to be reported",
    )
    assert lab.routed_hosts() == {"second"}


def test_template_change_is_one_reload(lab: Lab, tmp_path: Path) -> None:
    template = tmp_path / "custom.cfg.j2"
    template.write_text(TEMPLATE.read_text())
    lab.write_settings({"haproxy": {"template": str(template)}})
    lab.init_config()
    lab.stop("haproxy")
    lab.start_haproxy()
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")
    assert lab.reloads() == (0, 0)

    template.write_text(TEMPLATE.read_text() + "# a comment the operator added\n")
    os.kill(lab.procs["poller"].pid, signal.SIGHUP)
    wait_for(lambda: lab.reloads() == (1, 0), 10, "one reload")
    assert lab.config_path.read_text().endswith("# a comment the operator added\n")
    assert serves(lab, A)
    assert lab.routed_hosts() == {"a"}
    wait_for(
        lambda: lab.metric("poller_haproxy_changes_total", 'method="reload",result="ok"') == 1,
        5,
        "the poller to confirm the reload",
    )
    assert lab.reloads() == (1, 0)


def test_a_custom_templates_server_options_reach_runtime_added_servers_too(
    lab: Lab, tmp_path: Path
) -> None:
    """The file is the single truth: a server added at runtime takes its options from the
    rendered file's line for it, so it is the server any reload of that file makes."""
    from tests.support.labs import unix_command

    template = tmp_path / "custom.cfg.j2"
    template.write_text(
        TEMPLATE.read_text().replace("{{ server_options }}", "{{ server_options }} weight 37")
    )
    lab.write_settings({"haproxy": {"template": str(template)}})
    lab.init_config()
    lab.stop("haproxy")
    lab.start_haproxy()
    lab.start_poller()
    lab.start_node(A, "a")
    wait_for(lambda: settled(lab, A), 10, "A to join")
    assert lab.reloads() == (0, 0)  # added at runtime
    name = "nodes/n_127_0_3_2_3000"
    assert lab.admin(f"get weight {name}").strip() == "37 (initial 37)"
    assert "server n_127_0_3_2_3000 127.0.3.2:3000 check" in lab.config_path.read_text()
    assert " weight 37" in lab.config_path.read_text()
    # A reload of that file makes the same server.
    unix_command(lab.master_socket, "reload")
    wait_for(lambda: lab.reloads()[0] == 1, 10, "the reload")
    wait_for(lambda: serves(lab, A), 10, "A served after the reload")
    assert lab.admin(f"get weight {name}").strip() == "37 (initial 37)"


def test_rejected_template_keeps_the_old_config_and_shows_haproxys_message(
    lab: Lab, tmp_path: Path
) -> None:
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: settled(lab, A), 10, "A to join")
    before = lab.config_path.read_bytes()

    template = tmp_path / "broken.cfg.j2"
    template.write_text(TEMPLATE.read_text() + "    no-such-keyword here\n")
    lab.write_settings({"haproxy": {"template": str(template)}})
    os.kill(lab.procs["poller"].pid, signal.SIGHUP)
    wait_for(lambda: "HAProxy rejected the rendered config" in lab.log("poller"), 10, "the error")
    assert "no-such-keyword" in lab.log("poller")  # HAProxy's own words
    assert lab.config_path.read_bytes() == before
    assert lab.reloads() == (0, 0)
    assert lab.routed_hosts() == {"a"}


def test_haproxy_down_during_a_change_converges_when_back(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")
    lab.stop("haproxy", signal.SIGKILL)
    lab.start_node(B, "b")
    wait_for(lambda: "HAProxy not updated; will retry" in lab.log("poller"), 10, "the retry")
    # The file is already right: a restarted HAProxy loads the new pool.
    wait_for(lambda: "127.0.3.3:3000" in lab.config_path.read_text(), 10, "the file to follow")
    lab.start_haproxy()
    wait_for(lambda: serves(lab, A, B), 20, "HAProxy to serve A and B again")
    assert wait_for(lambda: lab.routed_hosts() == {"a", "b"}, 5, "requests to reach both")
    assert lab.poller_alive()


def test_restart_with_an_unchanged_pool_touches_nothing(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    lab.start_poller()
    wait_for(lambda: settled(lab, A, B), 10, "A and B to join")
    assert lab.stop("poller") == 0  # SIGTERM: graceful, exit 0
    before = lab.config_path.read_bytes()
    changed = {name: state for name, state in lab.servers().items()}

    lab.start_poller()

    def checks() -> float:
        # The first of poller's own probes, then HAProxy's passed checks standing in.
        own = lab.metric("poller_sweeps_total", 'kind="check",result="ok"')
        return own + lab.metric("poller_checks_borrowed_total", 'service="default"')

    wait_for(lambda: checks() >= 4, 10, "several checks after the restart")
    assert lab.metric("poller_haproxy_changes_total") == 0  # no runtime change, no reload
    assert lab.reloads() == (0, 0)
    assert lab.config_path.read_bytes() == before
    assert lab.servers() == changed


def test_corrupt_state_is_reported_and_haproxy_untouched(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: settled(lab, A), 10, "A to join")
    lab.stop("poller")
    (lab.workdir / "state.json").write_text("{not json")
    lab.start_poller()
    wait_for(lambda: "state file ignored" in lab.log("poller"), 10, "the report")
    wait_for(
        lambda: (
            lab.metric("poller_sweeps_total", 'kind="check",result="ok"')
            + lab.metric("poller_checks_borrowed_total", 'service="default"')
            >= 4
        ),
        10,
        "several checks (poller's own first, then HAProxy's standing in)",
    )
    assert lab.metric("poller_haproxy_changes_total") == 0
    assert serves(lab, A)


def test_mass_removal_is_held_and_visible(lab: Lab) -> None:
    lab.write_settings({"guard": {"max_removed_fraction": 0.5, "max_hold_seconds": 0}})
    for address, host in ((A, "a"), (B, "b"), (C, "c")):
        lab.start_node(address, host)
    lab.start_poller()
    wait_for(lambda: serves(lab, A, B, C), 10, "three members")
    for address in (A, B, C):
        lab.stop_node(address, signal.SIGKILL)
    wait_for(lambda: lab.metric("poller_guard_held_members") == 3, 10, "the guard to hold")
    assert lab.metric("poller_guard_holds_total") == 1
    assert serves(lab, A, B, C)  # still listed; HAProxy's own checks mark them DOWN
    assert lab.status("/pool")["guard"]["holding"] is True
    assert "guard holding removals" in lab.log("poller")


def test_sighup_with_a_bad_config_keeps_the_old_one(lab: Lab) -> None:
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")
    good = lab.poller_yaml.read_text()
    lab.poller_yaml.write_text(good + "pool:\n  rise: 0\n")
    os.kill(lab.procs["poller"].pid, signal.SIGHUP)
    wait_for(lambda: "new configuration rejected" in lab.log("poller"), 10, "the rejection")
    lab.start_node(B, "b")
    wait_for(lambda: serves(lab, A, B), 10, "the poller to keep working")
    assert lab.poller_alive()


def test_sigterm_stops_within_the_grace(lab: Lab) -> None:
    lab.start_poller()
    assert lab.stop("poller", signal.SIGTERM, timeout=15) == 0


def test_own_network_failing_holds_the_pool(
    lab: Lab, broken_loopback_route: Callable[[bool], None]
) -> None:
    for address, host in ((A, "a"), (B, "b"), (C, "c")):
        lab.start_node(address, host)
    lab.start_poller()
    wait_for(lambda: settled(lab, A, B, C), 10, "three members")
    wait_for(lambda: lab.status("/healthz") is not None, 10, "a healthy poller")
    # The change that added them is counted once it is whole (settled can see it first).
    changes = wait_for(lambda: lab.metric("poller_haproxy_changes_total"), 5, "it counted")

    broken_loopback_route(True)
    wait_for(
        lambda: lab.metric("poller_sweeps_total", 'kind="check",result="failed"') >= 3,
        10,
        "failed checks",
    )
    wait_for(lambda: lab.status("/healthz") is None, 10, "/healthz to fail")
    assert serves(lab, A, B, C)
    assert [m["state"] for m in lab.status("/pool")["members"]] == ["up", "up", "up"]
    assert "sweep failed; keeping the last pool" in lab.log("poller")

    broken_loopback_route(False)
    wait_for(lambda: lab.status("/healthz") is not None, 10, "/healthz to recover")
    assert lab.metric("poller_haproxy_changes_total") == changes  # nothing removed, ever
    assert serves(lab, A, B, C)
    # HAProxy's own checks failed too during the outage; they pass again within a check.
    wait_for(lambda: lab.routed_hosts() == {"a", "b", "c"}, 5, "requests to reach all three")


def test_admin_socket_is_not_world_accessible_and_status_is_read_only(lab: Lab) -> None:
    """Security review, live: HAProxy's admin socket from the template is 660, and the
    status server takes no request that could change HAProxy."""
    mode = stat.S_IMODE(lab.admin_socket.stat().st_mode)
    assert mode & 0o007 == 0, oct(mode)
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: serves(lab, A), 10, "A to join")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/pool", "/healthz", "/metrics", "/events"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{lab.status_port}{path}", data=b"x", method=method
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=2)
            assert refused.value.code == 405
    assert serves(lab, A)


def disabled_in_file(lab: Lab) -> set[str]:
    """The servers the live config file lists `disabled`."""
    return {
        line.split()[1]
        for line in lab.config_path.read_text().splitlines()
        if line.strip().startswith("server ") and line.split("#")[0].split()[-1] == "disabled"
    }


def two_members_reconciled_often(lab: Lab) -> str:
    """A and B served, HAProxy brought in step every 0.5 s; the name of A's server."""
    lab.write_settings({"haproxy": {"reconcile_interval_seconds": 0.5}})
    lab.start_node(A, "a")
    lab.start_node(B, "b")
    lab.start_poller()
    wait_for(lambda: settled(lab, A, B), 10, "A and B to join")
    return "n_127_0_3_2_3000"


def set_aside_in_pool(lab: Lab) -> dict[str, str]:
    pool = lab.status("/pool") or {}
    return {s["endpoint"]: s["state"] for s in pool.get("haproxy", {}).get("set_aside", [])}


def test_an_operators_maintenance_is_left_alone_across_joins_leaves_and_restarts(
    lab: Lab,
) -> None:
    """`set server ... state maint` by hand stays until the operator's `state ready`:
    a join, the member's own leaving and a poller restart all leave it as it is."""
    name = two_members_reconciled_often(lab)
    assert lab.admin(f"set server nodes/{name} state maint").strip() == ""
    wait_for(lambda: set_aside_in_pool(lab) == {f"{A}:3000": "maint"}, 10, "/pool to show it")
    wait_for(lambda: disabled_in_file(lab) == {name}, 10, "the file to list it disabled")
    gauge = 'service="default",state="maint"'
    assert lab.metric("poller_servers_set_aside", gauge) == 1
    [member] = [m for m in lab.status("/pool")["members"] if m["address"] == A]
    assert member["set_aside"] == "maint"
    # A join: added at runtime, the operator's server untouched.
    lab.start_node(C, "c")
    wait_for(lambda: C in lab.addresses(), 10, "C to join")
    assert lab.servers()[name][2] & 0x01
    assert lab.routed_hosts(30) == {"b", "c"}
    # The operator stops the node for their maintenance: it leaves the pool, not HAProxy.
    lab.stop_node(A)
    wait_for(
        lambda: all(
            m["address"] != A or m["state"] == "down" for m in lab.status("/pool")["members"]
        ),
        15,
        "A to be down in the pool",
    )
    assert name in lab.servers()
    assert lab.servers()[name][2] & 0x01
    # A poller restart: HAProxy's state, and the file's `disabled`, stay.
    assert lab.stop("poller") == 0
    lab.start_poller()
    wait_for(lambda: set_aside_in_pool(lab) == {f"{A}:3000": "maint"}, 10, "the new poller")
    assert lab.servers()[name][2] & 0x01
    assert disabled_in_file(lab) == {name}
    # Done: the node is back (checked meanwhile: up again), and the operator hands the
    # server back. It is served at once, with no change to HAProxy but the file's.
    lab.start_node(A, "a")

    def a_up() -> bool:
        return any(m["address"] == A and m["state"] == "up" for m in lab.status("/pool")["members"])

    wait_for(a_up, 15, "A to be up in the pool")
    changes = lab.metric("poller_haproxy_changes_total", 'method="runtime",result="ok"')
    assert lab.admin(f"set server nodes/{name} state ready").strip() == ""
    wait_for(lambda: set_aside_in_pool(lab) == {}, 10, "the hand-back to be seen")
    wait_for(lambda: disabled_in_file(lab) == set(), 10, "the file to follow")
    wait_for(lambda: lab.routed_hosts(30) == {"a", "b", "c"}, 15, "A to be served again")
    assert lab.metric("poller_servers_set_aside", gauge) == 0
    assert lab.metric("poller_haproxy_changes_total", 'method="runtime",result="ok"') == changes
    assert lab.reloads() == (0, 0)
    log = lab.log("poller")
    assert log.count("server set aside by hand; poller leaves it alone") == 2  # each poller
    assert log.count("server handed back; poller manages it again") == 1


def test_a_reload_keeps_an_operators_drain_a_drain(lab: Lab) -> None:
    name = two_members_reconciled_often(lab)
    assert lab.admin(f"set server nodes/{name} state drain").strip() == ""
    wait_for(lambda: disabled_in_file(lab) == {name}, 10, "the file to list it disabled")
    # A settings change that needs a reload (the template's skeleton changes).
    lab.write_settings({"haproxy": {"reconcile_interval_seconds": 0.5, "retries": 2}})
    os.kill(lab.procs["poller"].pid, signal.SIGHUP)
    wait_for(lambda: lab.reloads() == (1, 0), 15, "one reload")
    wait_for(lambda: lab.servers()[name][2] & 0x08, 10, "the drain to be set again")
    assert not lab.servers()[name][2] & 0x01  # a drain, not maintenance
    assert lab.routed_hosts(30) == {"b"}
    assert set_aside_in_pool(lab) == {f"{A}:3000": "drain"}


def test_a_reload_that_fails_after_the_check_restores_the_file_and_keeps_last_good(
    lab: Lab,
) -> None:
    """`haproxy -c` does not bind: a stats port another process holds passes the check
    and fails the reload. The previous file comes back; `.last-good` never saw the bad one."""
    lab.start_node(A, "a")
    lab.start_poller()
    wait_for(lambda: settled(lab, A), 10, "A to join")
    last_good = lab.config_path.with_name("haproxy.cfg.last-good")
    wait_for(last_good.exists, 10, "the last good copy")
    before, good_before = lab.config_path.read_bytes(), last_good.read_bytes()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        lab.write_settings({"haproxy": {"stats_bind": f"127.0.0.1:{taken}"}})
        os.kill(lab.procs["poller"].pid, signal.SIGHUP)
        wait_for(lambda: "restored the last known good config" in lab.log("poller"), 20, "it")
        assert lab.config_path.read_bytes() == before
        assert last_good.read_bytes() == good_before
        assert lab.reloads()[1] >= 1  # HAProxy's master counted the failed reload
        assert serves(lab, A)
        assert lab.routed_hosts() == {"a"}
