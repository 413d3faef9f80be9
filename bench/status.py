"""Benchmark the status page and its endpoints with 500 members (issue 7).

A real `Daemon` status server on loopback, its pool filled with 500 members (each with 30
probe latencies), 200 events and 20 HAProxy changes; each endpoint is fetched repeatedly
over real sockets. Target: every endpoint answers within 50 ms.

    python bench/status.py            # 200 requests each; rewrites docs/BENCHMARKS.md
    python bench/status.py --smoke    # 20 requests each, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churn import percentile
from common import ensure_private_namespace, machine_description, markdown_table, write_section

from compose.loopback import free_port
from poller.config import load_settings
from poller.pools import Event, EventKind, LastProbe, Member, Pool, State
from poller.runner import Daemon
from poller.status import StatusServer

MEMBERS = 500


def filled_daemon(port: int) -> Daemon:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "discovery": {"subnets": ["127.0.8.0/23"]},
            "status": {"listen": f"127.0.0.1:{port}"},
        },
    )
    daemon = Daemon(settings, lambda: settings)
    now = time.monotonic()
    members = {}
    for i in range(MEMBERS):
        address = f"127.0.{8 + i // 254}.{1 + i % 254}"
        state = (State.UP, State.UP, State.UP, State.RISING, State.FALLING, State.DOWN)[i % 6]
        member = Member(
            address,
            3000,
            f"container-{i:04x}",
            state,
            2,
            0,
            now - i,
            LastProbe(now, "ok", 1.5, 200),
        )
        members[member.key] = member
        for j in range(30):
            daemon.history.probe(member.key, None if j % 11 == 0 else 1.0 + (i + j) % 7)
    daemon.pool = Pool(members)
    wall = time.time()
    daemon.history.member_events(
        [
            Event(EventKind.UP, f"127.0.8.{1 + i % 254}", 3000, now, f"container-{i:04x}")
            for i in range(200)
        ],
        wall,
    )
    for i in range(20):
        daemon.history.change(
            {
                "method": "runtime",
                "result": "ok",
                "added": [f"n_{i}"],
                "removed": [],
                "duration_seconds": 0.05,
                "at": wall,
            }
        )
    return daemon


def serve(daemon: Daemon, ready: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        server = StatusServer(daemon.settings.status.listen, daemon._routes())
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
    daemon = filled_daemon(port)
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(daemon, ready, stop), daemon=True)
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
        "## The status page with 500 members (issue 7)\n\n"
        f"Machine: {machine_description()}. Command: `python bench/status.py`. A real status "
        f"server on loopback, {MEMBERS} members with 30 probe latencies each, 200 events, "
        f"20 HAProxy changes; {requests} sequential requests per endpoint, each a new "
        "connection. Target: under 50 ms.\n\n" + table,
    )


if __name__ == "__main__":
    main()
