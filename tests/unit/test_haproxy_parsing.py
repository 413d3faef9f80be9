"""Parsing HAProxy's answers (text captured from HAProxy 2.6.12)."""

from __future__ import annotations

import pytest

from poller.errors import HAProxyUnavailable
from poller.haproxy.master import parse_show_proc

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
