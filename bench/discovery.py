"""Benchmark discovery in the namespace lab: poller against nmap, and how cost grows (root).

1. Speed: on /24, /22, /20 and /16 bridges, each with 10 live web nodes, one host that
   accepts and never answers and one host with the port closed, the same probe namespace
   runs, alternating round by round: `poller scan` (ARP pre-sweep, the default where it
   can run), `poller scan --method connect`, `nmap -n -Pn -sT -p 3000 --open -T5`,
   `nmap ... -T4 --min-rate 5000 --max-retries 1` and `nmap -n -sn -PR`. Wall time
   (median), CPU seconds and peak RSS of the process (wait4), live nodes found / missed,
   and the kernel log's "neighbor table overflow" lines gained.
2. Cost growth: `poller scan` wall and CPU against the number of targets (256 to 65,536,
   10 live nodes) and against the number of live members (1 to 200 on a /24, served by
   one process holding every address), as a table and docs/discovery-cost.png.

    sudo python -m bench.discovery            # rewrites its sections of docs/BENCHMARKS.md
    sudo python -m bench.discovery --smoke    # /24 and /22, 1 round, prints only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import (
    ROOT,
    ChildRun,
    machine_description,
    markdown_table,
    median,
    prepare,
    pyplot,
    run_child,
    save_figure,
    write_section,
)
from tests.support.netlab import NetLab, kernel_log_mark, overflow_lines

ODDNODES = ROOT / "tests" / "support" / "oddnodes.py"
PLOT = ROOT / "docs" / "discovery-cost.png"
PROBE_HOST = 42
NETWORKS = {
    "/24": "10.81.0.0/24",
    "/22": "10.82.0.0/22",
    "/20": "10.83.0.0/20",
    "/18": "10.84.0.0/18",
    "/16": "10.85.0.0/16",
}
COMPARED = ("/24", "/22", "/20", "/16")  # nmap runs on these; /18 is poller-only (growth)
MEMBER_COUNTS = (1, 10, 50, 100, 200)


@dataclass(frozen=True)
class Tool:
    name: str
    argv: Callable[[str, Path], list[str]]  # (network, poller config) -> command
    found: Callable[[str], set[str]]  # stdout -> addresses it reports live on port 3000
    timeout: float = 900.0  # a run still going then is stopped, reported, not repeated


def _poller_found(out: str) -> set[str]:
    return {r["address"] for r in json.loads(out)["results"] if r["healthy"]}


def _nmap_open(out: str) -> set[str]:
    return set(re.findall(r"Host: (\S+) .*Ports: 3000/open/", out))


def _nmap_up(out: str) -> set[str]:
    return set(re.findall(r"Host: (\S+) .*Status: Up", out))


def _poller(method: str) -> Callable[[str, Path], list[str]]:
    def argv(network: str, config: Path) -> list[str]:
        return [sys.executable, "-m", "poller", "scan", "--config", str(config), "--json"] + (
            ["--method", method] if method != "auto" else []
        )

    return argv


def _nmap(*flags: str) -> Callable[[str, Path], list[str]]:
    return lambda network, _config: ["nmap", "-n", *flags, "-oG", "-", network]


TOOLS = (
    Tool("poller scan (ARP pre-sweep)", _poller("auto"), _poller_found),
    Tool("poller scan --method connect", _poller("connect"), _poller_found),
    Tool("nmap -sT -T5", _nmap("-Pn", "-sT", "-p", "3000", "--open", "-T5"), _nmap_open),
    Tool(
        "nmap -sT -T4 --min-rate 5000 --max-retries 1",
        _nmap(
            "-Pn", "-sT", "-p", "3000", "--open", "-T4", "--min-rate", "5000", "--max-retries", "1"
        ),
        _nmap_open,
    ),
    # Its host timeouts make a /16 take over 15 minutes: one bounded run is enough to say so.
    Tool("nmap -sn -PR (ARP ping, no port)", _nmap("-sn", "-PR"), _nmap_up, timeout=300.0),
)


@dataclass
class Measured:
    runs: list[ChildRun]
    found: list[int]
    overflow: int = 0
    stopped_at: float | None = None  # the run that hit the tool's timeout


def spread(network: str, count: int) -> list[int]:
    """`count` host numbers spread over the network, avoiding .1 (gateway) and the probe."""
    size = 2 ** (32 - int(network.split("/")[1]))
    candidates = [host for host in range(2, size - 1) if host != PROBE_HOST]
    return [candidates[i * len(candidates) // count] for i in range(count)]


class DiscoveryLab:
    """A bridge with live nodes, a silent host, a closed host and a probe namespace."""

    def __init__(self, workdir: Path, network: str, live: int, members_in_one: bool = False):
        self.lab = NetLab(workdir, network=network, prefix=f"pd{os.getpid() % 10000}")
        self.network = network
        hosts = spread(network, live + 2)
        self.live: set[str] = set()
        if members_in_one:
            self._members(hosts[:live])
        else:
            for index, host in enumerate(hosts[:live]):
                self.lab.start_node(host, f"live{index}")
                self.live.add(self.lab.address(host))
        silent = self.lab.address(hosts[live])
        ns = self.lab.host("silent", silent)
        self.lab.start(
            "silent",
            ns,
            [sys.executable, str(ODDNODES), f"silent@{silent}:3000"],
            ready=lambda: "ready" in self.lab.log("silent"),
        )
        self.lab.host("closed", self.lab.address(hosts[live + 1]))  # nothing listens
        self.probe_ns = self.lab.host("probe", self.lab.address(PROBE_HOST))
        self.config = workdir / "scan.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "discovery": {
                        "subnets": [network],
                        "exclude": [self.lab.gateway, self.lab.address(PROBE_HOST)],
                        "ports": [3000],
                    },
                    "probe": {"path": "/healthz", "timeout_seconds": 0.5},
                }
            )
        )

    def _members(self, hosts: Sequence[int]) -> None:
        """Many live members from one process: one namespace holding every address."""
        first, *others = [self.lab.address(h) for h in hosts]
        ns = self.lab.host("members", first)
        for address in others:
            self.lab.add_address(ns, address)
        self.lab.start(
            "members",
            ns,
            [sys.executable, str(ROOT / "compose" / "webapp" / "app.py"), "--port", "3000"],
            ready=lambda: "listening" in self.lab.log("members"),
        )
        self.live = {first, *others}

    def run(self, tool: Tool) -> tuple[ChildRun, int, int]:
        """One run of `tool`: (the run, live nodes found, overflow lines gained); a run
        stopped at the tool's timeout has returncode -9."""
        before = kernel_log_mark()
        argv = ["ip", "netns", "exec", self.probe_ns, *tool.argv(self.network, self.config)]
        run = run_child(argv, timeout=tool.timeout)
        if run.returncode == -9 and run.wall_seconds >= tool.timeout:
            return run, 0, overflow_lines(since=before)
        if run.returncode != 0:
            raise RuntimeError(f"{tool.name} failed ({run.returncode}): {run.stderr[-2000:]}")
        return run, len(tool.found(run.stdout) & self.live), overflow_lines(since=before)

    def close(self) -> None:
        self.lab.close()


