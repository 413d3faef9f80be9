"""The apply planner, as a table: what HAProxy is asked to do, decided without HAProxy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from poller.applying.planning import Plan, plan, servers_in_file
from poller.endpoints import Endpoint
from poller.haproxy.servers import ADMIN_DRAIN, ADMIN_MAINT, ServerState

A, B, C = (Endpoint(f"10.0.0.{i}", 3000) for i in (1, 2, 3))
RENDERED = "rendered\n"
# The reasons the log gives (the `reason` field of "HAProxy updated").
FILE_BEHIND = "only the file was behind"
PENDING = "a reload is pending"
NO_RUNTIME_API = "haproxy.runtime_api is false"
CHANGED = "the template or settings changed"
AWAY = "HAProxy's runtime API does not answer"


def live(*endpoints: Endpoint, admin: int = 0) -> list[ServerState]:
    return [ServerState(e.name, e, 2, admin) for e in endpoints]


def decide(
    wanted: list[Endpoint],
    servers: list[ServerState] | None,
    live_text: str | None = RENDERED,
    same_skeleton: bool = True,
    pending_reload: bool = False,
    runtime_api: bool = True,
) -> Plan:
    """One backend, `nodes`, as without services."""
    have = None if servers is None else {"nodes": servers}
    return plan(
        {"nodes": wanted}, have, live_text, RENDERED, same_skeleton, pending_reload, runtime_api
    )


def in_nodes(expected: Plan) -> Plan:
    """A table's plan, its servers in backend `nodes`."""
    return replace(
        expected,
        add=tuple(("nodes", e) for e in expected.add),  # type: ignore[misc]
        enable=tuple(("nodes", n) for n in expected.enable),  # type: ignore[misc]
        remove=tuple(("nodes", n) for n in expected.remove),  # type: ignore[misc]
    )


@pytest.mark.parametrize(
    ("wanted", "servers", "live_text", "same", "pending", "runtime_api", "expected"),
    [
        # In step, file up to date: nothing at all.
        ([A, B], live(A, B), RENDERED, True, False, True, Plan("none")),
        ([], live(), RENDERED, True, False, True, Plan("none")),
        # Membership only: the runtime API, adds before removals, the file follows.
        ([A, B], live(A), "old\n", True, False, True, Plan("runtime", (B,), (), (), True)),
        ([A], live(A, B), "old\n", True, False, True, Plan("runtime", (), (), (B.name,), True)),
        (
            [B, C],
            live(A),
            "old\n",
            True,
            False,
            True,
            Plan("runtime", (B, C), (), (A.name,), True),
        ),
        # A server in maintenance or drain that is not an operator's (a poller stopped
        # mid-change left it so): put back.
        (
            [A],
            live(A, admin=ADMIN_MAINT & 0x01),
            RENDERED,
            True,
            False,
            True,
            Plan("runtime", (), (A.name,), (), False),
        ),
        (
            [A],
            live(A, admin=ADMIN_DRAIN & 0x08),
            RENDERED,
            True,
            False,
            True,
            Plan("runtime", (), (A.name,), (), False),
        ),
        # HAProxy agrees, only the file is behind (a poller stopped mid-apply).
        ([A], live(A), "old\n", True, False, True, Plan("file", install=True, reason=FILE_BEHIND)),
        # Anything else reloads, the file first.
        ([A], live(A), "old\n", False, False, True, Plan("reload", install=True, reason=CHANGED)),
        ([A, B], live(A), "old\n", True, True, True, Plan("reload", install=True, reason=PENDING)),
        (
            [A, B],
            live(A),
            "old\n",
            True,
            False,
            False,
            Plan("reload", install=True, reason=NO_RUNTIME_API),
        ),
        ([A], live(A), RENDERED, True, True, True, Plan("reload", install=True, reason=PENDING)),
        ([A], live(A), None, False, False, True, Plan("reload", install=True, reason=CHANGED)),
        # HAProxy away: the file is installed for whatever starts it next.
        ([A], None, "old\n", True, False, True, Plan("offline", install=True, reason=AWAY)),
        ([A], None, RENDERED, True, False, True, Plan("offline", reason=AWAY)),
        (
            [A],
            None,
            "old\n",
            False,
            False,
            True,
            Plan("offline", install=True, pending_reload=True, reason=AWAY),
        ),
        ([A], None, RENDERED, True, True, True, Plan("offline", pending_reload=True, reason=AWAY)),
    ],
)
def test_plans(
    wanted: list[Endpoint],
    servers: list[ServerState] | None,
    live_text: str | None,
    same: bool,
    pending: bool,
    runtime_api: bool,
    expected: Plan,
) -> None:
    assert decide(wanted, servers, live_text, same, pending, runtime_api) == in_nodes(expected)


def test_a_server_listed_at_another_address_is_never_moved_at_runtime() -> None:
    moved = ServerState(A.name, Endpoint("10.0.0.9", 3000), 2, 0)
    got = decide([A], [moved], "old\n")
    assert got == Plan("reload", install=True, reason=f"HAProxy lists {A.name} at another address")


