"""Benchmark one poller with many members: 100, 400, 1,000 and 2,000, side by side.

Each size is its own namespace lab (tests/support/netlab.py): HAProxy at .42 as compose
runs it, the poller sidecar at .2 with config/poller.yaml as shipped (the web service
alone), and the members as cheap as possible so that the cost measured is poller's: one
namespace holding the members' addresses and one small HAProxy answering on all of them
(`{"host": "<address>"}`, the demo app's identity field). Ten more addresses sit in a
namespace of their own whose server starts at the join, and ten members in another whose
server is killed at the removal (refused from then on, as a container whose process died).

Per size: the time from the poller's start until HAProxy serves every member; poller's
CPU share and RSS at rest, probes and TCP connections per member per second (over a
window after all are served); the join of 10 at once (server started -> HAProxy serving,
p50/p95) and the removal of 10 at once (server killed -> out of rotation, and -> deleted
from HAProxy by poller).

The kernel's neighbour table is one for the whole machine (every namespace's entries
count), 1,024 entries at most by default: a size that needs more (each address of the
subnet can hold an entry in poller's namespace and HAProxy's) raises
net.ipv4.neigh.default.gc_thresh1/2/3 in the root namespace for the run and puts the
previous values back after, also on failure; it never lowers them. Needs root.

    sudo python -m bench.members [--sizes 100,400,1000,2000] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    ensure_packages,
    exit_cleanly_on_sigterm,
    machine_description,
    markdown_table,
    process_usage,
    pyplot,
    save_figure,
    write_section,
)
from tests.support.labs import wait_for
from tests.support.netlab import NetLab, kernel_log_mark, overflow_lines, sh

SIZES = (100, 400, 1000, 2000)
# Beside them, in the same run, poller probing every member itself every interval
# (`pool.haproxy_checks: false`, what it did before): the ratio is the gain.
PROBED_SIZES = (100, 400, 1000)
SMOKE_SIZES = (400,)
BATCH = 10  # members joining, and members leaving, at once
# The window at rest is one verify interval (config/poller.yaml leaves the default): each
# member's own probe comes once in it, so the share measured is the steady one.
REST_SECONDS = 60.0
SMOKE_REST_SECONDS = 10.0
NEIGH = Path("/proc/sys/net/ipv4/neigh/default")
# What the rest of the machine may hold in the table beside the lab (its own hosts, other
# namespaces): kept free on top of the lab's entries.
NEIGH_HEADROOM = 64
PLOT = ROOT / "docs" / "members.png"

SERVER_CFG = """\
global
    maxconn 4000
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend members
    bind :3000
    http-request return status 200 content-type application/json lf-string '{{"host":"%[dst]"}}'