def measure(lab: DiscoveryLab, tools: Sequence[Tool], rounds: int) -> dict[str, Measured]:
    """Every tool once per round, alternating, so noise hits them all alike."""
    results: dict[str, Measured] = defaultdict(lambda: Measured([], []))
    for _ in range(rounds):
        for tool in tools:
            entry = results[tool.name]
            if entry.stopped_at is not None:
                continue
            run, found, overflow = lab.run(tool)
            if run.returncode == -9:
                entry.stopped_at = run.wall_seconds
                entry.overflow += overflow
                continue
            entry.runs.append(run)
            entry.found.append(found)
            entry.overflow += overflow
    return results


def speed_rows(size: str, live: int, results: dict[str, Measured]) -> list[list[str]]:
    rows = []
    for name, entry in results.items():
        if entry.stopped_at is not None and not entry.runs:
            stopped = f"> {entry.stopped_at:.0f} (stopped)"
            rows.append([size, name, stopped, "-", "-", "-", "-", "-", str(entry.overflow)])
            continue
        walls = [run.wall_seconds for run in entry.runs]
        rows.append(
            [
                size,
                name,
                f"{median(walls):.2f}",
                f"{min(walls):.2f} - {max(walls):.2f}",
                f"{median([run.cpu_seconds for run in entry.runs]):.2f}",
                f"{max(run.max_rss_mib for run in entry.runs):.0f}",
                f"{min(entry.found)} / {live}",
                str(live - min(entry.found)),
                str(entry.overflow),
            ]
        )
    return rows


