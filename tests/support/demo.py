"""The local demo lab: HAProxy, the poller sidecar and demo web nodes on 127.0.0.0/8.

Nodes come and go on a timer (start, graceful stop, kill -9, a node answering 500, a new
node reusing an address); the demo prints the pool each time it changes and what HAProxy
serves. Run with `make demo`; Ctrl-C stops everything and removes its work directory.
No root needed: everything is a local process on loopback, started with the same command
lines as the compose services.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.support.loopback import Lab

SUBNET = "127.42.0.0/24"
# (seconds from start, action, last octet, host name)
TIMELINE = [
    (0, "start", 11, "s1"),
    (0, "start", 22, "s2"),
    (6, "start", 33, "s3"),
    (10, "start", 44, "s4"),
    (16, "stop", 22, "s2"),
    (22, "kill", 33, "s3"),
    (28, "start-500", 55, "broken"),
    (34, "start", 22, "s2-again"),
    (42, "stop", 55, "broken"),
]


def describe(pool: dict[str, object] | None) -> str:
    if not pool:
        return "(status not answering)"
    members = pool.get("members", [])
    assert isinstance(members, list)
    shown = [f"{m['address']}:{m['port']} {m['state']} ({m['identity'] or '-'})" for m in members]
    return "; ".join(shown) or "(empty: HAProxy answers 503)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the demo runs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="poller-demo-"))
    lab = Lab(
        workdir,
        subnet=SUBNET,
        settings={
            "probe": {"identity": {"json_field": "host"}},
            "discovery": {"interval_seconds": 1.0},
            "pool": {"interval_seconds": 1.0, "rise_interval_seconds": 0.1},
        },
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        lab.start_haproxy()
        lab.start_poller()
        print(
            f"demo: HAProxy at http://127.0.0.1:{lab.frontend_port}/  "
            f"stats http://127.0.0.1:{lab.stats_port}/  "
            f"poller http://127.0.0.1:{lab.status_port}/pool",
            flush=True,
        )
        print(f"demo: sweeping {SUBNET} port 3000; Ctrl-C stops everything", flush=True)
        started = time.monotonic()
        pending = list(TIMELINE)
        last = ""
        while not stop and time.monotonic() - started < args.seconds:
            elapsed = time.monotonic() - started
            while pending and pending[0][0] <= elapsed:
                _, action, octet, host = pending.pop(0)
                address = f"127.42.0.{octet}"
                print(f"[{elapsed:5.1f}s] {action} {address} ({host})", flush=True)
                if action == "start":
                    lab.start_node(address, host)
                elif action == "start-500":
                    lab.start_node(address, host, "--status", "500")
                else:
                    lab.stop_node(address, signal.SIGKILL if action == "kill" else signal.SIGTERM)
            now = describe(lab.status("/pool"))
            if now != last:
                status, body = lab.get()
                answer = f"{status} from {body.get('host')}" if body else str(status)
                print(f"[{time.monotonic() - started:5.1f}s] pool: {now}", flush=True)
                print(
                    f"         HAProxy serves {sorted(lab.addresses())}; a request got {answer}",
                    flush=True,
                )
                last = now
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        print("\ndemo: stopping everything", flush=True)
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
        print("demo: all demo processes stopped", flush=True)


if __name__ == "__main__":
    main()
