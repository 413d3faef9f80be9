"""Benchmark `poller run` against a real HAProxy under wrk load, on loopback.

For each path (runtime API, and reload-per-change for comparison), with two base nodes
always up and wrk sending requests through HAProxy the whole time:

- joins: a node starts answering; latency until HAProxy serves it (in `show servers state`,
  running and ready);
- graceful leaves: SIGTERM; latency until HAProxy no longer serves it;
- deaths: kill -9; latency until HAProxy stops routing to it (its own check marks it DOWN,
  or poller removes it, whichever comes first).

Failed client requests (non-2xx/3xx plus socket errors, as wrk counts them) and HAProxy
reloads are counted per path. For contrast, `restart` is the original lab's way, without
poller: its HAProxy config (no redispatch, no retries, default checks) re-rendered and
HAProxy restarted with `-sf <old pid>` on every membership event, as its Serf handlers
did; the handler fires at the instant of the event (kinder than Serf, whose gossip and
failure detection take seconds). Runs in a private network namespace.

    python -m bench.churn            # 20 events of each kind per path; rewrites docs/BENCHMARKS.md
    python -m bench.churn --smoke    # 2 events, runtime path only, prints only
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

from bench.common import (
    ensure_packages,
    ensure_private_namespace,
    machine_description,
    markdown_table,
    write_section,
)
from tests.support.labs import current_connections, stop_process, wait_for, wrk_failures
from tests.support.loopback import Lab

BASE = ("127.0.5.2", "127.0.5.3")
SETTINGS = {
    "discovery": {"subnets": ["127.0.5.0/26"], "interval_seconds": 1.0},
    "probe": {"timeout_seconds": 0.3, "identity": {"json_field": "host"}},
    "pool": {"interval_seconds": 1.0, "rise_interval_seconds": 0.1, "rise": 2, "fall": 2},
    "haproxy": {"min_reload_gap_seconds": 0.0, "drain_timeout_seconds": 5.0},
}


# The original lab's HAProxy config (ORIGIN.md), for the restart-per-change contrast.
LAB_CONFIG = """global
    stats socket {admin} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s
frontend localnodes
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk HEAD /
    option forwardfor
    http-request set-header X-Forwarded-Port %[dst_port]
{servers}
"""


class RestartPerChange:
    """The push lab's handler: rewrite the whole config, restart HAProxy with -sf."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.members: set[str] = set()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.restarts = 0

    def apply(self, members: set[str]) -> None:
        self.members = set(members)
        servers = "\n".join(
            f"    server s{a.replace('.', '_')} {a}:3000 check" for a in sorted(self.members)
        )
        config = self.lab.workdir / "lab-haproxy.cfg"
        staged = config.with_suffix(".tmp")
        staged.write_text(
            LAB_CONFIG.format(
                admin=self.lab.admin_socket, port=self.lab.frontend_port, servers=servers
            )
        )
        staged.replace(config)
        argv = [shutil.which("haproxy") or "haproxy", "-db", "-f", str(config)]
        old = [p for p in self.procs if p.poll() is None]
        if old:
            argv += ["-sf", *(str(p.pid) for p in old)]
            self.restarts += 1
        log = (self.lab.workdir / "lab-haproxy.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        wait_for(lambda: self._answers_as(proc.pid), 10, "the restarted HAProxy")

    def _answers_as(self, pid: int) -> bool:
        try:
            return f"Pid: {pid}\n" in self.lab.admin("show info")
        except OSError:
            return False

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, signal.SIGKILL)


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


