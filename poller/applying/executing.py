"""Carrying out a plan against the running HAProxy and its config file, and saying what
happened: hitless when it can, validated always.

Every file installed passed `haproxy -c` first and is written atomically; HAProxy never
gets a file it rejected. The runtime path adds first (capacity first: `add server` with
the same options as the file, `enable health`, `state ready`, in one round trip), then
puts back servers a stopped poller left in maintenance, then removes (`state drain`, a
bounded wait until no sessions remain, `state maint`, `del server`, retried while
connections are attached: idle ones closed, late streams ended). The servers a change
touches are remembered (`journal.Hands`) while it runs, so any other server in
maintenance or drain is an operator's: left alone, and listed `disabled` in the file so
a reload keeps it aside (a drain is set again once the reload is done). A serving
server's address is never changed: names come from address and port. Afterwards `show servers
state` must agree, or a reload runs instead. A reload is seamless (master-worker),
confirmed from `show proc`; a failed one restores the last known good file, which only a
confirmed success updates.

A reload owed to HAProxy is journalled (a marker file beside the state file) before a
file that needs it is installed, so a poller killed in between finishes the job after a
restart. What happened is returned as a `Result`, partial successes included ("the file
is installed, the runtime API does not answer"); only bugs raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from poller import files
from poller.applying.journal import Hands, Journal, hands_path, journal_path
from poller.applying.planning import (
    Key,
    Live,
    Method,
    Plan,
    SetAside,
    Wanted,
    plan,
    reload_instead,
    server_options_in,
    servers_in_file,
    set_aside_by_hand,
)
from poller.config import HAProxySettings, Settings
from poller.endpoints import Endpoint, ordered
from poller.errors import HAProxyError, HAProxyUnavailable, InstallError, PollerError, ReloadFailed
from poller.haproxy import configs
from poller.haproxy.clients import MasterCLI, RuntimeAPI, haproxy_clients
from poller.haproxy.rendering import Template, context, render
from poller.haproxy.servers import ServerState

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# How long `del server` is retried while HAProxy says connections are attached, before
# a reload does the job instead (a partition can leave streams that take a while to go).
DEL_RETRY_SECONDS = 7.0
DEL_RETRY_POLL_SECONDS = 0.1
STREAMS_GRACE_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05


@dataclass
class Result:
    """What one apply did; `error` says what is still wrong (None: HAProxy and the file
    are in step with what was asked)."""

    method: Method
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    file_installed: bool = False
    error: str | None = None
    duration_seconds: float = 0.0
    reason: str = ""  # why a reload (or a file-only change) was needed, for the log

    @property
    def ok(self) -> bool:
        return self.error is None


async def _off_loop(write: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A write that fsyncs, in a thread: the loop keeps checking members meanwhile."""
    return await asyncio.to_thread(write, *args, **kwargs)