def plot(targets: list[tuple[int, float, float]], members: list[tuple[int, float, float]]) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for axis, points, label in (
        (left, targets, "targets (addresses x 1 port), 10 live nodes"),
        (right, members, "live members on a /24"),
    ):
        xs = [p[0] for p in points]
        axis.plot(xs, [p[1] for p in points], marker="o", label="wall s")
        axis.plot(xs, [p[2] for p in points], marker="s", label="CPU s")
        axis.set_xlabel(label)
        axis.set_ylabel("seconds (median)")
        axis.set_ylim(bottom=0)  # both axes from 0: the growth is read from the heights
        axis.grid(True, alpha=0.3)
        axis.legend()
    left.set_xscale("log", base=2)
    figure.suptitle("poller scan (ARP pre-sweep): cost against subnet size and members")
    figure.tight_layout()
    save_figure(figure, PLOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", "nmap", root_for="network namespaces, raw sockets")
    rounds = 1 if args.smoke else args.rounds
    sizes = ("/24", "/22") if args.smoke else tuple(NETWORKS)
    member_counts = (1, 10) if args.smoke else MEMBER_COUNTS
    speed: list[list[str]] = []
    by_targets: list[tuple[int, float, float]] = []
    by_members: list[tuple[int, float, float]] = []
    poller = TOOLS[0]
    missed: dict[int, int] = {}  # live members -> most missed in one round
    with tempfile.TemporaryDirectory(prefix="poller-discovery-") as tmp:
        for size in sizes:
            network = NETWORKS[size]
            lab = DiscoveryLab(Path(tmp) / size.strip("/"), network, live=10)
            try:
                tools = TOOLS if size in COMPARED else TOOLS[:1]
                results = measure(lab, tools, rounds)
            finally:
                lab.close()
            if size in COMPARED:
                speed += speed_rows(size, 10, results)
            runs = results[poller.name].runs
            by_targets.append(
                (
                    2 ** (32 - int(network.split("/")[1])),
                    median([r.wall_seconds for r in runs]),
                    median([r.cpu_seconds for r in runs]),
                )
            )
            for row in speed:  # progress on stderr: stdout carries only the final tables
                if row[0] == size:
                    print(f"{size} {row[1]}: {row[2]} s", file=sys.stderr)
        for count in member_counts:
            lab = DiscoveryLab(Path(tmp) / f"m{count}", NETWORKS["/24"], count, members_in_one=True)
            try:
                results = measure(lab, [poller], rounds)
            finally:
                lab.close()
            entry = results[poller.name]
            missed[count] = count - min(entry.found)  # reported, never hidden
            by_members.append(
                (
                    count,
                    median([r.wall_seconds for r in entry.runs]),
                    median([r.cpu_seconds for r in entry.runs]),
                )
            )
    speed_table = markdown_table(
        [
            "subnet",
            "tool",
            "wall s (median)",
            "wall min - max",
            "CPU s",
            "peak RSS MiB",
            "live found",
            "missed",
            "overflow lines",
        ],
        speed,
    )
    growth_table = markdown_table(
        ["targets", "wall s", "CPU s", "", "live members (/24)", "wall s", "CPU s", "missed"],
        [
            [
                f"{t[0]:,}" if t else "",
                f"{t[1]:.2f}" if t else "",
                f"{t[2]:.2f}" if t else "",
                "",
                str(m[0]) if m else "",
                f"{m[1]:.2f}" if m else "",
                f"{m[2]:.2f}" if m else "",
                str(missed[m[0]]) if m else "",
            ]
            for t, m in itertools.zip_longest(by_targets, by_members)
        ],
    )
    print(speed_table)
    print()
    print(growth_table)
    if args.smoke:
        return
    plot(by_targets, by_members)
    write_section(
        "discovery",
        "## Discovery against nmap, in the namespace lab\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.discovery` "
        f"({rounds} round{'s' if rounds != 1 else ''}, tools alternating within each round). "
        "Each bridge holds 10 live "
        "web nodes spread over the subnet, one host that accepts and never answers, one "
        "host with port 3000 closed, the gateway, and the probe namespace every tool runs "
        "in (same namespace, same moment). Links resolve addresses with one 100 ms try "
        "(the lab's setting; kernel defaults take 3 s, which only slows the connect-based "
        "tools). Wall, CPU (user+sys) and peak RSS are the tool process's, from wait4; "
        "`live found` is the worst round; `overflow lines` are the kernel log's "
        '"neighbor table overflow" lines gained over all rounds. poller\'s numbers '
        "include starting Python (~0.3 s). `nmap -sn -PR` finds hosts, not web nodes (it "
        "also reports the silent and closed hosts); it is the floor for an ARP sweep.\n\n"
        + speed_table,
    )
    write_section(
        "growth",
        "## How discovery cost grows\n\n"
        "`poller scan` with the ARP pre-sweep, same run as above: against the number of "
        "targets (10 live nodes each), and against the number of live members on a /24 "
        "(one process in one namespace holding every member's address). Medians.\n\n"
        + growth_table
        + "\n\n![discovery cost](discovery-cost.png)",
    )


if __name__ == "__main__":
    main()
