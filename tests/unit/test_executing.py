"""The applier's orchestration, pinned with a recording fake of HAProxy's runtime API and
master CLI: the order of the commands it sends. (What HAProxy does with them is tested
against HAProxy itself, in tests/integration.) `haproxy -c` is `true` here: the files
are not the point."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from poller.applying import executing
from poller.applying.executing import Applier
from poller.applying.journal import Hands
from poller.applying.planning import SetAside, servers_in_file
from poller.config import Settings, load_settings
from poller.endpoints import Endpoint
from poller.errors import HAProxyUnavailable
from poller.haproxy.configs import major_minor
from poller.haproxy.rendering import load_template
from poller.haproxy.servers import ServerState

A, B, C = Endpoint("10.0.0.1", 3000), Endpoint("10.0.0.2", 3000), Endpoint("10.0.0.3", 3000)
MAINT, DRAIN = 0x01, 0x08


class RecordingRuntime:
    """HAProxy's runtime API as far as poller uses it, keeping a log of the commands (of
    backend `nodes`: a command for any other backend is a bug here)."""

    backend = "nodes"

    def __init__(self, *servers: tuple[Endpoint, int]) -> None:
        self.state = {e.name: ServerState(e.name, e, 2, admin) for e, admin in servers}
        self.calls: list[str] = []
        self.busy: dict[str, int] = {}  # sessions per server
        self.stuck: dict[str, int] = {}  # deletions refused though idle (idle connections)
        self.late: dict[str, int] = {}  # sessions that reach a server once in maintenance
        self.idle: set[str] = set()  # idle connections kept (a server marked down by checks)

    async def servers(self, backend: str) -> list[ServerState]:
        assert backend == self.backend, backend
        return list(self.state.values())

    async def sessions(self, backend: str) -> dict[str, int]:
        assert backend == self.backend, backend
        self.calls.append("show stat")
        return dict(self.busy)

    async def add_ready_server(self, backend: str, name: str, endpoint: str, options: str) -> None:
        assert backend == self.backend, backend
        # The options of the file's server line: what HAProxy must be told.
        assert options.startswith("check inter "), options
        self.calls.append(f"add {name} ready")
        self.state[name] = ServerState(name, Endpoint.parse(endpoint), 2, 0)

    async def enable_health(self, backend: str, name: str) -> None:
        assert backend == self.backend, backend
        self.calls.append(f"enable health {name}")

    async def set_state(self, backend: str, name: str, state: str) -> None:
        assert backend == self.backend, backend
        self.calls.append(f"state {state} {name}")
        flags = {"ready": 0, "drain": DRAIN, "maint": MAINT}[state]
        if state == "maint" and name in self.late:
            self.busy[name] = self.late.pop(name)
        self.state[name] = ServerState(name, self.state[name].endpoint, 2, flags)

    async def shutdown_sessions(self, backend: str, name: str) -> None:
        assert backend == self.backend, backend
        self.calls.append(f"shutdown sessions {name}")
        self.busy.pop(name, None)

    async def close_idle_connections(self, backend: str, name: str, endpoint: Endpoint) -> None:
        assert backend == self.backend, backend
        self.calls.append(f"close idle {name} {endpoint}")
        self.idle.discard(name)

    async def del_server(self, backend: str, name: str) -> str:
        assert backend == self.backend, backend
        self.calls.append(f"del {name}")
        if name in self.idle:
            return "Server still has connections attached to it, cannot remove it."
        if self.busy.get(name) or self.stuck.get(name):
            if name in self.stuck:
                self.stuck[name] -= 1
            return "Server still has connections attached to it, cannot remove it."
        del self.state[name]
        return "Server deleted."

    async def wait_removable(self, backend: str, name: str, seconds: float) -> bool:
        assert backend == self.backend, backend
        self.calls.append(f"wait removable {name}")
        await asyncio.sleep(seconds)
        return False

    async def version(self) -> str:
        return self.running

    running = "2.6.12-1+deb12u4"


class RecordingMaster:
    def __init__(self) -> None:
        self.reloads = 0
        self.deadlines: list[float] = []

    async def reload(self, deadline_seconds: float) -> None:
        self.reloads += 1
        self.deadlines.append(deadline_seconds)


def applier(
    tmp_path: Path,
    runtime: RecordingRuntime,
    *live: Endpoint,
    drain_timeout: float = 5.0,
    master: RecordingMaster | None = None,
    services: list[dict[str, object]] | None = None,
) -> Applier:
    sections: dict[str, object] = {
        "haproxy": {
            "binary": "true",
            "config_path": str(tmp_path / "haproxy.cfg"),
            "drain_timeout_seconds": drain_timeout,
        },
        "state": {"path": str(tmp_path / "state.json")},
    }
    if services is not None:
        sections["services"] = services
    settings: Settings = load_settings(None, environ={}, overrides=sections)  # type: ignore[arg-type]
    fakes = (runtime, master or RecordingMaster())
    made = Applier(settings, load_template(None), clients=lambda _haproxy: fakes)
    made.config_path.write_text(made.render(live))
    return made


def reloads(made: Applier) -> int:
    master = made.master
    assert isinstance(master, RecordingMaster)
    return master.reloads


def test_a_replacement_is_added_and_ready_before_the_old_one_is_drained(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert (result.method, result.added, result.removed) == ("runtime", [B.name], [A.name])
    assert runtime.calls == [
        f"add {B.name} ready",  # capacity first
        f"state drain {A.name}",
        "show stat",  # no sessions left: no waiting
        f"state maint {A.name}",
        f"del {A.name}",
    ]
    assert servers_in_file(made.config_path.read_text()) == {"nodes": [B]}  # the file follows
    assert reloads(made) == 0


def server_lines(made: Applier) -> list[str]:
    return [
        line.split("#")[0].strip()
        for line in made.config_path.read_text().splitlines()
        if line.strip().startswith("server ")
    ]


@pytest.mark.parametrize(("admin", "state"), [(MAINT, "maint"), (DRAIN, "drain")])
def test_a_server_an_operator_set_aside_is_left_alone_and_listed_disabled(
    tmp_path: Path, admin: int, state: str
) -> None:
    """`set server ... state maint` (or drain) by hand: no command undoes it; the file
    lists the server `disabled`, so a reload keeps it aside too."""
    runtime = RecordingRuntime((A, admin), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert (result.method, result.added, result.removed) == ("file", [], [])
    assert runtime.calls == []
    assert [line.endswith(" disabled") for line in server_lines(made)] == [True, False]
    assert made.hands.aside == {("nodes", A.name): SetAside("nodes", A, state)}
    assert reloads(made) == 0
    # In step now: nothing more to do, and the record is on disk for a restart.
    again = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert again.method == "none"
    assert Hands(made.hands.path).aside == made.hands.aside


def test_an_operators_server_that_left_the_pool_stays_in_haproxy_until_handed_back(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, MAINT), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls == []  # no drain, no delete
    assert servers_in_file(made.config_path.read_text()) == {"nodes": [A, B]}
    # The operator sets it ready: it is poller's again, and it left the pool: removed.
    runtime.state[A.name] = ServerState(A.name, A, 2, 0)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert (result.method, result.removed) == ("runtime", [A.name])
    assert servers_in_file(made.config_path.read_text()) == {"nodes": [B]}
    assert made.hands.aside == {}


@pytest.mark.parametrize("admin", [MAINT, DRAIN])
def test_a_server_a_stopped_poller_left_aside_is_finished_as_its_own(
    tmp_path: Path, admin: int
) -> None:
    """A change under way is remembered before its first command: a poller stopped in
    the middle of a removal finds the server drained (or in maintenance) and knows it
    for its own: put back when wanted again, removed when not."""
    runtime = RecordingRuntime((A, admin), (B, admin))
    made = applier(tmp_path, runtime, A, B)
    made.hands.save({("nodes", A.name), ("nodes", B.name)}, {})
    restarted = applier(tmp_path, runtime, A, B)
    result = asyncio.run(restarted.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls[:2] == [f"enable health {A.name}", f"state ready {A.name}"]
    assert f"del {B.name}" in runtime.calls
    assert restarted.hands.ours == set()  # done: nothing of ours under way
    assert restarted.hands.aside == {}


def test_the_servers_a_change_touches_are_remembered_while_it_runs(tmp_path: Path) -> None:
    seen: list[set[tuple[str, str]]] = []

    class Watching(RecordingRuntime):
        async def add_ready_server(
            self, backend: str, name: str, endpoint: str, options: str
        ) -> None:
            seen.append(Hands(made.hands.path).ours)  # what a restart would find now
            await super().add_ready_server(backend, name, endpoint, options)

    runtime = Watching((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert seen == [{("nodes", B.name), ("nodes", A.name)}]
    assert Hands(made.hands.path).ours == set()


def test_a_reload_keeps_an_operators_servers_aside_and_drains_the_drained_again(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, DRAIN), (B, MAINT))
    made = applier(tmp_path, runtime, A, B)
    made.config_path.write_text("# a file from another template\n")  # so: a reload
    result = asyncio.run(made.apply({"nodes": [C]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert (result.method, result.added, result.removed) == ("reload", [C.name], [])
    assert [(line.split()[1], line.endswith(" disabled")) for line in server_lines(made)] == [
        (A.name, True),
        (B.name, True),
        (C.name, False),
    ]
    assert runtime.calls == [f"state drain {A.name}"]  # the file could only say disabled


def test_while_haproxy_is_away_the_file_keeps_the_servers_set_aside_as_last_seen(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, MAINT))
    made = applier(tmp_path, runtime, A)
    made.hands.save(set(), {("nodes", A.name): SetAside("nodes", A, "maint")})
    result = asyncio.run(made.apply({"nodes": [B]}, None))
    assert result.method == "offline"
    assert result.file_installed
    assert [line.split()[1] for line in server_lines(made) if line.endswith(" disabled")] == [
        A.name
    ]


def test_a_record_of_hands_that_cannot_be_read_is_said_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json.hands"
    path.write_text("{not json")
    hands = Hands(path)
    assert (hands.ours, hands.aside) == (set(), {})
    [said] = [
        r for r in caplog.records if r.getMessage() == "ignoring the record of servers set aside"
    ]
    assert said.levelname == "WARNING"
    assert getattr(said, "fields", {})["path"] == str(path)


def test_a_file_listing_servers_disabled_is_still_this_templates(tmp_path: Path) -> None:
    """The `disabled` an operator's hand adds is no change of template or settings: no
    reload for it, either way."""
    runtime = RecordingRuntime((A, 0), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    made.config_path.write_text(
        made.render({"nodes": [A, B]}, {("nodes", A.name): SetAside("nodes", A, "maint")})
    )
    result = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert (result.method, reloads(made)) == ("file", 0)  # handed back: the file follows
    assert not any(line.endswith(" disabled") for line in server_lines(made))


def test_nothing_is_sent_when_haproxy_and_the_file_agree(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert (result.ok, result.method) == (True, "none")
    assert runtime.calls == []


def test_sessions_left_after_the_drain_timeout_are_ended_before_the_delete(
    tmp_path: Path,
) -> None:
    """A member that stopped answering (a partition) holds its sessions until HAProxy's
    `timeout server`; HAProxy refuses to delete a server with sessions. So: drain, wait
    out the drain timeout, maintenance, end the sessions, delete; no reload."""
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.busy = {A.name: 3}
    made = applier(tmp_path, runtime, A, B, drain_timeout=0.05)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert (result.method, result.removed) == ("runtime", [A.name])
    calls = [c for i, c in enumerate(runtime.calls) if c != "show stat" or i == 1]
    assert calls == [
        f"state drain {A.name}",
        "show stat",  # polled until the drain timeout
        f"state maint {A.name}",
        f"shutdown sessions {A.name}",
        f"del {A.name}",
    ]
    assert runtime.calls.count("show stat") >= 2
    assert reloads(made) == 0


def test_streams_that_reach_a_server_after_its_drain_are_ended_after_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HAProxy also refuses a server that streams came to after the drain (connects being
    retried, a queue); poller retries, then ends them and deletes: still no reload."""
    monkeypatch.setattr(executing, "STREAMS_GRACE_SECONDS", 0.05)
    monkeypatch.setattr(executing, "DEL_RETRY_POLL_SECONDS", 0.01)
    caplog.set_level(logging.INFO, logger="poller")
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.late = {A.name: 2}
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    sent = [c for c in runtime.calls if not c.startswith("wait ")]
    calls = [c for i, c in enumerate(sent) if i == 0 or c != sent[i - 1]]
    assert calls == [
        f"state drain {A.name}",
        "show stat",
        f"state maint {A.name}",
        f"del {A.name}",  # refused
        f"close idle {A.name} {A}",  # not idle connections:
        f"del {A.name}",  # refused again, retried for the grace
        f"shutdown sessions {A.name}",
        f"del {A.name}",
    ]
    assert reloads(made) == 0
    message = "ending the sessions still on a leaving server"
    said = [r for r in caplog.records if r.getMessage() == message]
    assert [getattr(r, "fields", {}) for r in said] == [{"server": A.name}]  # once
    assert [r.levelname for r in said] == ["INFO"]


