"""Benchmark the poller daemon's footprint at steady state in the namespace lab (root).

The compose stack as shipped (config/poller.yaml: every member probed each second, the
subnet swept each second) on a /24 with 5 members, and a /16 with 20 members at the
Swarm config's discovery pace (config/poller-swarm.yaml: a sweep every 30 s). Once HAProxy
serves every member, the poller's CPU time is read from /proc over a fixed window: the
share of one core it used, its resident memory at the end, and its peak; and the TCP
connections over the window: those the poller made per member per second (its
namespace's ActiveOpens: in steady state it connects to nothing but its members) and
those each member accepted per second (PassiveOpens: HAProxy's own checks included).

    sudo python -m bench.footprint            # 60 s windows; rewrites docs/BENCHMARKS.md
    sudo python -m bench.footprint --smoke    # the /24 only, a 5 s window, prints only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    machine_description,
    markdown_table,
    prepare,
    process_usage,
    write_section,
)
from tests.support.labs import wait_for
from tests.support.netlab import NetLab, kernel_log_mark, overflow_lines

CASES = (
    # name, network, member hosts, discovery interval (s)
    ("/24, 5 members, sweep every 1 s", "10.87.0.0/24", (11, 22, 33, 44, 55), 1.0),
    (
        "/16, 20 members, sweep every 30 s",
        "10.88.0.0/16",
        tuple(300 + i * 3_200 for i in range(20)),
        30.0,
    ),
)


def measure(
    workdir: Path, name: str, network: str, hosts: tuple[int, ...], interval: float, window: float
) -> list[str]:
    lab = NetLab(workdir, network=network, prefix=f"pf{os.getpid() % 10000}", single_service=True)
    before = kernel_log_mark()
    try:
        lab.start_haproxy()
        expected = set()
        members = []
        for index, host in enumerate(hosts):
            members.append(lab.start_node(host, f"m{index}"))
            expected.add(lab.address(host))
        lab.start_poller(("POLLER_DISCOVERY__INTERVAL_SECONDS", str(interval)))
        wait_for(lambda: lab.servers() == expected, 120, "every member served")
        pid = lab.procs["poller"].pid
        made = lab.tcp_counter(lab.poller_ns, "ActiveOpens")
        accepted = [lab.tcp_counter(ns, "PassiveOpens") for ns in members]
        cpu_start, _, _ = process_usage(pid)
        started = time.monotonic()
        time.sleep(window)  # the measurement window itself, not a synchronisation
        cpu_end, rss, peak = process_usage(pid)
        elapsed = time.monotonic() - started
        made = lab.tcp_counter(lab.poller_ns, "ActiveOpens") - made
        accepted = [
            lab.tcp_counter(ns, "PassiveOpens") - a for ns, a in zip(members, accepted, strict=True)
        ]
        sweeps = lab.metric("poller_sweep_duration_seconds_count", 'kind="discovery"')
        sweep_sum = lab.metric("poller_sweep_duration_seconds_sum", 'kind="discovery"')
    finally:
        lab.close()
    return [
        name,
        f"{elapsed:.0f}",
        f"{(cpu_end - cpu_start) / elapsed * 100:.1f}",
        f"{rss:.0f}",
        f"{peak:.0f}",
        f"{sweep_sum / sweeps:.2f}" if sweeps else "-",
        f"{made / len(hosts) / elapsed:.2f}",
        f"{max(accepted) / elapsed:.2f}",
        str(overflow_lines(since=before)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", root_for="network namespaces")
    window = 5.0 if args.smoke else args.window
    cases = CASES[:1] if args.smoke else CASES
    with tempfile.TemporaryDirectory(prefix="poller-footprint-") as tmp:
        rows = [
            measure(Path(tmp) / str(index), name, network, hosts, interval, window)
            for index, (name, network, hosts, interval) in enumerate(cases)
        ]
    table = markdown_table(
        [
            "case",
            "window s",
            "CPU % of one core",
            "RSS MiB",
            "peak RSS MiB",
            "mean sweep s",
            "poller conns/s per member",
            "conns/s accepted per member (max)",
            "overflow lines",
        ],
        rows,
    )
    print(table)
    if args.smoke:
        return
    write_section(
        "footprint",
        "## The daemon's footprint at steady state\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.footprint`. "
        "The namespace lab with config/poller.yaml (members probed every second, rise "
        "interval 0.1 s); the /16 case sweeps every 30 s, as config/poller-swarm.yaml does. "
        "Measured from /proc over the window once HAProxy served every member; `mean "
        "sweep s` is the mean discovery sweep since the start (ARP pre-sweep + HTTP). "
        "Connections: the poller namespace's ActiveOpens per member per second (the goal: at "
        "most 1 at the shipped defaults), and the most any member accepted per second, "
        "HAProxy's own checks (2 per second at `inter 500ms`) included.\n\n" + table,
    )


if __name__ == "__main__":
    main()