def test_additions_are_in_endpoint_order_and_removals_too() -> None:
    got = decide([C, A, B], live(), "old\n")
    assert got.add == (("nodes", A), ("nodes", B), ("nodes", C))
    got = decide([], live(C, A, B), "old\n")
    assert got.remove == (("nodes", A.name), ("nodes", B.name), ("nodes", C.name))
    # In address order, not name order ("n_10_0_0_10_..." sorts before "n_10_0_0_9_...").
    nine, ten = Endpoint("10.0.0.9", 3000), Endpoint("10.0.0.10", 3000)
    assert decide([], live(ten, nine), "old\n").remove == (
        ("nodes", nine.name),
        ("nodes", ten.name),
    )


def test_each_backend_is_planned_on_its_own_and_changes_go_to_their_backend() -> None:
    """Two services: what one backend lacks is added there, whatever the other has."""
    got = plan(
        {"web": [A, B], "api": [B]},
        {"web": live(A), "api": live(B, C)},
        "old\n",
        RENDERED,
        True,
        False,
        True,
    )
    assert got == Plan("runtime", (("web", B),), (), (("api", C.name),), install=True)


def test_servers_are_read_back_from_a_rendered_file_only_when_ours() -> None:
    text = (
        "backend nodes\n"
        "    server n_10_0_0_2_3000 10.0.0.2:3000 check\n"
        "    server n_10_0_0_1_3000 10.0.0.1:3000 check\n"
        "    server hand-made 10.0.0.7:3000 check\n"
        "    server n_looks_like_ours not-an-address check\n"
        "    server n_fd00_0000_0000_0000_0000_0000_0000_0001_80 [fd00::1]:80 check\n"
    )
    assert servers_in_file(text) == {"nodes": [A, B, Endpoint("fd00::1", 80)]}
    two = "backend web\n    server n_10_0_0_1_3000 10.0.0.1:3000\nbackend api\nbackend x\n"
    assert servers_in_file(two) == {"web": [A], "api": [], "x": []}


def test_server_options_are_read_from_each_server_line_of_its_backend() -> None:
    from poller.applying.planning import server_options_in

    text = (
        "    server stray 10.9.9.8:80 check\n"  # before any section: nobody's
        "global\n    stats socket /run/admin.sock\n"
        "frontend web\n    bind :80\n    default_backend nodes\n"
        "backend nodes\n    balance roundrobin\n"
        "    server n_10_0_0_1_3000 10.0.0.1:3000 check weight 37 # the operator's # note\n"
        "    server n_fd00__1_3000 [fd00::1]:3000 check\n"
        "backend api\n    server n_10_0_0_2_3001 10.0.0.2:3001 check inter 2s\n"
        "listen stats\n    server other 10.9.9.9:80 check\n"
    )
    assert server_options_in(text) == {
        ("nodes", "n_10_0_0_1_3000"): "check weight 37",
        ("nodes", "n_fd00__1_3000"): "check",
        ("api", "n_10_0_0_2_3001"): "check inter 2s",
    }


def test_servers_an_operator_set_aside_are_neither_enabled_removed_nor_counted() -> None:
    held = ServerState(A.name, A, 2, 0x01)
    drained = ServerState(B.name, B, 2, 0x08)
    aside = {("nodes", A.name), ("nodes", B.name)}
    have = {"nodes": [held, drained]}
    # Wanted or not, in step: only the file may follow.
    for wanted in ([A, B], [], [A]):
        got = plan({"nodes": wanted}, have, RENDERED, RENDERED, True, False, True, aside)
        assert got == Plan("none"), wanted
    got = plan({"nodes": [A, C]}, have, RENDERED, RENDERED, True, False, True, aside)
    assert got == Plan("runtime", (("nodes", C),))


def test_set_aside_by_hand_is_what_haproxy_lists_aside_that_poller_did_not_touch() -> None:
    from poller.applying.planning import SetAside, set_aside_by_hand

    live = {
        "nodes": [
            ServerState(A.name, A, 2, 0x01),  # maint
            ServerState(B.name, B, 2, 0x08 | 0x04),  # drain (a `disabled` line, drained)
            ServerState(C.name, C, 2, 0x04),  # `disabled` in the file, then set ready
        ],
        "api": [ServerState(A.name, A, 2, 0x09)],  # both: maintenance wins
    }
    assert set_aside_by_hand(live, ours=set()) == {
        ("nodes", A.name): SetAside("nodes", A, "maint"),
        ("nodes", B.name): SetAside("nodes", B, "drain"),
        ("api", A.name): SetAside("api", A, "maint"),
    }
    assert set_aside_by_hand(live, ours={("nodes", A.name), ("api", A.name)}) == {
        ("nodes", B.name): SetAside("nodes", B, "drain"),
    }
