"""Parsing HAProxy's answers (text captured from HAProxy 2.6.12)."""

from __future__ import annotations

import pytest

from poller.endpoints import Endpoint
from poller.errors import HAProxyError, HAProxyUnavailable
from poller.haproxy.master import parse_show_proc
from poller.haproxy.servers import ServerState, parse_servers_state

SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
5552            master          2 [failed: 1]   0d00h03m39s     2.6.12-1+deb12u4
# workers
8836            worker          1               0d00h00m04s     2.6.12-1+deb12u4
# programs

"""


def test_show_proc() -> None:
    procs = parse_show_proc(SHOW_PROC)
    assert (procs.master_pid, procs.reloads, procs.failed, procs.workers) == (5552, 2, 1, (8836,))


def test_show_proc_garbage_is_unavailable() -> None:
    with pytest.raises(HAProxyUnavailable, match="unexpected `show proc` answer"):
        parse_show_proc("Unknown command\n")


# HAProxy 3.0.11's answers to the master CLI's `reload` (2.6 answers nothing).
RELOADED = (
    "Success=1\n--\n[NOTICE]   (28163) : New worker (28253) forked\n"
    "[NOTICE]   (28163) : Loading success.\n"
)
REFUSED = (
    "Success=0\n--\n[NOTICE]   (28163) : haproxy version is 3.0.11-1+deb13u4\n"
    "[NOTICE]   (28163) : path to executable is /usr/sbin/haproxy\n"
    "[ALERT]    (28163) : Binding [/tmp/h.cfg:9] for frontend f: protocol tcpv4: cannot "
    "bind socket (Address already in use) for [127.0.0.1:18001].\n"
    "[ALERT]    (28163) : [/usr/sbin/haproxy.main()] Some protocols failed to start their "
    "listeners! Exiting.\n"
)


@pytest.mark.parametrize(
    ("answer", "outcome"), [(RELOADED, True), (REFUSED, False), ("", None), ("\n", None)]
)
def test_a_reload_answer_says_how_it_went_from_haproxy_2_7_on(
    answer: str, outcome: bool | None
) -> None:
    from poller.haproxy.master import reload_outcome

    assert reload_outcome(answer) is outcome


def test_a_failed_reload_is_explained_by_haproxys_alerts() -> None:
    from poller.haproxy.master import alerts

    assert alerts(REFUSED) == (
        "Binding [/tmp/h.cfg:9] for frontend f: protocol tcpv4: cannot bind socket (Address "
        "already in use) for [127.0.0.1:18001]. / [/usr/sbin/haproxy.main()] Some protocols "
        "failed to start their listeners! Exiting."
    )
    assert (
        alerts("Success=0\n--\n[NOTICE] (1) : something else\n") == "[NOTICE] (1) : something else"
    )


SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port ...
4 nodes 1 n_10_42_0_7_3000 10.42.0.7 2 0 1 1 12 6 3 4 6 0 0 0 - 3000 - 0 0 - - 0
4 nodes 2 web1 - 0 32 1 1 0 1 0 0 14 0 0 0 tasks.shop_web 3000 - 0 0 - - 0
5 other 1 s1 10.42.0.9 2 0 1 1 12 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0
"""


def test_servers_state_rows_of_the_backend_with_an_address() -> None:
    """An unresolved server-template slot (address `-`) serves nothing and is never
    poller's: skipped, not an error; other backends' rows are not this backend's."""
    assert parse_servers_state(SERVERS_STATE, "nodes") == [
        ServerState("n_10_42_0_7_3000", Endpoint("10.42.0.7", 3000), 2, 0, 3, 6)
    ]


def test_a_servers_state_row_that_does_not_parse_is_an_haproxy_error() -> None:
    broken = SERVERS_STATE.replace("10.42.0.7 2 0", "10.42.0.7 up 0")
    with pytest.raises(HAProxyError, match="unexpected `show servers state` row"):
        parse_servers_state(broken, "nodes")


# Rows a real HAProxy 2.6 gave: a server whose check passed, one whose check failed (a
# 302 against `expect status 200-299`), one without `check`, one put in maintenance (its
# check paused), and one drained.
CHECKED_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
3 b 1 up 127.0.0.1 2 0 1 1 2 15 3 4 6 0 0 0 - 18081 - 0 0 - - 0
3 b 2 redir 127.0.0.1 0 0 1 1 3 17 2 0 6 0 0 0 - 18082 - 0 0 - - 0
3 b 4 nochk 127.0.0.1 2 0 1 1 3 1 0 2 0 0 0 0 - 18083 - 0 0 - - 0
3 b 5 m 127.0.0.1 0 1 1 1 1 15 3 0 14 0 0 0 - 18084 - 0 0 - - 0
3 b 6 d 127.0.0.1 2 8 1 1 1 15 3 4 6 0 0 0 - 18085 - 0 0 - - 0
"""


def test_haproxy_vouches_only_for_a_running_server_whose_enabled_check_passed() -> None:
    rows = {s.name: s.check_passed for s in parse_servers_state(CHECKED_STATE, "b")}
    assert rows == {"up": True, "redir": False, "nochk": False, "m": False, "d": False}
