"""The local demo lab: HAProxy, the poller sidecar and demo web nodes on 127.0.0.0/8.

Nodes come and go on a timer (start, graceful stop, kill -9, a node answering 500, a new
node reusing an address, a late joiner); the demo says what each step is, then prints
what poller's pool and HAProxy show once they settle. Run with `make demo`; Ctrl-C stops
everything and removes its work directory. No root needed: everything is a local
process on loopback, started with the same command lines as the compose services.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.loopback import Lab

SUBNET = "127.42.0.0/24"
# config/poller.yaml's two services: web (backend `nodes`) and an API on 3001.
SERVICES = [
    {"name": "web", "ports": [3000], "backend": "nodes", "route": {"default": True}},
    {"name": "api", "ports": [3001], "route": {"path_prefix": "/api"}},
]
SECONDS = 60.0
HEARTBEAT_SECONDS = 6.0  # a line at least this often, so the demo is never silent long
# (seconds from start, action, last octet, host name, what it shows)
TIMELINE = [
    (0, "start", 11, "s1", "two web nodes start; poller finds them at its next sweep"),
    (0, "start", 22, "s2", "(a sweep every second, then 2 quick probes 0.1 s apart)"),
    (3, "start-api", 77, "api1", "an API on port 3001: the same sweep finds it, /api goes there"),
    (6, "start", 33, "s3", "a third node: added through HAProxy's runtime API, no reload"),
    (10, "start", 44, "s4", "a fourth"),
    (16, "stop", 22, "s2", "graceful stop: its port closes, poller drains and removes it"),
    (22, "kill", 33, "s3", "kill -9: HAProxy's checks stop routing to it in under a second"),
    (28, "start-500", 55, "broken", "answers 500: probed, never healthy, so never served"),
    (
        34,
        "start",
        22,
        "s2-again",
        "a new node at a reused address (Docker does that): new identity",
    ),
    (42, "stop", 55, "broken", "the broken node goes away; it was never in HAProxy"),
    (48, "stop", 44, "s4", "another graceful stop"),
    (54, "start", 66, "s6", "a late joiner"),
]


def picture(lab: Lab) -> tuple[tuple[str, str], dict[str, Any] | None]:
    """poller's pool and what HAProxy serves, read as one picture (and the pool itself):
    the pool is read again after HAProxy, and the pair is retaken if it moved in between."""
    for _ in range(5):
        first = lab.status("/pool")
        web, api = (sorted(lab.addresses(b), key=by_octet) for b in ("nodes", "api"))
        if first is not None and lab.status("/pool") == first:
            break
    served = ", ".join(web) or "nothing: every request gets 503"
    return (describe(first), served + (f"; /api: {', '.join(api)}" if api else "")), first


def by_octet(address: str) -> int:
    return int(address.rsplit(".", 1)[1])


LEAVING = ("falling", "down")


def describe(pool: dict[str, Any] | None) -> str:
    """The pool on one line: each member's state, why it is falling or down (its last
    probe's result), and the guard when it holds removals."""
    if not pool:
        return "(the status server does not answer)"
    shown = []
    for m in pool.get("members", []):
        why = m.get("last_result")
        reason = f": {why}" if m["state"] in LEAVING and why and why != "ok" else ""
        shown.append(
            ("api: " if m["service"] == "api" else "")
            + f"{m['address']} {m['state']}{reason}"
            + (f" ({m['identity']})" if m["identity"] else "")
        )
    line = ", ".join(shown) or "empty"
    guard = pool.get("guard") or {}
    if guard.get("holding"):
        line += f"; the guard holds removals ({guard.get('reason')}): HAProxy's checks decide"
    return line


def surprises(pool: dict[str, Any] | None, left_alone: set[str]) -> set[tuple[str, str, str]]:
    """(host, state, last result) of the members the demo did not stop or kill that are
    falling or down: not the demo's doing (a loaded machine, most likely)."""
    return {
        (m["identity"], m["state"], m.get("last_result") or "?")
        for m in (pool or {}).get("members", [])
        if m["identity"] in left_alone and m["state"] in LEAVING
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long the demo runs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="poller-demo-"))
    lab = Lab(
        workdir,
        subnet=SUBNET,
        settings={
            "probe": {"identity": {"json_field": "host"}},
            "discovery": {"interval_seconds": 1.0},
            "pool": {"interval_seconds": 1.0, "rise_interval_seconds": 0.1},
            "services": SERVICES,
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
            f"demo: about {args.seconds:.0f} s. Web nodes start, stop, get killed, answer 500 "
            "and come back;\n      poller follows them and HAProxy serves exactly the "
            "healthy ones. Ctrl-C stops everything.\n"
            f"  status page (open it): http://127.0.0.1:{lab.status_port}/\n"
            f"  its JSON, for a terminal: /pool, /events, /healthz and /metrics beside it\n"
            f"  HAProxy:               http://127.0.0.1:{lab.frontend_port}/   "
            f"its stats: http://127.0.0.1:{lab.stats_port}/\n"
            f"  poller sweeps {SUBNET} ports 3000 (web) and 3001 (api, /api) every second\n",
            flush=True,
        )
        started = time.monotonic()
        pending = list(TIMELINE)
        last, said = ("", ""), started
        left_alone: set[str] = set()  # hosts started healthy and not stopped since
        unexpected: set[tuple[str, str, str]] = set()
        while not stop and time.monotonic() - started < args.seconds:
            elapsed = time.monotonic() - started
            while pending and pending[0][0] <= elapsed:
                _, action, octet, host, why = pending.pop(0)
                address = f"127.42.0.{octet}"
                verb = {"start-500": "start (500)", "kill": "kill -9", "start-api": "start"}.get(
                    action, action
                )
                print(f"[{elapsed:5.1f}s] {verb} {address} {host}: {why}", flush=True)
                if action in ("start", "start-api"):
                    left_alone.add(host)
                elif action in ("stop", "kill"):
                    left_alone.discard(host)
                if action == "start":
                    lab.start_node(address, host)
                elif action == "start-api":
                    lab.start_node(address, host, port=3001)
                elif action == "start-500":
                    lab.start_node(address, host, "--status", "500")
                else:
                    lab.stop_node(address, signal.SIGKILL if action == "kill" else signal.SIGTERM)
                said = time.monotonic()
            now, pool = picture(lab)
            unexpected |= surprises(pool, left_alone)
            if now != last or time.monotonic() - said > HEARTBEAT_SECONDS:
                status, body = lab.get()
                answer = f"{status} from {body.get('host')}" if body else str(status)
                if "/api:" in now[1]:
                    status, body = lab.get("/api/orders")
                    answer += f", /api/orders got {status} from {body.get('host') if body else '-'}"
                moment = time.monotonic() - started
                print(f"[{moment:5.1f}s]   poller's pool:  {now[0]}", flush=True)
                print(f"          HAProxy serves: {now[1]}; a request got {answer}", flush=True)
                last, said = now, time.monotonic()
            time.sleep(0.2)
        reloads, _ = lab.reloads()
        print(
            f"\ndemo: done. HAProxy reloads: {reloads} (membership changes go through its "
            "runtime API)",
            flush=True,
        )
        for host, state, why in sorted(unexpected):
            print(
                f"demo: warning: {host} went {state} ({why}) though the demo did not touch it: "
                "the machine is likely too loaded for 0.5 s probes (a timeout), and poller "
                "took it for a failing node",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        print("demo: stopping everything", flush=True)
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
        print("demo: all demo processes stopped", flush=True)


if __name__ == "__main__":
    main()