"""


def subnet_for(size: int) -> str:
    """The smallest subnet holding the members, the joiners, the gateway, poller and
    HAProxy, with room to spare (a user's network is rarely full)."""
    needed = size + BATCH + 8
    prefix = 32 - math.ceil(math.log2(needed + 2))
    return f"10.79.0.0/{prefix}"


def neighbour_entries(size: int) -> int:
    """Entries the lab may hold at once: every address of the subnet in poller's namespace
    (a sweep resolves them all) and each member in HAProxy's."""
    addresses = 2 ** (32 - int(subnet_for(size).split("/")[1]))
    return addresses + size + BATCH + NEIGH_HEADROOM


def read_thresholds() -> tuple[int, int, int] | None:
    """gc_thresh1/2/3, or None where they are not visible (a private network namespace)."""
    try:
        values = [int((NEIGH / f"gc_thresh{n}").read_text()) for n in (1, 2, 3)]
    except OSError:
        return None
    return values[0], values[1], values[2]


def write_thresholds(values: tuple[int, int, int]) -> None:
    # thresh3 first when raising, last when lowering: the kernel wants 1 <= 2 <= 3 kept.
    order = (3, 2, 1) if values[2] >= (read_thresholds() or (0, 0, 0))[2] else (1, 2, 3)
    for n in order:
        (NEIGH / f"gc_thresh{n}").write_text(f"{values[n - 1]}\n")


@contextlib.contextmanager
def neighbour_table(entries: int) -> Iterator[str]:
    """The table raised to hold `entries` for the duration (never lowered); the previous
    values put back after, also on failure. Yields what was done, for the report."""
    before = read_thresholds()
    if before is None:
        if entries <= 1024:
            yield "kernel default (not visible here), enough"
            return
        raise SystemExit(
            f"bench/members.py: {entries} neighbour entries are needed and "
            "net.ipv4.neigh.default.gc_thresh3 is not visible in this network namespace: "
            "run it from the host's namespace (sudo python -m bench.members)"
        )
    if before[2] >= entries:
        yield f"gc_thresh3 {before[2]} (enough, unchanged)"
        return
    raised = (before[0], max(before[1], entries * 3 // 4), entries)
    write_thresholds(raised)
    try:
        yield f"gc_thresh2/3 {before[1]}/{before[2]} -> {raised[1]}/{raised[2]}, restored after"
    finally:
        write_thresholds(before)


class MembersLab(NetLab):
    """A namespace lab whose members are addresses of a few namespaces, each namespace's
    addresses answered by one small HAProxy."""

    def place(self, name: str, addresses: Sequence[str]) -> str:
        ns = self.host(name, addresses[0])
        batch = "".join(f"addr add {a}/{self.prefixlen} dev eth0\n" for a in addresses[1:])
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True, timeout=120
        )
        return ns

    def serve(self, name: str, ns: str) -> None:
        config = self.workdir / f"{name}.cfg"
        config.write_text(SERVER_CFG)
        self.start(f"haproxy-{name}", ns, ["haproxy", "-db", "-f", str(config)])
        wait_for(
            lambda: ":3000 " in sh("ip", "netns", "exec", ns, "ss", "-Hltn").stdout,
            10,
            f"the {name} server to listen",
        )


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def watch(
    lab: MembersLab, addresses: Sequence[str], test: str, started: float, timeout: float
) -> list[float]:
    """Seconds from `started` until each address passes `test` ("serving", "out",
    "deleted"), from HAProxy's `show servers state` every 50 ms."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(addresses) and time.monotonic() < deadline:
        states = lab.haproxy.states()
        listed = {s.endpoint.address for s in states}
        serving = lab.haproxy.serving()
        now = time.monotonic() - started
        for address in addresses:
            if address in seen:
                continue
            if (
                (test == "serving" and address in serving)
                or (test == "out" and address not in serving)
                or (test == "deleted" and address not in listed)
            ):
                seen[address] = now
        time.sleep(0.05)
    if len(seen) < len(addresses):
        raise RuntimeError(f"{len(addresses) - len(seen)} of {len(addresses)} never {test}")
    return [seen[a] for a in addresses]


def probes_total(lab: MembersLab) -> float:
    text = lab.status("/metrics")
    return sum(float(m) for m in re.findall(r"^poller_probes_total\{[^}]*\} (\S+)$", text, re.M))


def one_size(workdir: Path, size: int, rest: float, probed: bool = False) -> dict[str, Any]:
    network = subnet_for(size)
    lab = MembersLab(
        workdir / f"m{size}", network=network, prefix=f"pm{os.getpid() % 1000}", single_service=True
    )
    hosts = [h for h in range(3, 2 ** (32 - lab.prefixlen) - 1) if h != 42]
    addresses = [lab.address(h) for h in hosts[: size + BATCH]]
    stay, leave, join = addresses[: size - BATCH], addresses[size - BATCH : size], addresses[size:]
    try:
        lab.start_haproxy()
        lab.serve("members", lab.place("members", stay))
        leavers_ns = lab.place("leavers", leave)
        lab.serve("leavers", leavers_ns)
        joiners_ns = lab.place("joiners", join)
        started = time.monotonic()
        lab.start_poller(*([("POLLER_POOL__HAPROXY_CHECKS", "false")] if probed else []))
        pid = lab.procs["poller"].pid
        all_served = max(watch(lab, stay + leave, "serving", started, 600))
        # At rest: nothing changes for a window; what poller spends is its steady cost.
        wait_for(
            lambda: lab.metric("poller_haproxy_behind_servers", 'service="default"') == 0,
            60,
            "HAProxy in step with the pool",
        )
        cpu0, _, _ = process_usage(pid)
        probes0, opens0 = probes_total(lab), lab.tcp_counter(lab.poller_ns, "ActiveOpens")
        window = time.monotonic()
        time.sleep(rest)  # the measurement window, not a synchronisation
        cpu1, rss, _ = process_usage(pid)
        elapsed = time.monotonic() - window
        probes1, opens1 = probes_total(lab), lab.tcp_counter(lab.poller_ns, "ActiveOpens")
        lab.serve("joiners", joiners_ns)
        joined = watch(lab, join, "serving", time.monotonic(), 60)
        killed = time.monotonic()
        lab.stop("haproxy-leavers", signal.SIGKILL)
        out = watch(lab, leave, "out", killed, 60)
        deleted = watch(lab, leave, "deleted", killed, 60)
        final = lab.haproxy.serving()
        missed = len(set(stay + join) - final) + len(set(leave) & final)
        _, _, peak = process_usage(pid)
    finally:
        lab.close()
    return {
        "members": size,
        "probed": probed,
        "subnet": int(network.split("/")[1]),
        "all_served": all_served,
        "cpu": 100.0 * (cpu1 - cpu0) / elapsed,
        "rss": rss,
        "peak": peak,
        "probes": (probes1 - probes0) / elapsed / size,
        "connections": (opens1 - opens0) / elapsed / size,
        "join50": statistics.median(joined),
        "join95": percentile(joined, 0.95),
        "out50": statistics.median(out),
        "out95": percentile(out, 0.95),
        "del50": statistics.median(deleted),
        "del95": percentile(deleted, 0.95),
        "missed": missed,
    }


def row(r: dict[str, Any]) -> list[str]:
    return [
        f"{int(r['members']):,}",
        "poller's own probes" if r["probed"] else "HAProxy's (default)",
        f"/{int(r['subnet'])}",
        f"{r['all_served']:.1f}",
        f"{r['cpu']:.1f}",
        f"{r['rss']:.0f}",
        f"{r['probes']:.2f}",
        f"{r['connections']:.2f}",
        f"{r['join50']:.2f} / {r['join95']:.2f}",
        f"{r['out50']:.2f} / {r['out95']:.2f}",
        f"{r['del50']:.2f} / {r['del95']:.2f}",
        str(int(r["missed"])),
        str(int(r["overflow"])),
    ]


HEADER = [
    "members",
    "member checks",
    "subnet",
    "all served after s",
    "CPU % of a core at rest",
    "RSS MiB",
    "probes / member / s",
    "connections / member / s",
    "join of 10 p50 / p95 s",
    "10 killed: out of rotation p50 / p95 s",
    "deleted p50 / p95 s",
    "missed",
    "overflow lines",
]


def ratios(results: Sequence[dict[str, Any]]) -> str:
    """CPU at rest of poller's own probes over HAProxy's checks, per size run both ways."""
    cpu = {(r["members"], r["probed"]): r["cpu"] for r in results}
    pairs = [
        f"{size:,}: {cpu[size, True] / cpu[size, False]:.1f}x"
        for size, probed in cpu
        if not probed and (size, True) in cpu
    ]
    return "CPU at rest, poller's own probes over HAProxy's checks: " + ", ".join(pairs) + "."


def plot(results: Sequence[dict[str, Any]]) -> None:
    plt = pyplot()
    figure, (cpu, latency) = plt.subplots(1, 2, figsize=(10, 4))
    for probed, label in ((False, "HAProxy's checks (default)"), (True, "poller's own probes")):
        runs = [r for r in results if r["probed"] is probed]
        sizes = [r["members"] for r in runs]
        cpu.plot(sizes, [r["cpu"] for r in runs], marker="o", label=f"CPU %: {label}")
        cpu.plot(
            sizes, [r["rss"] for r in runs], marker="s", linestyle=":", label=f"RSS MiB: {label}"
        )
    cpu.axhline(10, color="grey", linewidth=0.8)
    cpu.set_xlabel("members")
    cpu.set_title("poller at rest (CPU % of a core, RSS MiB)")
    cpu.legend(fontsize="small")
    runs = [r for r in results if not r["probed"]]
    sizes = [r["members"] for r in runs]
    for key, label in (("join95", "join p95"), ("out95", "out of rotation p95")):
        latency.plot(sizes, [r[key] for r in runs], marker="o", label=label)
    latency.set_xlabel("members")
    latency.set_ylabel("seconds")
    latency.set_title("10 at once (HAProxy's checks)")
    latency.legend()
    figure.tight_layout()
    save_figure(figure, PLOT)


def measure(sizes: Sequence[int], rest: float, probed: Sequence[int]) -> list[dict[str, Any]]:
    """Inside the private namespace: every size, one after the other (with poller's own
    probes too for the sizes in `probed`)."""
    exit_cleanly_on_sigterm()
    results = []
    runs = [(size, mode) for size in sizes for mode in (False, True) if not mode or size in probed]
    with tempfile.TemporaryDirectory(prefix="poller-members-bench-") as tmp:
        for size, mode in runs:
            before = kernel_log_mark()
            result = one_size(Path(tmp), size, rest, probed=mode)
            result["overflow"] = overflow_lines(since=before)
            results.append(result)
            print(markdown_table(HEADER, [row(result)]), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument(
        "--probed",
        default=",".join(map(str, PROBED_SIZES)),
        help="sizes also run with poller's own probes of every member (empty: none)",
    )
    parser.add_argument("--smoke", action="store_true", help="400 members, a short window")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = SMOKE_SIZES if args.smoke else tuple(int(s) for s in args.sizes.split(","))
    probed = () if args.smoke else tuple(int(s) for s in args.probed.split(",") if s)
    rest = SMOKE_REST_SECONDS if args.smoke else REST_SECONDS
    if os.geteuid() != 0:
        raise SystemExit("bench/members.py needs root (network namespaces, the neighbour table)")
    if args.inner:
        results = measure(sizes, rest, probed)
        print(json.dumps(results))
        return
    ensure_packages("haproxy")
    entries = max(neighbour_entries(s) for s in sizes)
    with neighbour_table(entries) as table:
        if read_thresholds() is None:  # already in a private namespace (the test suite)
            results = measure(sizes, rest, probed)
        else:
            inner = subprocess.run(
                [
                    str(ROOT / "scripts" / "in-private-netns"),
                    sys.executable,
                    "-m",
                    "bench.members",
                    "--inner",
                    "--sizes",
                    ",".join(map(str, sizes)),
                    "--probed",
                    ",".join(map(str, probed)),
                    *(["--smoke"] if args.smoke else []),
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                check=True,
            )
            results = json.loads(inner.stdout.strip().splitlines()[-1])
    table_md = markdown_table(HEADER, [row(r) for r in results])
    print(table_md)
    if args.smoke:
        return
    plot(results)
    write_section(
        "members",
        "## Thousands of members on one poller\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.members`. "
        "Each size is a namespace lab: HAProxy as compose runs it, the poller sidecar with "
        "config/poller.yaml as shipped (the web service alone: members checked every 1 s, "
        "candidates every 0.1 s, rise 2, fall 2, discovery every 1 s; HAProxy checks every "
        "500 ms), the members' addresses on one namespace answered by one small HAProxy "
        "(so the harness costs little), the subnet the smallest that holds them. Member "
        "checks: HAProxy's passed checks standing in for poller's probes, each member "
        "probed by poller itself once per `pool.verify_interval_seconds` (60 s; the "
        "default), or poller's own probe of every member every second "
        "(`pool.haproxy_checks: false`, what poller did before), side by side in one run. "
        "At rest: "
        f"a {REST_SECONDS:.0f} s window once HAProxy is in step; CPU is the poller "
        "process's (user + system), connections are TCP connects from its namespace. Join: "
        "10 members' server started -> HAProxy serving all 10; killed: 10 members' server "
        "killed (refused from then on) -> HAProxy no longer serving them, and -> poller "
        "deleted them. Missed: a member not served, or a killed one still served, at the "
        f"end. Neighbour table: {table}.\n\n"
        + table_md
        + "\n\n"
        + ratios(results)
        + "\n\n![poller at rest and 10 at once, by members](members.png)",
    )


if __name__ == "__main__":
    main()
