"""Benchmark joins on a /16 with and without hot sweeps (root, the namespace lab).

The Swarm settings' pace (config/poller-swarm.yaml): the whole /16 is swept every 30 s.
Side by side in one run: full sweeps only, every 30 s (as before hot sweeps), and hot
sweeps every second between them. Each time, 20 nodes join one after the other (2 s
apart) at the addresses Docker's IPAM hands out (in order after the ones in use) while
wrk sends requests through HAProxy from a client namespace; a join runs from the node
listening to HAProxy serving it. Then 30 s at rest: the poller's CPU share, and what it
sends (ARP frames and probes per second, from its namespace's counters).

    sudo python -m bench.hot            # 20 joins each; rewrites docs/BENCHMARKS.md
    sudo python -m bench.hot --smoke    # 3 joins, 10 s at rest, hot sweeps only, prints only
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.churn import percentile
from bench.common import (
    machine_description,
    markdown_table,
    prepare,
    process_usage,
    write_section,
)
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.netlab import NetLab, kernel_log_mark, overflow_lines, sh

NETWORK = "10.79.0.0/16"
FULL = 30.0
FIRST = 3  # .1 is the gateway, .2 the poller


def packets_sent(lab: NetLab) -> int:
    run = sh(
        "ip", "netns", "exec", lab.poller_ns, "cat", "/sys/class/net/eth0/statistics/tx_packets"
    )
    return int(run.stdout)


def measure(workdir: Path, interval: float, joins: int, rest: float) -> list[str]:
    """One case: join times, failed requests, and the cost at rest (the row's cells)."""
    lab = NetLab(workdir, network=NETWORK, prefix=f"ph{os.getpid() % 10000}", single_service=True)
    before = kernel_log_mark()
    try:
        lab.start_haproxy()
        for host in range(FIRST, FIRST + 3):
            lab.start_node(host, f"n{host}")
        env = [("POLLER_DISCOVERY__INTERVAL_SECONDS", str(interval))]
        if interval < FULL:
            env.append(("POLLER_DISCOVERY__FULL_INTERVAL_SECONDS", str(FULL)))
        lab.start_poller(*env)
        wait_for(lambda: len(lab.servers()) == 3, 60, "the first full sweep")
        client = lab.host("client", lab.address(60_000))
        out = workdir / "wrk.txt"
        load = lab.wrk(client, int(joins * 2 + FULL + 15), out)
        wait_for(lambda: current_connections(lab.run_dir / "admin.sock") > 0, 10, "wrk")
        times = []
        for host in range(FIRST + 3, FIRST + 3 + joins):
            lab.start_node(host, f"n{host}")
            started = time.monotonic()
            address = lab.address(host)
            wait_for(lambda a=address: a in lab.servers(), FULL + 15, f"{address} served")
            times.append(time.monotonic() - started)
            time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))  # the join cadence
        load.wait(joins * 2 + FULL + 60)
        requests, failed = wrk_failures(out.read_text())
        pid = lab.procs["poller"].pid
        cpu0, _, _ = process_usage(pid)
        sent0 = packets_sent(lab)
        probes0 = lab.metric("poller_probes_total")
        started = time.monotonic()
        time.sleep(rest)  # the measurement window itself
        elapsed = time.monotonic() - started
        cpu1, rss, _ = process_usage(pid)
        sent = (packets_sent(lab) - sent0) / elapsed
        probes = (lab.metric("poller_probes_total") - probes0) / elapsed
        hot_targets = lab.metric("poller_sweep_duration_seconds_count", 'kind="hot"')
    finally:
        lab.close()
    return [
        f"{statistics.median(times):.2f} / {percentile(times, 95):.2f} / {max(times):.2f}",
        f"{failed} of {requests:,}",
        f"{(cpu1 - cpu0) / elapsed * 100:.1f}",
        f"{rss:.0f}",
        f"{sent:,.0f}",
        f"{probes:,.0f}",
        "yes" if hot_targets else "no",
        str(overflow_lines(since=before)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", "wrk", root_for="network namespaces")
    joins = 3 if args.smoke else args.joins
    # A rest window of exactly one full-sweep interval holds one full sweep in each case:
    # the difference between the cases is the hot sweeps' own cost.
    rest = 10.0 if args.smoke else FULL
    cases = [("hot sweeps every 1 s, full every 30 s", 1.0)]
    if not args.smoke:
        cases.insert(0, ("full sweeps every 30 s only", FULL))
    with tempfile.TemporaryDirectory(prefix="poller-hot-") as tmp:
        rows = [
            [name, *measure(Path(tmp) / f"case{i}", interval, joins, rest)]
            for i, (name, interval) in enumerate(cases)
        ]
    table = markdown_table(
        [
            "discovery",
            "join p50 / p95 / max s",
            "failed requests",
            "CPU % at rest",
            "RSS MiB",
            "packets/s sent at rest",
            "targets/s at rest",
            "hot sweeps ran",
            "overflow lines",
        ],
        rows,
    )
    print(table)
    if args.smoke:
        return
    write_section(
        "hot",
        "## Joins on a /16: hot sweeps\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.hot`. The "
        f"namespace lab on {NETWORK}, the whole /16 swept every {FULL:g} s (the Swarm "
        "settings); side by side in one run, without and with hot sweeps every second. "
        f"{joins} nodes join 2 s apart at the next addresses Docker's IPAM would hand out, "
        "under wrk (1 thread, 8 connections) from a client namespace; a join runs from the "
        "node listening to HAProxy serving it. Then 30 s at rest (one full-sweep interval, so "
        "one full sweep in each case: the difference is the hot sweeps' own cost): the "
        "poller's CPU share, the packets its interface sent per second (ARP requests and "
        "TCP), and the targets it classified per second (`poller_probes_total`: most are "
        "addresses silent to ARP).\n\n" + table,
    )


if __name__ == "__main__":
    main()
