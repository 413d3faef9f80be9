"""Benchmark the compose stack in the network-namespace lab (root).

1. /24: joins (a node starts answering -> HAProxy serves it) and leaves (graceful SIGTERM,
   and kill -9 with `retry-on`) under wrk load from a client namespace: latency
   p50/p95/max and failed requests per kind, on the runtime path and the reload path.
2. /16: the poller starts with a few live nodes among 65,534 addresses; time until HAProxy
   serves them all, found/missed, the discovery sweep's duration, the poller's CPU seconds
   and peak RSS over that time, and the kernel log's neighbour-table overflow lines.

    sudo python -m bench.lab            # rewrites the lab section of docs/BENCHMARKS.md
    sudo python -m bench.lab --smoke    # 2 events, runtime path, a /20, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from bench.churn import percentile
from bench.common import (
    ensure_packages,
    ensure_private_namespace,
    machine_description,
    markdown_table,
    process_usage,
    write_section,
)
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.netlab import NetLab, kernel_log_mark, overflow_lines


def churn(workdir: Path, events: int, path: str) -> list[list[str]]:
    """Joins, graceful stops and kill -9 under load, on the runtime or the reload path."""
    lab = NetLab(workdir / f"churn-{path}", prefix=f"plb{os.getpid() % 10000}")
    rows = []
    try:
        lab.start_haproxy()
        lab.start_poller(
            ("POLLER_HAPROXY__RETRY_ON", "true"),
            ("POLLER_HAPROXY__RUNTIME_API", "true" if path == "runtime" else "false"),
        )
        client = lab.host("client", lab.address(200))
        lab.start_node(11, "base1")
        lab.start_node(12, "base2")
        wait_for(lambda: lab.servers() == {lab.address(11), lab.address(12)}, 10, "base nodes")
        hosts = [20 + i for i in range(events)]
        kinds: dict[str, list[float]] = {"join": [], "graceful stop": [], "kill -9": []}
        failures: dict[str, tuple[int, int]] = {}
        for kind in kinds:
            out = workdir / f"wrk-{kind.replace(' ', '_')}.txt"
            load = lab.wrk(client, int(events * 3 + 4), out)
            wait_for(lambda: current_connections(lab.run_dir / "admin.sock") > 0, 10, "wrk")
            for host in hosts:
                address = lab.address(host)
                started = time.monotonic()
                if kind == "join":
                    lab.start_node(host, f"n{host}")
                    wait_for(lambda a=address: a in lab.servers(), 15, f"{address} to join")
                    kinds[kind].append(time.monotonic() - started)
                else:
                    sig = signal.SIGTERM if kind == "graceful stop" else signal.SIGKILL
                    os.kill(lab.procs[f"node-{address}"].pid, sig)
                    wait_for(lambda a=address: a not in lab.servers(), 15, f"{address} to leave")
                    kinds[kind].append(time.monotonic() - started)
                    lab.stop_node(address)
                    if kind == "graceful stop":
                        lab.start_node(host, f"n{host}")  # back, for the kill -9 round
                        wait_for(lambda a=address: a in lab.servers(), 15, f"{address} back")
                time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
            load.wait(events * 3 + 30)
            failures[kind] = wrk_failures(out.read_text())
        for kind, values in kinds.items():
            requests, failed = failures[kind]
            rows.append(
                [
                    path,
                    kind,
                    str(len(values)),
                    f"{statistics.median(values):.2f}",
                    f"{percentile(values, 95):.2f}",
                    f"{max(values):.2f}",
                    f"{requests:,}",
                    str(failed),
                ]
            )
    finally:
        lab.close()
    return rows


def wide(workdir: Path, network: str, hosts: tuple[int, ...]) -> list[str]:
    # The web service alone, as the /16 tests run it: both services' ports on a /16 are
    # twice discovery.max_targets.
    lab = NetLab(
        workdir / "wide",
        network=network,
        prefix=f"plw{os.getpid() % 10000}",
        single_service=True,
    )
    before = kernel_log_mark()
    try:
        lab.start_haproxy()
        expected = set()
        for index, host in enumerate(hosts):
            lab.start_node(host, f"wide{index}")
            expected.add(lab.address(host))
        started = time.monotonic()
        lab.start_poller()
        pid = lab.procs["poller"].pid
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: lab.servers() >= expected, 600, "every node of the subnet")
        elapsed = time.monotonic() - started
        found = len(lab.servers() & expected)
        cpu, _, rss = process_usage(pid)
        wait_for(
            lambda: lab.metric("poller_sweep_duration_seconds_count", 'kind="discovery"') >= 1,
            600,
            "a whole discovery sweep",
        )
        count = lab.metric("poller_sweep_duration_seconds_count", 'kind="discovery"')
        total = lab.metric("poller_sweep_duration_seconds_sum", 'kind="discovery"')
        targets = 2 ** (32 - int(network.split("/")[1])) - 2 - 2
    finally:
        lab.close()
    added = overflow_lines(since=before)
    return [
        network,
        f"{targets:,}",
        f"{found} / {len(hosts)}",
        f"{elapsed:.1f}",
        f"{total / count:.1f}",
        f"{cpu:.1f}",
        f"{rss:.0f}",
        str(added),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/lab.py needs root (network namespaces)")
    ensure_packages("haproxy", "wrk")
    ensure_private_namespace()
    events = 2 if args.smoke else args.events
    network, hosts = (
        ("10.78.0.0/20", (300, 4000))
        if args.smoke
        else ("10.78.0.0/16", (300, 21_000, 47_000, 65_000))
    )
    with tempfile.TemporaryDirectory(prefix="poller-lab-bench-") as tmp:
        paths = ("runtime",) if args.smoke else ("runtime", "reload")
        churn_rows = [row for path in paths for row in churn(Path(tmp), events, path)]
        wide_row = wide(Path(tmp), network, hosts)
    churn_table = markdown_table(
        ["path", "event", "count", "p50 s", "p95 s", "max s", "requests", "failed"], churn_rows
    )
    wide_table = markdown_table(
        [
            "subnet",
            "targets",
            "found",
            "all served after s",
            "sweep s",
            "poller CPU s",
            "peak RSS MiB",
            "overflow lines",
        ],
        [wide_row],
    )
    print(churn_table)
    print()
    print(wide_table)
    if args.smoke:
        return
    write_section(
        "lab",
        "## The compose stack in the namespace lab\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.lab`. "
        "config/poller.yaml as shipped (interval 1 s, rise interval 0.1 s, discovery 1 s, "
        "rise 2, fall 2), `retry-on` enabled; lab links resolve addresses with one 100 ms "
        "try. Join: node answering -> HAProxy serving it; stops: signal -> HAProxy no longer "
        "serving it (as `show servers state` lists it ready). Each kind under its own "
        "`wrk -t1 -c8` run from a client namespace; failed = non-2xx/3xx + socket errors. "
        "`reload` is the same run with `haproxy.runtime_api: false` (a reload per change; "
        "the shipped config keeps reloads `haproxy.min_reload_gap_seconds`, 5 s, apart, "
        "and with an event every 3 s each change waits for that gap); "
        "the original lab's restart-per-change is measured beside both paths on loopback "
        "(the churn section).\n\n"
        + churn_table
        + "\n\n/16 discovery: the poller starts with live nodes spread over the subnet; "
        "`sweep s` is the mean duration of the discovery sweeps (paced by the neighbour "
        "table), CPU and RSS are the poller process's over the run.\n\n" + wide_table,
    )


if __name__ == "__main__":
    main()
