"""Benchmark the status page and its endpoints with 500 and 2,000 members.

The daemon's real status server and views on loopback, serving a snapshot of 500, then
2,000 members (each with 30 probe latencies), 200 events and 20 HAProxy changes; each
endpoint is fetched repeatedly over real sockets. Target: every endpoint answers within
50 ms. Where Chromium and Playwright are installed (CI's), the page itself is timed in
the browser: one whole redraw of the members table (what each refresh does, every
second) and a search narrowing it to one member.

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
from pathlib import Path

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

SIZES = (500, 2000)
CHROMIUM = "/usr/bin/chromium"


def filled_snapshot(members_count: int) -> views.Snapshot:
    now, wall = time.monotonic(), time.time()
    history = History()
    members = []
    for i in range(members_count):
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


def serve(port: int, size: int, ready: threading.Event, stop: threading.Event) -> None:
    snapshot = filled_snapshot(size)

    async def main() -> None:
        routes = views.routes(lambda: snapshot, Metrics().registry)
        server = StatusServer(f"127.0.0.1:{port}", routes)
        await server.start()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await server.close()

    asyncio.run(main())


def browser_timings(port: int, rounds: int) -> tuple[str, str, str] | None:
    """(median ms of a whole redraw, median ms of a search to one member, rows drawn),
    timed inside Chromium; None where Chromium or Playwright is missing."""
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => lastPool !== null", timeout=30_000)
            timing = page.evaluate(
                """(rounds) => {
                  const search = document.getElementById("search");
                  const time = () => { const t = performance.now(); renderMembers(lastPool);
                                       document.body.offsetHeight; return performance.now() - t; };
                  const redraw = [], narrowed = [];
                  for (let i = 0; i < rounds; i++) {
                    search.value = ""; redraw.push(time());
                    search.value = "container-0007"; narrowed.push(time());
                  }
                  search.value = "";
                  renderMembers(lastPool);
                  const mid = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
                  return [mid(redraw), mid(narrowed),
                          document.querySelectorAll("#members tbody tr").length];
                }""",
                rounds,
            )
        finally:
            browser.close()
    return f"{timing[0]:.0f}", f"{timing[1]:.0f}", str(timing[2])


def measure(size: int, requests: int) -> tuple[list[list[str]], list[str] | None]:
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(port, size, ready, stop), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise SystemExit("bench: the status server did not start")
    rows = []
    try:
        for path in ("/", "/status.js", "/pool", "/events", "/metrics", "/healthz"):
            times, length = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                        length = len(r.read())
                except urllib.error.HTTPError as exc:  # /healthz is 503 here: no sweep ran
                    length = len(exc.read())
                times.append((time.perf_counter() - started) * 1000)
            rows.append(
                [
                    f"{size:,}",
                    path,
                    f"{length:,}",
                    f"{statistics.median(times):.1f}",
                    f"{percentile(times, 95):.1f}",
                    f"{max(times):.1f}",
                ]
            )
        browser = browser_timings(port, 5 if requests < 100 else 21)
    finally:
        stop.set()
        thread.join(5)
    return rows, None if browser is None else [f"{size:,}", *browser]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    ensure_private_namespace()
    requests = 20 if args.smoke else args.requests
    rows: list[list[str]] = []
    page_rows = []
    for size in SIZES:
        endpoint_rows, page_row = measure(size, requests)
        rows += endpoint_rows
        if page_row is not None:
            page_rows.append(page_row)
    table = markdown_table(["members", "endpoint", "bytes", "p50 ms", "p95 ms", "max ms"], rows)
    page_table = markdown_table(
        ["members", "whole table redraw ms (median)", "search to one member ms", "rows drawn"],
        page_rows,
    )
    print(table)
    print()
    print(page_table)
    if args.smoke:
        return
    write_section(
        "status",
        "## The status page with 500 and 2,000 members\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.status`. A real status "
        f"server on loopback, {' and '.join(f'{s:,}' for s in SIZES)} members with 30 probe "
        f"latencies each, 200 events, 20 HAProxy changes; {requests} sequential requests per "
        "endpoint, each a new connection. Target: under 50 ms.\n\n"
        + table
        + "\n\nThe page in Debian's Chromium (headless, Playwright): the members table "
        "redrawn whole, as each one-second refresh does (at most 500 rows are drawn; the "
        "line above the table says how many match), and a search narrowing it to one "
        "member; medians of 21.\n\n" + page_table,
    )


if __name__ == "__main__":
    main()
