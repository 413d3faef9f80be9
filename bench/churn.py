"""Benchmark `poller run` against a real HAProxy under wrk load, on loopback.

For each path (runtime API, and reload-per-change for comparison), with two base nodes
always up and wrk sending requests through HAProxy the whole time:

- joins: a node starts answering; latency until HAProxy serves it (in `show servers state`,
  running and ready);
- graceful leaves: SIGTERM; latency until HAProxy no longer serves it;
- deaths: kill -9; latency until HAProxy stops routing to it (its own check marks it DOWN,
  or poller removes it, whichever comes first).

Failed client requests (non-2xx/3xx plus socket errors, as wrk counts them) and HAProxy
reloads are counted per path. Runs in a private network namespace.

    python bench/churn.py            # 20 events of each kind per path; rewrites docs/BENCHMARKS.md
    python bench/churn.py --smoke    # 2 events, runtime path only, prints only
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import ensure_private_namespace, machine_description, markdown_table, write_section

from compose.loopback import Lab, current_connections, wait_for, wrk_failures

BASE = ("127.0.5.2", "127.0.5.3")
SETTINGS = {
    "discovery": {"subnets": ["127.0.5.0/26"], "interval_seconds": 1.0},
    "probe": {"timeout_seconds": 0.3, "identity": {"json_field": "host"}},
    "pool": {"interval_seconds": 1.0, "rise_interval_seconds": 0.1, "rise": 2, "fall": 2},
    "haproxy": {"min_reload_gap_seconds": 0.0, "drain_timeout_seconds": 5.0},
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def serving(lab: Lab, address: str) -> bool:
    """HAProxy would send traffic there: listed, running (op 2), admin ready (0)."""
    for line in lab.admin("show servers state nodes").splitlines():
        fields = line.split()
        if len(fields) > 18 and fields[0].isdigit() and fields[4] == address:
            return fields[5] == "2" and fields[6] == "0"
    return False


def start_wrk(url: str, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    handle = out.open("wb")
    return subprocess.Popen(
        [binary, "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s", url],
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def run_path(
    name: str, runtime_api: bool, events: int, slot: float, workdir: Path
) -> dict[str, object]:
    settings = {**SETTINGS, "haproxy": {**SETTINGS["haproxy"], "runtime_api": runtime_api}}
    lab = Lab(workdir / name, subnet="127.0.5.0/26", settings=settings)
    joins: list[float] = []
    leaves: list[float] = []
    deaths: list[float] = []
    try:
        lab.start_haproxy()
        for address in BASE:
            lab.start_node(address)
        lab.start_poller()
        wait_for(lambda: all(serving(lab, a) for a in BASE), 20, "the base nodes")
        reloads_before = lab.reloads()[0]
        duration = int(events * 3 * slot + 15)
        wrk = start_wrk(f"http://127.0.0.1:{lab.frontend_port}/", duration, workdir / f"{name}.wrk")
        wait_for(lambda: current_connections(lab.admin_socket) > 0, 10, "wrk to connect")
        addresses = [f"127.0.5.{10 + i}" for i in range(events)]
        for address in addresses:  # joins
            started = time.monotonic()
            lab.start_node(address)  # returns once the node accepts connections
            answered = time.monotonic()
            wait_for(lambda a=address: serving(lab, a), 15, f"{address} to join")
            joins.append(time.monotonic() - answered)
            time.sleep(max(0.0, slot - (time.monotonic() - started)))
        for address in addresses:  # graceful leaves
            started = time.monotonic()
            os.kill(lab.procs[f"node-{address}"].pid, signal.SIGTERM)
            wait_for(lambda a=address: not serving(lab, a), 15, f"{address} to leave")
            leaves.append(time.monotonic() - started)
            lab.stop_node(address)  # reap it (it finishes its grace on its own)
            time.sleep(max(0.0, slot - (time.monotonic() - started)))
        churn_reloads = lab.reloads()[0] - reloads_before
        wrk.wait(duration + 30)
        report = (workdir / f"{name}.wrk").read_text()
        requests, failed = wrk_failures(report)
        if failed:
            print(f"[{name}] wrk reported failures:\n{report}", file=sys.stderr)
        # Deaths, separately: kill -9 costs errors without retry-on (measured apart).
        for address in addresses[: max(2, events // 2)]:
            lab.start_node(address)
            wait_for(lambda a=address: serving(lab, a), 15, f"{address} to join")
            started = time.monotonic()
            lab.stop_node(address, signal.SIGKILL)
            wait_for(lambda a=address: not serving(lab, a), 15, f"{address} to stop being routed")
            deaths.append(time.monotonic() - started)
    finally:
        lab.close()
    return {
        "path": name,
        "joins": joins,
        "leaves": leaves,
        "deaths": deaths,
        "requests": requests,
        "failed": failed,
        "reloads": churn_reloads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    ensure_private_namespace()
    events = 2 if args.smoke else args.events
    paths = [("runtime", True)] if args.smoke else [("runtime", True), ("reload", False)]
    with tempfile.TemporaryDirectory(prefix="poller-bench-") as tmp:
        results = [run_path(name, api, events, 2.5, Path(tmp)) for name, api in paths]

    header = [
        "path",
        "events",
        "requests",
        "failed",
        "reloads",
        "join p50/p95 s",
        "leave p50/p95 s",
        "death p50/p95/max s",
    ]
    rows = []
    for r in results:
        j, lv, d = r["joins"], r["leaves"], r["deaths"]
        rows.append(
            [
                str(r["path"]),
                f"{len(j)}+{len(lv)}",
                f"{r['requests']:,}",
                str(r["failed"]),
                str(r["reloads"]),
                f"{statistics.median(j):.2f} / {percentile(j, 95):.2f}",  # type: ignore[arg-type]
                f"{statistics.median(lv):.2f} / {percentile(lv, 95):.2f}",  # type: ignore[arg-type]
                f"{statistics.median(d):.2f} / {percentile(d, 95):.2f} / {max(d):.2f}",  # type: ignore[arg-type]
            ]
        )
    table = markdown_table(header, rows)
    print(table)
    if args.smoke:
        return
    write_section(
        "churn",
        "## `poller run` under load: joins, leaves, deaths (issue 3)\n\n"
        f"Machine: {machine_description()}. Command: `python bench/churn.py` (in a private "
        "network namespace, loopback). HAProxy 2.6 master-worker, checks `inter 500ms fall 2`; "
        "poller interval 1 s, rise interval 0.1 s, discovery 1 s, rise 2, fall 2, "
        "probe timeout 0.3 s. Two base "
        f"nodes always up; {events} nodes join one by one, then leave (SIGTERM) one by one, "
        "every 2.5 s, while `wrk -t2 -c16` sends requests through HAProxy. `failed` is "
        "wrk's non-2xx/3xx responses plus socket errors during the joins and leaves. Join: "
        "from the node accepting connections to HAProxy serving it; leave: from SIGTERM to "
        "HAProxy no longer serving it; death: from kill -9 to HAProxy no longer routing to it "
        "(its own check or poller, whichever first; measured after wrk ended). `reload` is "
        "the same churn with `haproxy.runtime_api: false` (a reload per change), side by "
        "side in the same run.\n\n" + table,
    )


if __name__ == "__main__":
    main()