def run_path(name: str, events: int, slot: float, workdir: Path) -> dict[str, object]:
    runtime_api = name == "runtime"
    settings = {**SETTINGS, "haproxy": {**SETTINGS["haproxy"], "runtime_api": runtime_api}}
    lab = Lab(workdir / name, subnet="127.0.5.0/26", settings=settings)
    joins: list[float] = []
    leaves: list[float] = []
    deaths: list[float] = []
    push = RestartPerChange(lab) if name == "restart" else None

    def event(address: str, joined: bool) -> None:
        """What the push lab's Serf handler did on member-join / -leave / -failed."""
        if push is not None:
            push.apply(push.members | {address} if joined else push.members - {address})

    def reloads() -> int:
        return push.restarts if push is not None else lab.reloads()[0]

    try:
        for address in BASE:
            lab.start_node(address)
        if push is not None:
            push.apply(set(BASE))
        else:
            lab.start_haproxy()
            lab.start_poller()
        wait_for(lambda: all(serving(lab, a) for a in BASE), 20, "the base nodes")
        reloads_before = reloads()
        duration = int(events * 3 * slot + 15)
        wrk = start_wrk(f"http://127.0.0.1:{lab.frontend_port}/", duration, workdir / f"{name}.wrk")
        wait_for(lambda: current_connections(lab.admin_socket) > 0, 10, "wrk to connect")
        addresses = [f"127.0.5.{10 + i}" for i in range(events)]
        for address in addresses:  # joins
            started = time.monotonic()
            lab.start_node(address)  # returns once the node accepts connections
            answered = time.monotonic()
            event(address, joined=True)
            wait_for(lambda a=address: serving(lab, a), 15, f"{address} to join")
            joins.append(time.monotonic() - answered)
            time.sleep(max(0.0, slot - (time.monotonic() - started)))
        for address in addresses:  # graceful leaves
            started = time.monotonic()
            os.kill(lab.procs[f"node-{address}"].pid, signal.SIGTERM)
            event(address, joined=False)
            wait_for(lambda a=address: not serving(lab, a), 15, f"{address} to leave")
            leaves.append(time.monotonic() - started)
            lab.stop_node(address)  # reap it (it finishes its grace on its own)
            time.sleep(max(0.0, slot - (time.monotonic() - started)))
        churn_reloads = reloads() - reloads_before
        wrk.wait(duration + 30)
        report = (workdir / f"{name}.wrk").read_text()
        requests, failed = wrk_failures(report)
        if failed:
            print(f"[{name}] wrk reported failures:\n{report}", file=sys.stderr)
        # Deaths, separately: kill -9 costs errors without retry-on (measured apart).
        for address in addresses[: max(2, events // 2)]:
            lab.start_node(address)
            event(address, joined=True)
            wait_for(lambda a=address: serving(lab, a), 15, f"{address} to join")
            started = time.monotonic()
            lab.stop_node(address, signal.SIGKILL)
            event(address, joined=False)
            wait_for(lambda a=address: not serving(lab, a), 15, f"{address} to stop being routed")
            deaths.append(time.monotonic() - started)
    finally:
        lab.close()
        if push is not None:
            push.close()
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
    ensure_packages("haproxy", "wrk")
    ensure_private_namespace()
    events = 2 if args.smoke else args.events
    paths = ["runtime", "restart"] if args.smoke else ["runtime", "reload", "restart"]
    with tempfile.TemporaryDirectory(prefix="poller-bench-") as tmp:
        results = [run_path(name, events, 2.5, Path(tmp)) for name in paths]

    header = [
        "path",
        "events",
        "requests",
        "failed",
        "reloads",
        "join p50/p95/max s",
        "leave p50/p95/max s",
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
                f"{statistics.median(j):.2f} / {percentile(j, 95):.2f} / {max(j):.2f}",  # type: ignore[arg-type]
                f"{statistics.median(lv):.2f} / {percentile(lv, 95):.2f} / {max(lv):.2f}",  # type: ignore[arg-type]
                f"{statistics.median(d):.2f} / {percentile(d, 95):.2f} / {max(d):.2f}",  # type: ignore[arg-type]
            ]
        )
    table = markdown_table(header, rows)
    print(table)
    if args.smoke:
        return
    write_section(
        "churn",
        "## `poller run` under load: joins, leaves, deaths\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.churn` (in a private "
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
        "side in the same run. `restart` is the original lab's way, for contrast: no "
        "poller, its own HAProxy config (no redispatch, no retries, default checks every "
        "2 s) re-rendered and HAProxy restarted with `-sf <old pid>` on every join, leave "
        "and death, the handler firing at the instant of the event (kinder than Serf, "
        "whose gossip and failure detection add seconds); `reloads` counts its restarts."
        "\n\n" + table,
    )


if __name__ == "__main__":
    main()
