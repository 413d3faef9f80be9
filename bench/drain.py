"""Benchmark how soon HAProxy stops sending requests to a node told to stop, two ways.

A real HAProxy, the poller and demo nodes on 127.0.0.0/8 (no root needed), wrk (1
thread, 8 connections, keep-alive) through HAProxy the whole time. One node is sent
SIGTERM; HAProxy's cumulative session counter of that server (`show stat`, stot) is
sampled every 10 ms, and the time from the signal to its last increase is how long
HAProxy kept sending it requests. Side by side in one run, alternating:

- `close` (the reference app's stop): the node shuts its listener at once, so HAProxy's
  next check is refused and `fall` checks (`fastinter` apart) take it DOWN;
- `404` (`http-check disable-on-404` in the template, the node started with
  `--fail-check-first 3`): the node answers 404 to its health check while it keeps
  serving, which HAProxy takes as NOLB (no new requests) at the first such answer.

    python -m bench.drain            # 10 rounds each; rewrites its docs/BENCHMARKS.md section
    python -m bench.drain --smoke    # 2 rounds each, prints only
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from bench.churn import percentile
from bench.common import machine_description, markdown_table, median, prepare, write_section
from bench.slowstart import totals
from poller.haproxy.rendering import BUILTIN_TEMPLATE
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.loopback import Lab
from tests.support.processes import ROOT

NODES = ["127.0.3.2", "127.0.3.3", "127.0.3.4"]
LEAVER = NODES[0]
WATCH_SECONDS = 2.5
SAMPLE = 0.01
CASES = ("close", "404")


def template(workdir: Path) -> Path:
    """The built-in template with `http-check disable-on-404` in each backend."""
    text = (ROOT / "poller" / "templates" / BUILTIN_TEMPLATE).read_text()
    marker = "    option httpchk\n"
    assert marker in text
    path = workdir / "disable-on-404.cfg.j2"
    path.write_text(text.replace(marker, marker + "    http-check disable-on-404\n"))
    return path


def one_round(workdir: Path, case: str) -> tuple[float, int, int]:
    """(seconds from SIGTERM to the last request HAProxy sent the node, requests, failed)."""
    workdir.mkdir(parents=True)
    haproxy = {"template": str(template(workdir))} if case == "404" else {}
    lab = Lab(workdir, settings={"haproxy": haproxy, "probe": {"path": "/healthz"}})
    try:
        lab.start_haproxy()
        for index, address in enumerate(NODES):
            extra = ("--fail-check-first", "3") if case == "404" and address == LEAVER else ()
            lab.start_node(address, f"n{index}", *extra)
        lab.start_poller()
        wait_for(lambda: lab.addresses() == set(NODES), 15, "three nodes served")
        url = f"http://127.0.0.1:{lab.frontend_port}/"
        wrk = lab.spawn("wrk", ["wrk", "-t1", "-c8", f"-d{WATCH_SECONDS + 3:.0f}s", url])
        wait_for(lambda: current_connections(lab.admin_socket) > 0, 10, "wrk to connect")
        wait_for(lambda: totals(lab).get(LEAVER, 0) > 100, 10, "requests on the leaver")
        signalled = time.monotonic()
        os.kill(lab.procs[f"node-{LEAVER}"].pid, signal.SIGTERM)
        last_count, last_change = totals(lab).get(LEAVER, 0), signalled
        while time.monotonic() - signalled < WATCH_SECONDS:
            count = totals(lab).get(LEAVER, last_count)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            time.sleep(SAMPLE)
        wrk.wait(WATCH_SECONDS + 30)
        requests, failed = wrk_failures(lab.log("wrk"))
        return last_change - signalled, requests, failed
    finally:
        lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", "wrk")
    rounds = 2 if args.smoke else args.rounds
    results: dict[str, list[tuple[float, int, int]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="poller-drain-") as tmp:
        for index in range(rounds):
            for case in CASES:  # alternating: noise hits both alike
                results[case].append(one_round(Path(tmp) / f"r{index}-{case}", case))
    rows = []
    for case, runs in results.items():
        times = [1000 * run[0] for run in runs]
        requests, failed = sum(run[1] for run in runs), sum(run[2] for run in runs)
        rows.append(
            [
                {"close": "listener closed (the reference app)", "404": "check answers 404"}[case],
                str(len(runs)),
                f"{median(times):.0f} / {percentile(times, 95):.0f} / {max(times):.0f}",
                f"{failed} of {requests:,}",
            ]
        )
    table = markdown_table(
        ["on SIGTERM", "n", "last request sent to it, ms after (p50 / p95 / max)", "failed"],
        rows,
    )
    print(table)
    if args.smoke:
        return
    write_section(
        "drain",
        "## Leaving a load balancer: a closed listener against a failing check\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.drain`. The loopback "
        "lab (HAProxy, poller, three demo nodes), wrk through HAProxy; one node gets "
        "SIGTERM and HAProxy's session counter of it is sampled every 10 ms: the time is "
        "from the signal to the last request HAProxy sent it. HAProxy's checks as shipped "
        "(`inter 500ms fastinter 100ms fall 2`). `404`: `http-check disable-on-404` in the "
        "template and the node answering 404 to `/healthz` for 3 s before it closes. "
        f"{rounds} rounds each, alternating.\n\n" + table,
    )


if __name__ == "__main__":
    main()
