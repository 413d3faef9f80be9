"""Restoring the pool when `poller run` starts, so a restart neither flaps members nor
touches HAProxy: the staged copies a killed writer left are removed, the saved pool is
loaded, and with no saved pool (a first start, a lost or corrupt state file) the servers
HAProxy serves (or its config file lists) are adopted, so poller never starts by
stripping HAProxy while the first sweeps run.
"""

from __future__ import annotations

import logging
import time

from poller import files
from poller.applying.executing import Applier
from poller.config import Settings
from poller.errors import PollerError, StateError
from poller.pool import decisions, statefile
from poller.pool.pools import Pool

log = logging.getLogger("poller")


async def restore(settings: Settings, applier: Applier) -> dict[str, Pool]:
    """Each service's pool to start from (service name -> pool)."""
    # This sidecar is the only writer of these files: what is staged is a killed write.
    for path in (settings.haproxy.config_path, settings.state.path):
        removed = files.remove_stale(path)
        if removed:
            log.info("removed staged copies left by a stop", extra={"fields": {"files": removed}})
    services = settings.resolved_services
    names = [service.name for service in services]
    try:
        saved = statefile.load(settings.state.path, time.monotonic(), time.time(), names)
    except StateError as exc:
        log.error("state file ignored", extra={"fields": {"error": str(exc)}})
        saved = None
    if saved is not None and saved.pending_reload:
        applier.journal.set(True)  # owed by a poller from before the reload journal
    if saved is not None and any(pool.members for pool in saved.pools.values()):
        pools = {name: saved.pools.get(name, Pool()) for name in names}
        fields = {
            "members": sum(len(p.members) for p in pools.values()),
            "serving": sum(len(p.serving()) for p in pools.values()),
        }
        log.info("state restored", extra={"fields": fields})
        return pools
    try:
        live = await applier.live_servers()
        servers = {b: [s.endpoint for s in states_] for b, states_ in live.items()}
        source = "runtime"
    except PollerError:
        servers, source = applier.live_file_servers(), "config file"
    adopted = {
        s.name: decisions.adopted(servers.get(s.backend, []), settings.pool.rise, time.monotonic())
        for s in services
    }
    count = sum(len(p.members) for p in adopted.values())
    if count:
        log.info(
            "adopted HAProxy's servers", extra={"fields": {"members": count, "source": source}}
        )
    return adopted
