"""Carrying out a plan against the running HAProxy and its config file, and saying what
happened: hitless when it can, validated always.

Every file installed passed `haproxy -c` first and is written atomically; HAProxy never
gets a file it rejected. The runtime path adds first (capacity first: `add server` with
the same options as the file, `enable health`, `state ready`, in one round trip), then
puts back servers someone else put in maintenance, then removes (`state drain`, a
bounded wait until no sessions remain, `state maint`, `del server`, retried while
connections are attached). A server's address is never changed: names come from
address and port. Afterwards `show servers state` must agree, or a reload runs instead.
A reload is seamless (master-worker), confirmed from `show proc`; a failed one restores
the last known good file, which only a confirmed success updates.

A reload owed to HAProxy is journalled (a marker file beside the state file) before a
file that needs it is installed, so a poller killed in between finishes the job after a
restart. What happened is returned as a `Result`, partial successes included ("the file
is installed, the runtime API does not answer"); only bugs raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from poller import files
from poller.applying.planning import Plan, plan, reload_instead, servers_in_file
from poller.config import Settings
from poller.endpoints import Endpoint, ordered
from poller.errors import HAProxyError, HAProxyUnavailable, InstallError, PollerError, ReloadFailed
from poller.haproxy import configs
from poller.haproxy.master import Master
from poller.haproxy.runtime import Runtime
from poller.haproxy.servers import ServerState
from poller.rendering import Template, context, render, server_options

log = logging.getLogger(__name__)

DEL_RETRY_SECONDS = 2.0
DRAIN_POLL_SECONDS = 0.05


@dataclass
class Result:
    """What one apply did; `error` says what is still wrong (None: HAProxy and the file
    are in step with what was asked)."""

    method: str  # none | runtime | file | reload | offline
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    file_installed: bool = False
    error: str | None = None
    duration_seconds: float = 0.0
    reason: str = ""  # why a reload (or a file-only change) was needed, for the log

    @property
    def ok(self) -> bool:
        return self.error is None


class Journal:
    """The reload owed to HAProxy, remembered across restarts: a marker file exists while
    one is owed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def pending(self) -> bool:
        return self.path.exists()

    def set(self, pending: bool) -> None:
        if pending == self.pending:
            return
        if pending:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InstallError(f"{self.path.parent}: cannot create: {exc.strerror}") from exc
            files.write_atomic(self.path, b"a reload of HAProxy is owed\n", mode=0o600)
        else:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                raise InstallError(f"{self.path}: cannot remove: {exc.strerror}") from exc


def journal_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".reload-pending")


