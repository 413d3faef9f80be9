"""Benchmark `poller scan` on loopback: a /24 and a /20, each with 10 live demo nodes.

Each run is the real command (`python -m poller scan --json`) as a child process: wall
time, CPU seconds (user+sys, the whole process, imports included) and peak RSS come from
wait4; the sweep's own duration from its JSON. Sizes alternate within each round so both
see the same machine noise. Runs inside a private network namespace (re-executes itself
in one), so all traffic stays on its own loopback.

    python -m bench.scan            # 5 rounds, rewrites the scan section of docs/BENCHMARKS.md
    python -m bench.scan --smoke    # tiny sizes, one round, prints only (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from bench.common import (
    WEBAPP,
    ensure_private_namespace,
    machine_description,
    markdown_table,
    median,
    run_child,
    write_section,
)


@dataclass(frozen=True)
class Size:
    label: str
    subnet: str
    live: tuple[str, ...]  # addresses of live nodes, spread over the subnet


def sizes(smoke: bool) -> list[Size]:
    if smoke:
        return [Size("/28", "127.61.0.0/28", ("127.61.0.3", "127.61.0.9"))]
    slash24 = tuple(f"127.60.0.{1 + 25 * i}" for i in range(10))
    slash20 = tuple(f"127.64.{(i * 6) % 16}.{10 + i * 20}" for i in range(10))
    return [Size("/24", "127.60.0.0/24", slash24), Size("/20", "127.64.0.0/20", slash20)]


def start_nodes(addresses: tuple[str, ...]) -> list[subprocess.Popen[str]]:
    procs = []
    for address in addresses:
        proc = subprocess.Popen(
            [sys.executable, str(WEBAPP), "--bind", address, "--port", "3000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        if "listening" not in proc.stdout.readline():
            raise SystemExit(f"bench: demo node {address} did not start")
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round, no docs")
    args = parser.parse_args()
    ensure_private_namespace()
    rounds = 1 if args.smoke else args.rounds
    plan = sizes(args.smoke)
    nodes = []
    try:
        for size in plan:
            nodes += start_nodes(size.live)
        samples: dict[str, list[tuple[float, float, float, float, int]]] = {
            s.label: [] for s in plan
        }
        for _ in range(rounds):
            for size in plan:
                run = run_child(
                    [
                        sys.executable,
                        "-m",
                        "poller",
                        "scan",
                        "--subnet",
                        size.subnet,
                        "--port",
                        "3000",
                        "--json",
                        "--log-level",
                        "warning",
                    ]
                )
                if run.returncode != 0:
                    raise SystemExit(f"bench: scan of {size.subnet} failed: {run.stderr}")
                report = json.loads(run.stdout)
                found = {r["address"] for r in report["results"] if r["healthy"]}
                missed = len(set(size.live) - found)
                samples[size.label].append(
                    (
                        run.wall_seconds,
                        report["duration_seconds"],
                        run.cpu_seconds,
                        run.max_rss_mib,
                        missed,
                    )
                )
    finally:
        for proc in nodes:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)

    header = ["subnet", "targets", "live", "wall s", "sweep s", "CPU s", "peak RSS MiB", "missed"]
    rows = []
    for size in plan:
        got = samples[size.label]
        targets = 2 ** (32 - int(size.subnet.rsplit("/", 1)[1])) - 2
        rows.append(
            [
                size.label,
                f"{targets:,}",
                str(len(size.live)),
                f"{median([g[0] for g in got]):.2f}",
                f"{median([g[1] for g in got]):.2f}",
                f"{median([g[2] for g in got]):.2f}",
                f"{median([g[3] for g in got]):.1f}",
                str(max(g[4] for g in got)),
            ]
        )
    table = markdown_table(header, rows)
    print(table)
    if args.smoke:
        return
    write_section(
        "scan",
        "## `poller scan` on loopback\n\n"
        f"Machine: {machine_description()}. Command: `make bench` (or "
        "`python -m bench.scan`), in a private network namespace. Medians of "
        f"{rounds} rounds, sizes alternating. wall/CPU/RSS are the whole `poller scan` "
        "process (interpreter start and imports included); sweep is the sweep alone. "
        "Loopback refuses closed ports at once, so this measures poller's own cost, not "
        "address resolution (see the lab benchmarks for that).\n\n" + table,
    )


if __name__ == "__main__":
    main()