class Applier:
    def __init__(
        self,
        settings: Settings,
        template: Template,
        clock: Callable[[], float] = time.monotonic,
        clients: Callable[[HAProxySettings], tuple[RuntimeAPI, MasterCLI]] = haproxy_clients,
    ) -> None:
        """`clients`: makes the runtime API and master CLI clients from the haproxy
        settings (again after each SIGHUP); the seam tests use."""
        self.clock = clock
        self.clients = clients
        self.last_reload_at = float("-inf")
        # What the apply under way is doing, so a failure is counted under it: a reload
        # that fails after a runtime change fell back to it is a failed reload.
        self.attempt = Method.FILE
        self.configure(settings, template)

    def configure(self, settings: Settings, template: Template) -> None:
        self.settings = settings
        self.template = template
        self.runtime, self.master = self.clients(settings.haproxy)
        self.journal = Journal(journal_path(settings.state.path))
        self.hands = Hands(hands_path(settings.state.path))
        self.versions_compared = False  # again after a SIGHUP: the binary may be another

    @property
    def config_path(self) -> Path:
        return self.settings.haproxy.config_path

    @property
    def pending_reload(self) -> bool:
        return self.journal.pending

    @property
    def backends(self) -> list[str]:
        return [service.backend for service in self.settings.resolved_services]

    def render(
        self,
        servers: Mapping[str, Collection[Endpoint]] | Collection[Endpoint],
        aside: Mapping[Key, SetAside] | None = None,
    ) -> str:
        """The config file: `servers` per backend (or the first backend's), and the
        servers set aside by hand (wanted or not), listed `disabled`."""
        aside = aside or {}
        by_backend = servers if isinstance(servers, Mapping) else {self.backends[0]: servers}
        listed = {backend: set(endpoints) for backend, endpoints in by_backend.items()}
        for (backend, _), held in aside.items():
            listed.setdefault(backend, set()).add(held.endpoint)
        return render(self.template, context(self.settings, listed, disabled=list(aside)))

    def set_aside(self, live: Live | None) -> dict[Key, SetAside]:
        """The servers an operator put aside: from HAProxy's states when it answered, else
        as last seen."""
        if live is None:
            return dict(self.hands.aside)
        return set_aside_by_hand(live, self.hands.ours)

    async def live_servers(self) -> dict[str, list[ServerState]]:
        """What HAProxy serves, per backend poller owns."""
        live = {backend: await self.runtime.servers(backend) for backend in self.backends}
        if not self.versions_compared:
            await self._compare_versions()
        return live

    async def _compare_versions(self) -> None:
        """Warn once when the HAProxy that validates is not the major version that runs:
        `haproxy -c` of another version refuses newer keywords or accepts ones the
        running HAProxy refuses on a reload."""
        try:
            running = await self.runtime.version()
        except PollerError:
            return  # asked again with the next read
        self.versions_compared = True
        binary = self.settings.haproxy.binary
        validator = await configs.binary_version(binary)
        ran, checks = configs.major_minor(running), configs.major_minor(validator)
        if ran and checks and ran != checks:
            log.warning(
                "the HAProxy that runs is not the version poller validates with; build the "
                "image with --build-arg HAPROXY_IMAGE=<the image HAProxy runs>",
                extra={"fields": {"running": running, "validator": validator, "binary": binary}},
            )

    def live_file_servers(self) -> dict[str, list[Endpoint]]:
        """The servers the live config file lists, per backend (none when unreadable)."""
        try:
            found = servers_in_file(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            found = {}
        return {backend: found.get(backend, []) for backend in self.backends}

    async def apply(self, wanted: Wanted, live: Live | None) -> Result:
        """Make each backend serve exactly `wanted[backend]` (`live`: HAProxy's servers
        just read, None when it did not answer)."""
        started = self.clock()
        chosen = {backend: ordered(wanted.get(backend, ())) for backend in self.backends}
        # Until a plan is made, the work is the file's: rendering it, reading the live one.
        self.attempt = Method.FILE
        try:
            aside = self.set_aside(live)
            if live is not None:
                # A server HAProxy no longer lists is no change of ours under way.
                listed = {(b, s.name) for b, servers in live.items() for s in servers}
                await self._remember(self.hands.ours & listed, aside)
            rendered = self.render(chosen, aside)
            live_text = self._read_live()
            decided = plan(
                chosen,
                live,
                live_text,
                rendered,
                self._same_skeleton(live_text),
                self.journal.pending,
                self.settings.haproxy.runtime_api,
                aside,
            )
            self.attempt = decided.method
            result = await self._execute(decided, chosen, rendered, live or {}, aside)
        except PollerError as exc:
            result = Result(self.attempt, error=str(exc))
        result.duration_seconds = self.clock() - started
        return result

    async def _remember(self, ours: set[Key], aside: dict[Key, SetAside]) -> None:
        await _off_loop(self.hands.save, ours, aside)

    async def _execute(
        self,
        decided: Plan,
        wanted: Wanted,
        rendered: str,
        live: Live,
        aside: Mapping[Key, SetAside],
    ) -> Result:
        if decided.method is Method.NONE:
            if files.read_bytes(configs.last_good_path(self.config_path)) is None:
                await _off_loop(configs.remember_good, self.config_path, rendered)
            return Result(Method.NONE)
        if decided.method is Method.OFFLINE:
            if decided.install:
                await self._validate(rendered)
                # HAProxy is away: whatever starts it next loads the right pool.
                await _off_loop(configs.install, self.config_path, rendered)
            await _off_loop(self.journal.set, decided.pending_reload)
            return Result(
                Method.OFFLINE,
                file_installed=decided.install,
                error=f"{self.settings.haproxy.admin_socket}: HAProxy's runtime API does not "
                "answer; the config file is up to date and the change will be retried",
            )
        if decided.method in (Method.RUNTIME, Method.FILE):
            try:
                # HAProxy first, so a new node takes traffic a validation sooner; then the
                # file follows (validated), so any reload reproduces the pool. A poller
                # killed in between finds the file behind and converges at runtime.
                result = await self._runtime_change(decided, wanted, live, rendered, aside)
            except HAProxyUnavailable:
                raise
            except HAProxyError as exc:
                log.warning(
                    "runtime change failed; reloading instead",
                    extra={"fields": {"error": str(exc)}},
                )
                decided = reload_instead(str(exc))
                self.attempt = Method.RELOAD
            else:
                result.reason = decided.reason
                try:
                    if decided.install:
                        await self._validate(rendered)
                        await _off_loop(configs.install, self.config_path, rendered)
                        result.file_installed = True
                    await _off_loop(configs.remember_good, self.config_path, rendered)
                except PollerError as exc:
                    result.error = str(exc)  # HAProxy serves the pool; the file is behind
                return result
        await self._validate(rendered)
        result = await self._reload(wanted, rendered, live, aside)
        result.reason = decided.reason
        return result

    def _read_live(self) -> str | None:
        try:
            raw = files.read_bytes(self.config_path)
        except OSError as exc:
            raise InstallError(f"{self.config_path}: cannot read: {exc.strerror or exc}") from exc
        return raw.decode("utf-8", "replace") if raw is not None else None

    async def _validate(self, text: str) -> None:
        haproxy = self.settings.haproxy
        await configs.validate(haproxy.binary, text, self.config_path, haproxy.user_configs)

    async def _runtime_change(
        self,
        decided: Plan,
        wanted: Wanted,
        live: Live,
        rendered: str,
        aside: Mapping[Key, SetAside],
    ) -> Result:
        options = server_options_in(rendered)
        touched = {(b, e.name) for b, e in decided.add} | set(decided.enable) | set(decided.remove)
        # Remembered before the first command: a stop half-way leaves servers drained or
        # not yet ready that are poller's to finish, not an operator's to keep.
        await self._remember(self.hands.ours | touched, dict(aside))
        for backend, endpoint in decided.add:
            line = options.get((backend, endpoint.name))
            if line is None:
                raise HAProxyError(
                    f"the rendered config has no server line for {backend}/{endpoint.name}"
                )
            await self.runtime.add_ready_server(backend, endpoint.name, str(endpoint), line)
        for backend, name in decided.enable:
            await self.runtime.enable_health(backend, name)
            await self.runtime.set_state(backend, name, "ready")
        for backend in dict.fromkeys(backend for backend, _ in decided.remove):
            endpoints = {s.name: s.endpoint for s in live.get(backend, [])}
            leaving = {name: endpoints.get(name) for b, name in decided.remove if b == backend}
            await self._drain_and_delete(backend, leaving)
        after = await self.live_servers()
        for backend, servers in wanted.items():
            have = [s for s in after.get(backend, []) if (backend, s.name) not in aside]
            agreed = {(s.name, s.endpoint) for s in have if s.ready}
            expected = {(e.name, e) for e in servers if (backend, e.name) not in aside}
            if agreed != expected or len(have) != len(expected):
                raise HAProxyError(
                    f"HAProxy disagrees after the runtime change: {backend} has "
                    f"{sorted(str(e) for _, e in agreed)}, expected {[str(e) for e in servers]}"
                )
        await self._remember(self.hands.ours - touched, dict(aside))
        # Nothing done at runtime: only the file was behind (e.g. after a stop mid-apply).
        return Result(
            Method.RUNTIME if touched else Method.FILE,
            [self._label(b, e.name) for b, e in decided.add],
            [self._label(b, name) for b, name in decided.remove],
        )

    def _label(self, backend: str, name: str) -> str:
        """A server as logs name it: `backend/name` when there are several backends."""
        return f"{backend}/{name}" if len(self.backends) > 1 else name

    async def _drain_and_delete(self, backend: str, names: Mapping[str, Endpoint | None]) -> None:
        for name in names:
            await self.runtime.set_state(backend, name, "drain")
        deadline = self.clock() + self.settings.haproxy.drain_timeout_seconds
        while True:
            sessions = await self.runtime.sessions(backend)
            busy = [name for name in names if sessions.get(name, 0) > 0]
            if not busy or self.clock() >= deadline:
                if busy:
                    log.warning(
                        "drain timed out; ending the sessions still on the servers",
                        extra={"fields": {"servers": busy}},
                    )
                break
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        for name in names:
            await self.runtime.set_state(backend, name, "maint")
            if name in busy:
                # HAProxy refuses to delete a server with sessions; a server that stopped
                # answering (a partition) would hold them until `timeout server`.
                await self.runtime.shutdown_sessions(backend, name)
            await self._delete(backend, name, names[name])

    async def _delete(self, backend: str, name: str, endpoint: Endpoint | None) -> None:
        """`del server`, retried while HAProxy says connections are still attached.
        First suspect: idle keep-alive connections HAProxy keeps to a server its checks
        marked down (a crash, a partition): it is told to close them. Then, each second
        of refusals, streams that reached the server after its drain (connects being
        retried, a queue) are ended: the server is leaving, so are they. Bounded: then a
        reload does the job."""
        started = self.clock()
        ended = started
        while True:
            answer = await self.runtime.del_server(backend, name)
            if answer.startswith("Server deleted") or answer == "No such server.":
                return
            now = self.clock()
            if "connection" not in answer.lower() or now - started >= DEL_RETRY_SECONDS:
                raise HAProxyError(f"HAProxy refused to delete {backend}/{name}: {answer}")
            if endpoint is not None:
                await self.runtime.close_idle_connections(backend, name, endpoint)
                endpoint = None  # once: what follows is not idle connections
                continue
            if now - ended >= STREAMS_GRACE_SECONDS:
                if ended == started:
                    log.info(
                        "ending the sessions still on a leaving server",
                        extra={"fields": {"server": self._label(backend, name)}},
                    )
                ended = now
                await self.runtime.shutdown_sessions(backend, name)
            await self.runtime.wait_removable(backend, name, DEL_RETRY_POLL_SECONDS)

    async def _reload(
        self, wanted: Wanted, rendered: str, live: Live, aside: Mapping[Key, SetAside]
    ) -> Result:
        gap = self.last_reload_at + self.settings.haproxy.min_reload_gap_seconds - self.clock()
        if gap > 0:
            await asyncio.sleep(gap)
        await _off_loop(self.journal.set, True)
        await _off_loop(configs.install, self.config_path, rendered)
        self.last_reload_at = self.clock()
        try:
            await self.master.reload(self.settings.haproxy.reload_timeout_seconds)
        except ReloadFailed as exc:
            restored = await _off_loop(configs.restore_last_good, self.config_path)
            await _off_loop(self.journal.set, False)
            outcome = "restored the last known good config" if restored else "no last good config"
            raise ReloadFailed(f"{exc}; {outcome}") from exc
        await _off_loop(configs.remember_good, self.config_path, rendered)
        await _off_loop(self.journal.set, False)
        # Every server is the file's now: none is half-way through a change of ours.
        await self._remember(set(), dict(aside))
        await self._drain_again(aside)
        before = {(b, s.name) for b, servers in live.items() for s in servers}
        after = {(b, e.name) for b, servers in wanted.items() for e in servers}
        return Result(
            Method.RELOAD,
            sorted(self._label(*key) for key in after - before if key not in aside),
            sorted(self._label(*key) for key in before - after if key not in aside),
            True,
        )

    async def _drain_again(self, aside: Mapping[Key, SetAside]) -> None:
        """A server an operator drained comes back from a reload in maintenance (the
        file can only say `disabled`): drained again, as they left it. Best effort: an
        error is said, and the server stays in maintenance, the safer of the two."""
        for (backend, name), held in aside.items():
            if held.state != "drain":
                continue
            try:
                await self.runtime.set_state(backend, name, "drain")
            except PollerError as exc:
                log.warning(
                    "could not drain again a server set aside by hand; it stays in maintenance",
                    extra={"fields": {"server": self._label(backend, name), "error": str(exc)}},
                )

    def _same_skeleton(self, live_text: str | None) -> bool:
        """The live file came from this template and these settings (whatever its
        members), so HAProxy differs from the rendered file in servers only."""
        if live_text is None:
            return False
        # The file's servers as it lists them, those listed `disabled` included.
        disabled = [
            key
            for key, options in server_options_in(live_text).items()
            if "disabled" in options.split()
        ]
        variables = context(self.settings, servers_in_file(live_text), disabled=disabled)
        return render(self.template, variables) == live_text
