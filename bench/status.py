"""Benchmark the status page and its endpoints with 500 members.

The daemon's real status server and views on loopback, serving a snapshot of 500 members
(each with 30 probe latencies), 200 events and 20 HAProxy changes; each endpoint is
fetched repeatedly over real sockets. Target: every endpoint answers within 50 ms.

    python -m bench.status            # 200 requests each; rewrites docs/BENCHMARKS.md
    python -m bench.status --smoke    # 20 requests each, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import urllib.request

from bench.churn import percentile
from bench.common import (
    ensure_private_namespace,
    machine_description,
    markdown_table,
    write_section,
)
from poller.applying.planning import Method
from poller.endpoints import Endpoint
from poller.pool.pools import Event, EventKind, LastProbe, Member, State
from poller.results import Outcome
from poller.status import views
from poller.status.history import ChangeRecord, History
from poller.status.metrics import Metrics
from poller.status.server import StatusServer
from tests.support.labs import free_port

MEMBERS = 500


def filled_snapshot() -> views.Snapshot:
    now, wall = time.monotonic(), time.time()
    history = History()
    members = []
    for i in range(MEMBERS):
        endpoint = Endpoint(f"127.0.{8 + i // 254}.{1 + i % 254}", 3000)
        state = (State.UP, State.UP, State.UP, State.RISING, State.FALLING, State.DOWN)[i % 6]
        last = LastProbe(now, Outcome.OK, 1.5, 200)
        members.append(Member(endpoint, f"container-{i:04x}", state, 2, 0, now - i, last))
        for j in range(30):
            history.probe(("default", endpoint), None if j % 11 == 0 else 1.0 + (i + j) % 7)
    history.member_events(
        "default",
        [
            Event(EventKind.UP, Endpoint(f"127.0.8.{1 + i % 254}", 3000), now, f"container-{i:04x}")
            for i in range(200)
        ],
        wall,
    )
    for i in range(20):
        history.change(ChangeRecord(wall, Method.RUNTIME, True, (f"n_{i}",), (), 0.05))
    return views.Snapshot(
        mono=now,
        wall=wall,
        members=[("default", m) for m in members],
        latencies=history.latencies,
        discovery={
            "subnets": ["127.0.8.0/23"],
            "ports": [3000],
            "targets": 510,
            "method": "connect",
            "interval_seconds": 1.0,
            "last_sweep": None,
            "next_sweep_at": None,
        },
        live=frozenset(("default", m.endpoint) for m in members if m.serving),
        services=[{"name": "default", "backend": "nodes", "ports": [3000]}],
        changes=list(history.changes),
        events=list(history.events),
        stats_port=1936,
        started_mono=now,
    )


def serve(port: int, ready: threading.Event, stop: threading.Event) -> None:
    snapshot = filled_snapshot()

    async def main() -> None:
        routes = views.routes(lambda: snapshot, Metrics().registry)
        server = StatusServer(f"127.0.0.1:{port}", routes)
        await server.start()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await server.close()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    ensure_private_namespace()
    requests = 20 if args.smoke else args.requests
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(port, ready, stop), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise SystemExit("bench: the status server did not start")
    rows = []
    try:
        for path in ("/", "/status.js", "/pool", "/events", "/metrics", "/healthz"):
            times, size = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                        size = len(r.read())
                except urllib.error.HTTPError as exc:  # /healthz is 503 here: no sweep ran
                    size = len(exc.read())
                times.append((time.perf_counter() - started) * 1000)
            rows.append(
                [
                    path,
                    f"{size:,}",
                    f"{statistics.median(times):.1f}",
                    f"{percentile(times, 95):.1f}",
                    f"{max(times):.1f}",
                ]
            )
    finally:
        stop.set()
        thread.join(5)
    table = markdown_table(["endpoint", "bytes", "p50 ms", "p95 ms", "max ms"], rows)
    print(table)
    if args.smoke:
        return
    write_section(
        "status",
        "## The status page with 500 members\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.status`. A real status "
        f"server on loopback, {MEMBERS} members with 30 probe latencies each, 200 events, "
        f"20 HAProxy changes; {requests} sequential requests per endpoint, each a new "
        "connection. Target: under 50 ms.\n\n" + table,
    )


if __name__ == "__main__":
    main()
