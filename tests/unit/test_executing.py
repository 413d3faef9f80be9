"""The applier's orchestration, pinned with a recording fake of HAProxy's runtime API and
master CLI: the order of the commands it sends. (What HAProxy does with them is tested
against HAProxy itself, in tests/integration.) `haproxy -c` is `true` here: the files
are not the point."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poller.applying import executing
from poller.applying.executing import Applier
from poller.applying.planning import servers_in_file
from poller.config import Settings, load_settings
from poller.endpoints import Endpoint
from poller.haproxy.rendering import load_template
from poller.haproxy.servers import ServerState

A, B = Endpoint("10.0.0.1", 3000), Endpoint("10.0.0.2", 3000)
MAINT, DRAIN = 0x01, 0x08


class RecordingRuntime:
    """HAProxy's runtime API as far as poller uses it, keeping a log of the commands."""

    def __init__(self, *servers: tuple[Endpoint, int]) -> None:
        self.state = {e.name: ServerState(e.name, e, 2, admin) for e, admin in servers}
        self.calls: list[str] = []
        self.busy: dict[str, int] = {}  # sessions per server
        self.stuck: dict[str, int] = {}  # deletions refused though idle (idle connections)
        self.late: dict[str, int] = {}  # sessions that reach a server once in maintenance
        self.idle: set[str] = set()  # idle connections kept (a server marked down by checks)

    async def servers(self, backend: str) -> list[ServerState]:
        return list(self.state.values())

    async def sessions(self, backend: str) -> dict[str, int]:
        self.calls.append("show stat")
        return dict(self.busy)

    async def add_ready_server(self, backend: str, name: str, endpoint: str, options: str) -> None:
        self.calls.append(f"add {name} ready")
        self.state[name] = ServerState(name, Endpoint.parse(endpoint), 2, 0)

    async def enable_health(self, backend: str, name: str) -> None:
        self.calls.append(f"enable health {name}")

    async def set_state(self, backend: str, name: str, state: str) -> None:
        self.calls.append(f"state {state} {name}")
        flags = {"ready": 0, "drain": DRAIN, "maint": MAINT}[state]
        if state == "maint" and name in self.late:
            self.busy[name] = self.late.pop(name)
        self.state[name] = ServerState(name, self.state[name].endpoint, 2, flags)

    async def shutdown_sessions(self, backend: str, name: str) -> None:
        self.calls.append(f"shutdown sessions {name}")
        self.busy.pop(name, None)

    async def close_idle_connections(self, backend: str, name: str, endpoint: Endpoint) -> None:
        self.calls.append(f"close idle {name} {endpoint}")
        self.idle.discard(name)

    async def del_server(self, backend: str, name: str) -> str:
        self.calls.append(f"del {name}")
        if name in self.idle:
            return "Server still has connections attached to it, cannot remove it."
        if self.busy.get(name) or self.stuck.get(name):
            if name in self.stuck:
                self.stuck[name] -= 1
            return "Server still has connections attached to it, cannot remove it."
        del self.state[name]
        return "Server deleted."


class RecordingMaster:
    def __init__(self) -> None:
        self.reloads = 0

    async def reload(self, deadline_seconds: float) -> None:
        self.reloads += 1


def applier(
    tmp_path: Path,
    runtime: RecordingRuntime,
    *live: Endpoint,
    drain_timeout: float = 5.0,
    master: RecordingMaster | None = None,
) -> Applier:
    settings: Settings = load_settings(
        None,
        environ={},
        overrides={
            "haproxy": {
                "binary": "true",
                "config_path": str(tmp_path / "haproxy.cfg"),
                "drain_timeout_seconds": drain_timeout,
            },
            "state": {"path": str(tmp_path / "state.json")},
        },
    )
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


@pytest.mark.parametrize("admin", [MAINT, DRAIN])
def test_a_server_put_aside_behind_our_back_is_put_back_at_runtime(
    tmp_path: Path, admin: int
) -> None:
    """The file is already right; only HAProxy disagrees: the runtime API, no reload."""
    runtime = RecordingRuntime((A, admin))
    made = applier(tmp_path, runtime, A)
    result = asyncio.run(made.apply({"nodes": [A]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    assert result.method == "runtime"
    assert runtime.calls == [f"enable health {A.name}", f"state ready {A.name}"]
    assert reloads(made) == 0


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HAProxy also refuses a server that streams came to after the drain (connects being
    retried, a queue); poller retries, then ends them and deletes: still no reload."""
    monkeypatch.setattr(executing, "STREAMS_GRACE_SECONDS", 0.05)
    monkeypatch.setattr(executing, "DEL_RETRY_POLL_SECONDS", 0.01)
    runtime = RecordingRuntime((A, 0), (B, 0))
    runtime.late = {A.name: 2}
    made = applier(tmp_path, runtime, A, B)
    result = asyncio.run(made.apply({"nodes": [B]}, {"nodes": list(runtime.state.values())}))
    assert result.ok, result.error
    calls = [c for i, c in enumerate(runtime.calls) if i == 0 or c != runtime.calls[i - 1]]
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