def test_idle_connections_to_a_server_marked_down_are_closed_before_the_delete(
    tmp_path: Path,
) -> None:
    """HAProxy keeps idle keep-alive connections to a server its checks marked down (a
    crash, a partition) and refuses to delete it until its purge timer wears them off:
    poller has them closed at once, ends nothing, reloads nothing."""
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.idle = {A.name}
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls == [
        f"state drain {A.name}",
        "show stat",
        f"state maint {A.name}",
        f"del {A.name}",
        f"close idle {A.name} {A}",
        f"del {A.name}",
    ]
    assert reloads(made) == 0


def test_between_refused_deletes_haproxy_is_asked_to_say_when_the_server_is_removable(
    tmp_path: Path,
) -> None:
    """The pause between two `del server` is HAProxy's `wait srv-removable` (it ends
    the moment the server can go, where HAProxy has it), not a blind sleep."""
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.stuck = {A.name: 2}
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls[3:] == [
        f"del {A.name}",
        f"close idle {A.name} {A}",  # first suspect, then no pause
        f"del {A.name}",
        f"wait removable {A.name}",
        f"del {A.name}",
    ]


def test_a_delete_refused_without_sessions_to_see_is_retried_and_ended_each_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused though `show stat` shows no session (streams it does not count): retried,
    what is on the server ended each grace, deleted once HAProxy lets go; no reload."""
    monkeypatch.setattr(executing, "STREAMS_GRACE_SECONDS", 0.02)
    monkeypatch.setattr(executing, "DEL_RETRY_POLL_SECONDS", 0.01)
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.stuck = {A.name: 6}
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls.count(f"del {A.name}") == 7
    assert runtime.calls.count(f"shutdown sessions {A.name}") >= 1
    assert reloads(made) == 0


def test_a_server_haproxy_keeps_refusing_falls_back_to_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executing, "DEL_RETRY_SECONDS", 0.1)
    monkeypatch.setattr(executing, "DEL_RETRY_POLL_SECONDS", 0.01)

    class Refusing(RecordingRuntime):
        async def del_server(self, backend: str, name: str) -> str:
            self.calls.append(f"del {name}")
            return "Server still has connections attached to it, cannot remove it."

    runtime = Refusing((A, 0), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert result.method == "reload"
    assert result.reason.startswith(f"HAProxy refused to delete nodes/{A.name}: Server still")
    assert reloads(made) == 1


class FailingMaster(RecordingMaster):
    async def reload(self, deadline_seconds: float) -> None:
        from poller.errors import ReloadFailed

        self.reloads += 1
        raise ReloadFailed("the new workers did not start")


def test_a_reload_that_fails_after_a_runtime_fallback_is_counted_as_a_failed_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The method of a failure is what was being done when it failed, not a guess made
    afterwards: here the runtime change fell back to a reload, and the reload failed."""
    monkeypatch.setattr(executing, "DEL_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(executing, "DEL_RETRY_POLL_SECONDS", 0.01)

    class Refusing(RecordingRuntime):
        async def del_server(self, backend: str, name: str) -> str:
            return "Server still has connections attached to it, cannot remove it."

    runtime = Refusing((A, 0), (B, 0))
    made = applier(tmp_path, runtime, A, B, master=FailingMaster())
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert not result.ok
    assert result.method == "reload"
    assert "the new workers did not start" in (result.error or "")


def test_a_template_rejected_on_the_reload_path_is_counted_as_a_failed_reload(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    made.config_path.write_text("# a file from another template\n")  # so: a reload
    made.settings = made.settings.model_copy(
        update={"haproxy": made.settings.haproxy.model_copy(update={"binary": "false"})}
    )
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert not result.ok
    assert result.method == "reload"
    assert reloads(made) == 0
    assert runtime.calls == []


def test_a_failure_before_any_plan_is_counted_under_the_file(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    made.config_path.unlink()
    made.config_path.mkdir()  # the live file cannot be read
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert not result.ok
    assert result.method == "file"
    assert "cannot read" in (result.error or "")


def settings_changed(made: Applier, **haproxy: object) -> None:
    made.settings = made.settings.model_copy(
        update={"haproxy": made.settings.haproxy.model_copy(update=haproxy)}
    )


def test_a_reload_installs_the_file_remembers_it_as_good_and_says_what_moved(
    tmp_path: Path,
) -> None:
    from poller.haproxy import configs

    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    made.config_path.write_text("# a file from another template\n")  # so: a reload
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert (result.method, result.added, result.removed) == ("reload", [B.name], [A.name])
    assert result.file_installed
    assert result.reason == "the template or settings changed"
    assert reloads(made) == 1
    assert runtime.calls == []  # a reload sends no runtime command
    rendered = made.render({"nodes": [B]})
    assert made.config_path.read_text() == rendered
    assert configs.last_good_path(made.config_path).read_text() == rendered
    assert not made.pending_reload  # the journal is cleared once it is done
    assert made.last_reload_at > float("-inf")


def test_a_failed_reload_puts_back_the_last_good_file_and_owes_nothing(tmp_path: Path) -> None:
    from poller.haproxy import configs

    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A, master=FailingMaster())
    good = made.render({"nodes": [A]})
    configs.remember_good(made.config_path, good)
    made.config_path.write_text("# a file from another template\n")
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert not result.ok
    assert result.error == "the new workers did not start; restored the last known good config"
    assert made.config_path.read_text() == good
    assert not made.pending_reload


def test_a_failed_reload_with_no_good_file_to_go_back_to_says_so(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A, master=FailingMaster())
    made.config_path.write_text("# a file from another template\n")
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.error == "the new workers did not start; no last good config"


def test_reloads_keep_their_minimum_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    settings_changed(made, min_reload_gap_seconds=5.0)
    now = [100.0]
    made.clock = lambda: now[0]
    made.last_reload_at = 98.0
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(executing.asyncio, "sleep", sleep)
    made.config_path.write_text("# a file from another template\n")
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert slept == [3.0]  # 5 s after the last one, 2 s ago
    made.last_reload_at = 90.0
    made.config_path.write_text("# again\n")
    asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert slept == [3.0]  # long enough ago: no wait


def test_the_files_servers_are_read_per_backend_and_none_when_unreadable(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A, B)
    assert made.live_file_servers() == {"nodes": [A, B]}
    made.config_path.write_bytes(b"\xff\xfe not text")
    assert made.live_file_servers() == {"nodes": []}
    made.config_path.unlink()
    assert made.live_file_servers() == {"nodes": []}


def test_haproxys_servers_are_read_per_backend(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    assert asyncio.run(made.live_servers()) == {"nodes": [ServerState(A.name, A, 2, 0)]}


def _validator(tmp_path: Path, says: str) -> str:
    binary = tmp_path / "haproxy"
    binary.write_text(f"#!/bin/sh\necho '{says}'\n")
    binary.chmod(0o755)
    return str(binary)


@pytest.mark.parametrize(
    ("validator", "warned"),
    [
        ("HAProxy version 3.0.11-1+deb13u4 2026/10/15 - https://haproxy.org/", True),
        ("HAProxy version 2.6.12-1+deb12u4 2026/10/15 - https://haproxy.org/", False),
        ("", False),  # says nothing: no guess
    ],
)
def test_a_validator_of_another_major_version_than_haproxys_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, validator: str, warned: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="poller")
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    made.settings = made.settings.model_copy(
        update={
            "haproxy": made.settings.haproxy.model_copy(
                update={"binary": _validator(tmp_path, validator)}
            )
        }
    )

    async def twice() -> None:
        await made.live_servers()
        await made.live_servers()

    asyncio.run(twice())
    said = [getattr(r, "fields", {}) for r in caplog.records if "HAPROXY_IMAGE" in r.getMessage()]
    if warned:
        assert said == [
            {
                "running": "2.6.12-1+deb12u4",
                "validator": validator,
                "binary": made.settings.haproxy.binary,
            }
        ]
    else:
        assert said == []


def test_a_version_haproxy_does_not_give_is_asked_again_and_fails_no_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Busy(RecordingRuntime):
        asked = 0

        async def version(self) -> str:
            self.asked += 1
            if self.asked == 1:
                raise HAProxyUnavailable("the admin socket timed out")
            return await super().version()

    caplog.set_level(logging.WARNING, logger="poller")
    runtime = Busy((A, 0))
    made = applier(tmp_path, runtime, A)
    validator = _validator(tmp_path, "HAProxy version 3.0.11-1+deb13u4 2026/10/15")
    made.settings = made.settings.model_copy(
        update={"haproxy": made.settings.haproxy.model_copy(update={"binary": validator})}
    )

    async def three() -> None:
        for _ in range(3):
            assert await made.live_servers() == {"nodes": [ServerState(A.name, A, 2, 0)]}

    asyncio.run(three())
    assert runtime.asked == 2
    assert [r for r in caplog.records if "HAPROXY_IMAGE" in r.getMessage()] != []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HAProxy version 3.0.11-1+deb13u4 2026/10/15 - https://haproxy.org/", "3.0"),
        ("2.6.12-1+deb12u4", "2.6"),
        ("HAProxy version 3.2.0 2025/05/28", "3.2"),
        ("HAProxy version 10.12.3-dev1", "10.12"),
        ("no version here 2026/10/15", None),
        ("", None),
    ],
)
def test_the_major_version_is_read_from_what_haproxy_says(text: str, expected: str | None) -> None:
    assert major_minor(text) == expected


