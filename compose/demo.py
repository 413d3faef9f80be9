"""The local demo lab: demo web nodes on 127.42.0.0/24 come and go; poller sees them.

Run with `make demo`. Everything runs on loopback as the current user; every process it
starts is stopped by PID on exit (Ctrl-C, an error, or the end of the script's timeline).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEBAPP = ROOT / "compose" / "webapp" / "app.py"
SUBNET = "127.42.0.0/24"
PORT = 3000
# (seconds from start, action, last octet): the nodes' comings and goings.
TIMELINE = [
    (0, "start", 11),
    (0, "start", 22),
    (6, "start", 33),
    (12, "start", 44),
    (18, "stop", 22),
    (24, "kill", 33),
    (30, "start", 22),
]


class Lab:
    def __init__(self) -> None:
        self.nodes: dict[int, subprocess.Popen[str]] = {}

    def start(self, octet: int) -> None:
        address = f"127.42.0.{octet}"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(WEBAPP),
                "--bind",
                address,
                "--port",
                str(PORT),
                "--host",
                f"node-{octet}",
                "--tag",
                "demo",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening" not in line:
            proc.wait(5)
            error = proc.stderr.read().strip().splitlines()[-1:] if proc.stderr else []
            raise SystemExit(
                f"demo: node {address}:{PORT} could not start ({' '.join(error) or 'no output'}); "
                f"is the port taken? Free {address}:{PORT} and retry."
            )
        self.nodes[octet] = proc

    def stop(self, octet: int, sig: int = signal.SIGTERM) -> None:
        proc = self.nodes.pop(octet, None)
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for octet in list(self.nodes):
            self.stop(octet)


def scan() -> list[str]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "poller",
            "scan",
            "--subnet",
            SUBNET,
            "--port",
            str(PORT),
            "--json",
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    if run.returncode != 0:
        raise SystemExit(f"demo: poller scan failed: {run.stderr.strip()}")
    report = json.loads(run.stdout)
    return [f"{r['address']}:{r['port']}" for r in report["results"] if r["healthy"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the demo runs")
    args = parser.parse_args()
    lab = Lab()
    started = time.monotonic()
    pending = list(TIMELINE)
    print(f"demo: sweeping {SUBNET} port {PORT} every 2 s; Ctrl-C stops everything", flush=True)
    try:
        while time.monotonic() - started < args.seconds:
            elapsed = time.monotonic() - started
            while pending and pending[0][0] <= elapsed:
                _, action, octet = pending.pop(0)
                print(f"[{elapsed:5.1f}s] {action} node 127.42.0.{octet}", flush=True)
                if action == "start":
                    lab.start(octet)
                else:
                    lab.stop(octet, signal.SIGKILL if action == "kill" else signal.SIGTERM)
            healthy = scan()
            print(
                f"[{time.monotonic() - started:5.1f}s] healthy: {', '.join(healthy) or '(none)'}",
                flush=True,
            )
            time.sleep(2.0)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
    finally:
        lab.stop_all()
    print("demo: all demo processes stopped", flush=True)


if __name__ == "__main__":
    main()