class Applier:
    def __init__(
        self,
        settings: Settings,
        template: Template,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.last_reload_at = float("-inf")
        self.configure(settings, template)

    def configure(self, settings: Settings, template: Template) -> None:
        self.settings = settings
        self.template = template
        h = settings.haproxy
        self.runtime = Runtime(h.admin_socket, h.socket_timeout_seconds)
        self.master = Master(h.master_socket, h.socket_timeout_seconds)
        self.journal = Journal(journal_path(settings.state.path))

    @property
    def config_path(self) -> Path:
        return self.settings.haproxy.config_path

    @property
    def pending_reload(self) -> bool:
        return self.journal.pending

    def render(self, servers: Collection[Endpoint]) -> str:
        return render(self.template, context(self.settings.haproxy, self.settings.probe, servers))

    async def live_servers(self) -> list[ServerState]:
        return await self.runtime.servers(self.settings.haproxy.backend)

    def live_file_servers(self) -> list[Endpoint]:
        """The servers the live config file lists (none when it cannot be read)."""
        try:
            return servers_in_file(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return []

    async def apply(self, wanted: Collection[Endpoint], live: list[ServerState] | None) -> Result:
        """Make HAProxy serve exactly `wanted` (`live`: HAProxy's servers just read, None
        when it did not answer)."""
        started = self.clock()
        chosen = ordered(wanted)
        try:
            rendered = self.render(chosen)
            live_text = self._read_live()
            decided = plan(
                chosen,
                live,
                live_text,
                rendered,
                self._same_skeleton(live_text),
                self.journal.pending,
                self.settings.haproxy.runtime_api,
            )
            result = await self._execute(decided, chosen, rendered, live or [])
        except PollerError as exc:
            result = Result("reload" if self.journal.pending else "runtime", error=str(exc))
        result.duration_seconds = self.clock() - started
        return result

    async def _execute(
        self, decided: Plan, wanted: list[Endpoint], rendered: str, live: list[ServerState]
    ) -> Result:
        if decided.method == "none":
            if files.read_bytes(configs.last_good_path(self.config_path)) is None:
                configs.remember_good(self.config_path, rendered)
            return Result("none")
        if decided.method == "offline":
            if decided.install:
                await self._validate(rendered)
                # HAProxy is away: whatever starts it next loads the right pool.
                configs.install(self.config_path, rendered)
            self.journal.set(decided.pending_reload)
            return Result(
                "offline",
                file_installed=decided.install,
                error=f"{self.settings.haproxy.admin_socket}: HAProxy's runtime API does not "
                "answer; the config file is up to date and the change will be retried",
            )
        if decided.method in ("runtime", "file"):
            try:
                # HAProxy first, so a new node takes traffic a validation sooner; then the
                # file follows (validated), so any reload reproduces the pool. A poller
                # killed in between finds the file behind and converges at runtime.
                result = await self._runtime_change(decided, wanted)
            except HAProxyUnavailable:
                raise
            except HAProxyError as exc:
                log.warning(
                    "runtime change failed; reloading instead",
                    extra={"fields": {"error": str(exc)}},
                )
                decided = reload_instead(str(exc))
            else:
                result.reason = decided.reason
                try:
                    if decided.install:
                        await self._validate(rendered)
                        configs.install(self.config_path, rendered)
                        result.file_installed = True
                    configs.remember_good(self.config_path, rendered)
                except PollerError as exc:
                    result.error = str(exc)  # HAProxy serves the pool; the file is behind
                return result
        await self._validate(rendered)
        result = await self._reload(wanted, rendered, live)
        result.reason = decided.reason
        return result

    def _read_live(self) -> str | None:
        try:
            raw = files.read_bytes(self.config_path)
        except OSError as exc:
            raise InstallError(f"{self.config_path}: cannot read: {exc.strerror or exc}") from exc
        return raw.decode("utf-8", "replace") if raw is not None else None

    async def _validate(self, text: str) -> None:
        await configs.validate(self.settings.haproxy.binary, text, self.config_path)

    async def _runtime_change(self, decided: Plan, wanted: list[Endpoint]) -> Result:
        backend = self.settings.haproxy.backend
        options = server_options(self.settings.haproxy)
        for endpoint in decided.add:
            await self.runtime.add_ready_server(backend, endpoint.name, str(endpoint), options)
        for name in decided.enable:
            await self.runtime.enable_health(backend, name)
            await self.runtime.set_state(backend, name, "ready")
        if decided.remove:
            await self._drain_and_delete(backend, list(decided.remove))
        after = await self.live_servers()
        agreed = {(s.name, s.endpoint) for s in after if s.ready}
        expected = {(e.name, e) for e in wanted}
        if agreed != expected or len(after) != len(wanted):
            raise HAProxyError(
                "HAProxy disagrees after the runtime change: has "
                f"{sorted(str(e) for _, e in agreed)}, expected {[str(e) for e in wanted]}"
            )
        touched = decided.add or decided.enable or decided.remove
        # Nothing done at runtime: only the file was behind (e.g. after a stop mid-apply).
        return Result(
            "runtime" if touched else "file",
            [e.name for e in decided.add],
            list(decided.remove),
        )

    async def _drain_and_delete(self, backend: str, names: list[str]) -> None:
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
            started = self.clock()
            ended = name in busy
            while True:
                answer = await self.runtime.del_server(backend, name)
                if answer.startswith("Server deleted") or answer == "No such server.":
                    break
                waited = self.clock() - started
                if "connection" not in answer.lower() or waited >= DEL_RETRY_SECONDS:
                    raise HAProxyError(f"HAProxy refused to delete {backend}/{name}: {answer}")
                if not ended and waited >= DEL_RETRY_SECONDS / 2:
                    # Streams that came after the drain (retried connects, a queue) and
                    # did not leave by themselves: the server is gone, so are they.
                    log.warning(
                        "drain timed out; ending the sessions still on the servers",
                        extra={"fields": {"servers": [name]}},
                    )
                    await self.runtime.shutdown_sessions(backend, name)
                    ended = True
                await asyncio.sleep(0.01)  # connections still attached: retry shortly

    async def _reload(
        self, wanted: list[Endpoint], rendered: str, live: list[ServerState]
    ) -> Result:
        gap = self.last_reload_at + self.settings.haproxy.min_reload_gap_seconds - self.clock()
        if gap > 0:
            await asyncio.sleep(gap)
        self.journal.set(True)
        configs.install(self.config_path, rendered)
        self.last_reload_at = self.clock()
        try:
            await self.master.reload(self.settings.haproxy.reload_timeout_seconds)
        except ReloadFailed as exc:
            restored = configs.restore_last_good(self.config_path)
            self.journal.set(False)
            outcome = "restored the last known good config" if restored else "no last good config"
            raise ReloadFailed(f"{exc}; {outcome}") from exc
        configs.remember_good(self.config_path, rendered)
        self.journal.set(False)
        before = {s.name for s in live}
        after = {e.name for e in wanted}
        return Result("reload", sorted(after - before), sorted(before - after), True)

    def _same_skeleton(self, live_text: str | None) -> bool:
        """The live file came from this template and these settings (whatever its
        members), so HAProxy differs from the rendered file in servers only."""
        return live_text is not None and self.render(servers_in_file(live_text)) == live_text