def test_with_haproxy_away_the_file_is_installed_and_a_reload_owed_if_it_needs_one(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [A, B]}, None))
    assert (result.method, result.file_installed) == ("offline", True)
    socket = made.settings.haproxy.admin_socket
    assert result.error == (
        f"{socket}: HAProxy's runtime API does not answer; the config file is up to date "
        "and the change will be retried"
    )
    assert servers_in_file(made.config_path.read_text()) == {"nodes": [A, B]}
    assert not made.pending_reload  # the same skeleton: a restarted HAProxy loads it
    made.config_path.write_text("# a file from another template\n")
    asyncio.run(made.apply({"nodes": [A, B]}, None))
    assert made.pending_reload  # a running HAProxy needs a reload for that one
    assert runtime.calls == []


def test_in_step_the_first_time_the_file_is_remembered_as_the_last_good_one(
    tmp_path: Path,
) -> None:
    from poller.haproxy import configs

    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    good = configs.last_good_path(made.config_path)
    assert not good.exists()
    asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert good.read_text() == made.config_path.read_text()
    good.write_text("an older good one\n")
    asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert good.read_text() == "an older good one\n"  # kept: only a change replaces it


def test_a_runtime_change_haproxy_does_not_show_afterwards_falls_back_to_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Forgetful(RecordingRuntime):
        async def add_ready_server(
            self, backend: str, name: str, endpoint: str, options: str
        ) -> None:
            self.calls.append(f"add {name} ready")  # and HAProxy does not list it after

    runtime = Forgetful((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert result.method == "reload"
    error = (
        "HAProxy disagrees after the runtime change: nodes has ['10.0.0.1:3000'], "
        "expected ['10.0.0.1:3000', '10.0.0.2:3000']"
    )
    assert result.reason == error
    said = [
        r for r in caplog.records if r.getMessage() == "runtime change failed; reloading instead"
    ]
    assert [getattr(r, "fields", {}) for r in said] == [{"error": error}]
    assert [r.levelname for r in said] == ["WARNING"]
    assert reloads(made) == 1


def test_a_runtime_change_whose_file_cannot_be_installed_says_so_and_keeps_haproxy(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    settings_changed(made, binary="false")  # the file's validation fails
    result = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert result.method == "runtime"
    assert result.added == [B.name]
    assert not result.file_installed
    assert (result.error or "").startswith("HAProxy rejected the rendered config")
    assert B.name in runtime.state  # HAProxy serves the pool; the file is behind
    assert servers_in_file(made.config_path.read_text()) == {"nodes": [A]}


def test_a_runtime_change_that_installs_the_file_says_so(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [A, B]}, {"nodes": list(runtime.state.values())}))
    assert (result.ok, result.file_installed, result.reason) == (True, True, "")


def test_a_drain_that_times_out_says_which_servers_still_had_sessions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.busy = {A.name: 1}
    made = applier(tmp_path, runtime, A, B, drain_timeout=0.05)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    message = "drain timed out; ending the sessions still on the servers"
    said = [r for r in caplog.records if r.getMessage() == message]
    assert [getattr(r, "fields", {}) for r in said] == [{"servers": [A.name]}]
    assert f"shutdown sessions {A.name}" in runtime.calls


def test_a_server_already_gone_when_deleted_is_no_error(tmp_path: Path) -> None:
    class Vanishing(RecordingRuntime):
        async def del_server(self, backend: str, name: str) -> str:
            self.calls.append(f"del {name}")
            del self.state[name]
            return "No such server."

    runtime = Vanishing((A, 0), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert (result.ok, result.method, reloads(made)) == (True, "runtime", 0)


def test_a_delete_refused_for_another_reason_falls_back_to_a_reload_at_once(
    tmp_path: Path,
) -> None:
    class Refusing(RecordingRuntime):
        async def del_server(self, backend: str, name: str) -> str:
            self.calls.append(f"del {name}")
            return "Server is not in maintenance."

    runtime = Refusing((A, 0), (B, 0))
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert result.method == "reload"
    assert result.reason == (
        f"HAProxy refused to delete nodes/{A.name}: Server is not in maintenance."
    )
    assert runtime.calls.count(f"del {A.name}") == 1


def test_a_reload_is_journalled_while_it_runs_and_waits_its_timeout(tmp_path: Path) -> None:
    seen: list[bool] = []

    class Watching(RecordingMaster):
        async def reload(self, deadline_seconds: float) -> None:
            seen.append(made.pending_reload)  # what a poller killed now would find
            await super().reload(deadline_seconds)

    runtime = RecordingRuntime((A, 0))
    master = Watching()
    made = applier(tmp_path, runtime, A, master=master)
    made.config_path.write_text("# a file from another template\n")
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert seen == [True]
    assert master.deadlines == [made.settings.haproxy.reload_timeout_seconds]
    assert not made.pending_reload


def test_an_apply_measures_how_long_it_took(tmp_path: Path) -> None:
    runtime = RecordingRuntime((A, 0))
    made = applier(tmp_path, runtime, A)
    ticks = iter([10.0, 10.25])
    made.clock = lambda: next(ticks)
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert result.duration_seconds == 0.25


def test_with_several_backends_servers_are_named_with_their_backend(tmp_path: Path) -> None:
    class TwoBackends(RecordingRuntime):
        def __init__(self, *servers: tuple[Endpoint, int]) -> None:
            super().__init__(*servers)
            self.backend = "api"

    A1, B1 = Endpoint(A.address, 3001), Endpoint(B.address, 3001)
    runtime = TwoBackends((A1, 0))
    services: list[dict[str, object]] = [
        {"name": "web", "ports": [3000], "backend": "web", "route": {"default": True}},
        {"name": "api", "ports": [3001], "backend": "api", "route": {"path_prefix": "/api"}},
    ]
    made = applier(tmp_path, runtime, services=services)
    made.config_path.write_text(made.render({"api": [A1]}))

    async def live() -> dict[str, list[ServerState]]:
        return {"web": [], "api": list(runtime.state.values())}

    made.live_servers = live  # type: ignore[method-assign]
    result = asyncio.run(
        made.apply({"api": [B1]}, {"web": [], "api": list(runtime.state.values())})
    )
    assert result.ok, result.error
    assert (result.added, result.removed) == ([f"api/{B1.name}"], [f"api/{A1.name}"])


def test_a_drain_that_cannot_be_set_again_after_a_reload_is_said_and_the_rest_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poller.errors import HAProxyError

    class Refusing(RecordingRuntime):
        async def set_state(self, backend: str, name: str, state: str) -> None:
            if name == B.name:
                raise HAProxyError("No such server.")
            await super().set_state(backend, name, state)

    runtime = Refusing((A, MAINT), (B, DRAIN), (C, DRAIN))
    made = applier(tmp_path, runtime, A, B, C)
    made.config_path.write_text("# a file from another template\n")  # so: a reload
    result = asyncio.run(made.apply({"nodes": []}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert runtime.calls == [f"state drain {C.name}"]  # B refused, C still drained
    message = "could not drain again a server set aside by hand; it stays in maintenance"
    said = [r for r in caplog.records if r.getMessage() == message]
    assert [getattr(r, "fields", {}) for r in said] == [
        {"server": B.name, "error": "No such server."}
    ]
    assert [r.levelname for r in said] == ["WARNING"]
