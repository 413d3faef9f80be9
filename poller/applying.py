"""Making the running HAProxy match a set of servers: hitless when it can, validated always.

Every change renders the whole config and validates it with `haproxy -c` before it is
installed (atomically); HAProxy never gets a file it rejected. Then:

- membership only (the template and settings are those HAProxy runs): the runtime API,
  no reload. Adds first (capacity first): `add server` with the same options as the file,
  `enable health`, `state ready`. Removals: `state drain`, wait (bounded) until no
  sessions remain, `state maint`, `del server` (retried while connections are attached).
  A server's address is never changed: names come from ip:port. Afterwards
  `show servers state` must agree, or the reload path runs.
- anything else: a seamless master-worker reload, confirmed from `show proc`; a failed
  reload restores the last known good file.

A reload is journalled (`pending_reload`) before the file is installed, so a poller killed
between install and reload finishes the job when it restarts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from poller import files
from poller.config import Settings
from poller.errors import HAProxyError, HAProxyUnavailable, ReloadFailed
from poller.haproxy import configs
from poller.haproxy.master import Master
from poller.haproxy.runtime import Runtime, ServerState
from poller.rendering import Server, Template, context, render, server_options, sort_servers

log = logging.getLogger(__name__)

DEL_RETRY_SECONDS = 2.0
_SERVER_LINE = re.compile(r"^\s*server\s+(n_\S+)\s+\[?([0-9A-Fa-f:.]+?)\]?:(\d+)\b", re.MULTILINE)


@dataclass
class Change:
    """What one apply did."""

    method: str  # "none", "runtime", "reload", "file" (only the file was behind)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0


def servers_in_file(text: str) -> list[Server]:
    """The servers of a config poller rendered (names are ours: `n_...`)."""
    return sort_servers(Server(m.group(2), int(m.group(3))) for m in _SERVER_LINE.finditer(text))


class Applier:
    def __init__(
        self,
        settings: Settings,
        template: Template,
        journal: Callable[[bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.last_reload_at = float("-inf")
        self.pending_reload = False
        self.configure(settings, template)

    def configure(self, settings: Settings, template: Template) -> None:
        self.settings = settings
        self.template = template
        h = settings.haproxy
        self.runtime = Runtime(h.admin_socket, h.socket_timeout_seconds)
        self.master = Master(h.master_socket, h.socket_timeout_seconds)

    @property
    def config_path(self) -> Path:
        return self.settings.haproxy.config_path

    def render(self, servers: Collection[Server]) -> str:
        return render(self.template, context(self.settings.haproxy, self.settings.probe, servers))

    async def live_servers(self) -> list[ServerState]:
        return await self.runtime.servers(self.settings.haproxy.backend)

    async def apply(self, servers: Collection[Server], live: list[ServerState] | None) -> Change:
        """Make HAProxy serve exactly `servers` (`live`: HAProxy's servers if just read,
        None when it did not answer). Raises HAProxyError (or a subclass, or InstallError)
        with the facts when it cannot; the live config stays as it was."""
        started = self.clock()
        wanted = sort_servers(servers)
        text = self.render(wanted)
        live_bytes = files.read_bytes(self.config_path)
        live_text = live_bytes.decode("utf-8", "replace") if live_bytes is not None else None
        if live is None:
            if text != live_text:
                await self._validate(text)
                # HAProxy is away: whatever starts it next loads the right pool.
                configs.install(self.config_path, text)
                # Only a template or settings change needs a reload once HAProxy is back;
                # membership differences are fixed at runtime (or by its restart).
                self._set_pending(self.pending_reload or not self._same_skeleton(live_text))
            raise HAProxyUnavailable(
                f"{self.settings.haproxy.admin_socket}: HAProxy's runtime API does not answer; "
                "the config file is up to date and the change will be retried"
            )
        change = await self._converge(wanted, text, live_text, live)
        change.duration_seconds = self.clock() - started
        return change

    async def _converge(
        self, wanted: list[Server], text: str, live_text: str | None, live: list[ServerState]
    ) -> Change:
        live_set = {Server(s.address, s.port) for s in live}
        in_step = live_set == set(wanted) and all(s.ready for s in live)
        if text == live_text and in_step and not self.pending_reload:
            if files.read_bytes(configs.last_good_path(self.config_path)) is None:
                configs.remember_good(self.config_path, text)
            return Change("none")
        membership_only = (
            self.settings.haproxy.runtime_api
            and not self.pending_reload
            and self._same_skeleton(live_text)
        )
        if membership_only:
            try:
                # HAProxy first, so a new node takes traffic a validation sooner; then the
                # file follows (validated), so any reload reproduces the pool. A poller
                # killed in between finds the file behind and converges at runtime.
                change = await self._runtime_change(wanted, live)
            except HAProxyUnavailable:
                raise
            except HAProxyError as exc:
                log.warning(
                    "runtime change failed; reloading instead",
                    extra={"fields": {"error": str(exc)}},
                )
            else:
                if text != live_text:
                    await self._validate(text)
                    configs.install(self.config_path, text)
                configs.remember_good(self.config_path, text)
                return change
        await self._validate(text)
        return await self._reload(wanted, text, live)

    async def _validate(self, text: str) -> None:
        await configs.validate(self.settings.haproxy.binary, text, self.config_path)

    async def _runtime_change(self, wanted: list[Server], live: list[ServerState]) -> Change:
        backend = self.settings.haproxy.backend
        options = server_options(self.settings.haproxy)
        current = {s.name: s for s in live}
        wanted_by_name = {s.name: s for s in wanted}
        added, removed, reenabled = [], [], []
        for name, server in wanted_by_name.items():
            state = current.get(name)
            if state is not None and (state.address, state.port) != (server.address, server.port):
                raise HAProxyError(f"{backend}/{name} has another address in HAProxy")
            if state is None:
                await self.runtime.add_ready_server(backend, name, server.endpoint, options)
                added.append(name)
            elif not state.ready:
                await self.runtime.enable_health(backend, name)
                await self.runtime.set_state(backend, name, "ready")
                reenabled.append(name)
        leaving = [name for name in current if name not in wanted_by_name]
        if leaving:
            await self._drain_and_delete(backend, leaving)
            removed = leaving
        after = await self.live_servers()
        agreed = {(s.name, s.address, s.port) for s in after if s.ready}
        expected = {(s.name, s.address, s.port) for s in wanted}
        if agreed != expected or len(after) != len(wanted):
            raise HAProxyError(
                f"HAProxy disagrees after the runtime change: has {sorted(agreed)}, "
                f"expected {sorted(expected)}"
            )
        touched = added or removed or reenabled
        # Nothing done at runtime: only the file was behind (e.g. after a stop mid-apply).
        return Change("runtime" if touched else "file", added, removed)

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
                        "drain timed out; removing servers with sessions",
                        extra={"fields": {"servers": busy}},
                    )
                break
            await asyncio.sleep(0.05)
        for name in names:
            await self.runtime.set_state(backend, name, "maint")
            deadline = self.clock() + DEL_RETRY_SECONDS
            while True:
                answer = await self.runtime.del_server(backend, name)
                if answer.startswith("Server deleted") or answer == "No such server.":
                    break
                if "connection" not in answer.lower() or self.clock() >= deadline:
                    raise HAProxyError(f"HAProxy refused to delete {backend}/{name}: {answer}")
                await asyncio.sleep(0.01)  # connections still attached: retry shortly

    async def _reload(self, wanted: list[Server], text: str, live: list[ServerState]) -> Change:
        gap = self.last_reload_at + self.settings.haproxy.min_reload_gap_seconds - self.clock()
        if gap > 0:
            await asyncio.sleep(gap)
        self._set_pending(True)
        configs.install(self.config_path, text)
        self.last_reload_at = self.clock()
        try:
            await self.master.reload(self.settings.haproxy.reload_timeout_seconds)
        except ReloadFailed as exc:
            restored = configs.restore_last_good(self.config_path)
            self._set_pending(False)
            outcome = "restored the last known good config" if restored else "no last good config"
            raise ReloadFailed(f"{exc}; {outcome}") from exc
        configs.remember_good(self.config_path, text)
        self._set_pending(False)
        before = {s.name for s in live}
        after = {s.name for s in wanted}
        return Change("reload", sorted(after - before), sorted(before - after))

    def _same_skeleton(self, live_text: str | None) -> bool:
        """The live file came from this template and these settings (whatever its
        members), so HAProxy differs from `text` in servers only."""
        return live_text is not None and self.render(servers_in_file(live_text)) == live_text

    def _set_pending(self, pending: bool) -> None:
        if pending != self.pending_reload:
            self.pending_reload = pending
            self.journal(pending)
