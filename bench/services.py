"""Benchmark discovery of two services in one sweep against one service (root, the
namespace lab).

On a /20 and a /16 bridge: 10 web nodes on port 3000 and 5 API nodes on port 3001, each
in a namespace of its own, plus a host that accepts and never answers. From one probe
namespace, alternating round by round: `poller scan` with one service (web, port 3000),
with the other alone (api, port 3001), and with both services (`services:`, one sweep of
both ports). Wall time and CPU seconds of the process (wait4), medians; nodes found. Two
services in one sweep must cost well under two sweeps (the two single-service runs).

    sudo python -m bench.services            # 5 rounds; rewrites its docs/BENCHMARKS.md section
    sudo python -m bench.services --smoke    # a /24, 1 round, prints only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    ChildRun,
    machine_description,
    markdown_table,
    median,
    prepare,
    run_child,
    write_section,
)
from bench.discovery import PROBE_HOST, DiscoveryLab, spread
from tests.support.netlab import kernel_log_mark, overflow_lines

NETWORKS = {"/24": "10.86.0.0/24", "/20": "10.87.0.0/20", "/16": "10.88.0.0/16"}
WEB, API = 10, 5
SERVICES = {
    "web": {"name": "web", "ports": [3000], "route": {"default": True}},
    "api": {"name": "api", "ports": [3001], "route": {"path_prefix": "/api"}},
}
CASES = {
    "1 service (web :3000)": ["web"],
    "1 service (api :3001)": ["api"],
    "2 services, one sweep (web :3000 + api :3001)": ["web", "api"],
}


def config(lab: DiscoveryLab, names: list[str], path: Path) -> Path:
    data: dict[str, Any] = {
        "discovery": {
            "subnets": [lab.network],
            "exclude": [lab.lab.gateway, lab.lab.address(PROBE_HOST)],
            "max_targets": 262144,  # a /16 times two ports
        },
        "probe": {"path": "/healthz", "timeout_seconds": 0.5},
        "services": [{**SERVICES[name], "route": {"default": True}} for name in names]
        if len(names) == 1
        else [SERVICES[name] for name in names],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def start_api_nodes(lab: DiscoveryLab) -> set[str]:
    """API nodes between the web nodes (the web nodes' hosts plus one)."""
    taken = set(spread(lab.network, WEB + 2))
    hosts = [h + 1 for h in spread(lab.network, API) if h + 1 not in taken and h + 1 != PROBE_HOST]
    for index, host in enumerate(hosts):
        lab.lab.start_node(host, f"api{index}", port=3001)
    return {lab.lab.address(h) for h in hosts}


def run(lab: DiscoveryLab, path: Path) -> tuple[ChildRun, dict[str, int], int]:
    before = kernel_log_mark()
    argv = [sys.executable, "-m", "poller", "scan", "--config", str(path), "--json"]
    done = run_child(["ip", "netns", "exec", lab.probe_ns, *argv], timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"poller scan failed ({done.returncode}): {done.stderr[-2000:]}")
    found: dict[str, int] = {}
    for result in json.loads(done.stdout)["results"]:
        if result["healthy"]:
            found[result["service"]] = found.get(result["service"], 0) + 1
    return done, found, overflow_lines(since=before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", root_for="network namespaces, raw sockets")
    rounds = 1 if args.smoke else args.rounds
    sizes = ("/24",) if args.smoke else ("/20", "/16")
    rows: list[list[str]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="poller-services-") as tmp:
        for size in sizes:
            lab = DiscoveryLab(Path(tmp) / size.strip("/"), NETWORKS[size], live=WEB)
            try:
                api = start_api_nodes(lab)
                expected = {"web": len(lab.live), "api": len(api)}
                paths = {
                    case: config(lab, names, Path(tmp) / f"{size.strip('/')}-{i}.yaml")
                    for i, (case, names) in enumerate(CASES.items())
                }
                runs: dict[str, list[ChildRun]] = {case: [] for case in CASES}
                overflow = 0
                for _ in range(rounds):
                    for case, names in CASES.items():
                        done, found, gained = run(lab, paths[case])
                        runs[case].append(done)
                        overflow += gained
                        wanted = {name: expected[name] for name in names}
                        if found != wanted:
                            problems.append(f"{size} {case}: found {found}, expected {wanted}")
            finally:
                lab.close()
            walls = {case: median([r.wall_seconds for r in rs]) for case, rs in runs.items()}
            cpus = {case: median([r.cpu_seconds for r in rs]) for case, rs in runs.items()}
            single = list(CASES)[:2]
            both = list(CASES)[2]
            for case in CASES:
                rows.append(
                    [
                        size,
                        case,
                        f"{walls[case]:.2f}",
                        f"{cpus[case]:.2f}",
                        ", ".join(f"{n} {expected[n]}" for n in CASES[case]),
                        "",
                    ]
                )
            two_sweeps_wall = sum(walls[c] for c in single)
            two_sweeps_cpu = sum(cpus[c] for c in single)
            rows[-1][5] = (
                f"{walls[both] / two_sweeps_wall:.2f} of two sweeps' wall, "
                f"{cpus[both] / two_sweeps_cpu:.2f} of their CPU"
            )
            print(f"{size}: {walls}", file=sys.stderr)
            if overflow:
                problems.append(f"{size}: {overflow} neighbour-table overflow lines")
    table = markdown_table(
        ["subnet", "poller scan", "wall s (median)", "CPU s (median)", "healthy found", "ratio"],
        rows,
    )
    print(table)
    if problems:
        raise SystemExit("; ".join(problems))
    if args.smoke:
        return
    write_section(
        "services",
        "## Several services from one sweep\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.services`. The "
        f"namespace lab: {WEB} web nodes on port 3000 and {API} API nodes on port 3001, each "
        "in its own namespace, a host that accepts and never answers, a probe namespace "
        "running `poller scan --json` (ARP pre-sweep, probe `/healthz`, timeout 0.5 s). "
        f"Medians of {rounds} rounds, the three configurations alternating. 'Two sweeps' is "
        "the two single-service runs added: what sweeping once per service would cost.\n\n"
        + table
        + "\n\nThe ARP pre-sweep asks each address once whatever the number of ports, so a "
        "second service costs a second connect only to the addresses that answered ARP; "
        "every node was found in every round, and the kernel log gained no "
        "neighbour-table overflow line.",
    )


if __name__ == "__main__":
    main()
