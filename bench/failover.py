"""Benchmark one address in front of two load balancers: keepalived (VRRP) moving a
floating address from a lost load balancer to the other, as docs/SCALING.md suggests.

Three network namespaces of the benchmark's own, no default route anywhere: a client
namespace holding a bridge, and two load balancer namespaces on it (each: HAProxy in
front of a demo node, and keepalived holding 10.98.0.100 by VRRP, priority 150 on
`a`, 100 on `b`). The client asks the floating address every 20 ms (timeout 0.5 s, one
retry on a failure, as a client with one address can do). `a`'s link is cut (the node
lost), then repaired (`a` takes the address back). Per event: how long the address
answered nothing, and requests failed after the retry. advert_int 1 s (keepalived's
default) and 0.2 s side by side in one run.

    sudo python -m bench.failover            # 5 failovers per setting; rewrites docs/BENCHMARKS.md
    sudo python -m bench.failover --smoke    # 1 each, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import (
    ensure_packages,
    exit_cleanly_on_sigterm,
    machine_description,
    markdown_table,
    median,
    write_section,
)
from tests.support.labs import stop_process, wait_for
from tests.support.processes import ROOT

VIP = "10.98.0.100"
ADDRESSES = {"client": "10.98.0.10", "a": "10.98.0.2", "b": "10.98.0.3"}
PRIORITY = {"a": 150, "b": 100}
WEBAPP = ROOT / "compose" / "webapp" / "app.py"

KEEPALIVED = """global_defs {{
    router_id lb-{name}
    enable_script_security
    vrrp_garp_master_delay 0
    vrrp_version 3
}}
vrrp_instance front {{
    state BACKUP
    interface {link}
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
        {vip}/24
    }}
}}
"""

HAPROXY = """global
    maxconn 1000
defaults
    mode http
    timeout connect 200ms
    timeout client 5s
    timeout server 5s
frontend front
    bind :80
    default_backend nodes
backend nodes
    server node 127.0.0.1:3000 check inter 500ms
"""

# The client: one GET to the floating address every 20 ms, a retry on a failure; a JSON
# line per request (monotonic time, answered by, failed after the retry).
CLIENT = """
import http.client, json, sys, time
deadline = time.monotonic() + float(sys.argv[2])
def get():
    try:
        c = http.client.HTTPConnection(sys.argv[1], 80, timeout=0.5)
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        return json.loads(body)["host"] if r.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
while time.monotonic() < deadline:
    at = time.monotonic()
    host = get() or get()
    print(json.dumps({"at": at, "host": host}), flush=True)
    time.sleep(max(0.0, 0.02 - (time.monotonic() - at)))
"""


class Lab:
    """The three namespaces, the bridge, and what runs in them; gone after `close`."""

    def __init__(self, workdir: Path, advert: float) -> None:
        self.workdir, self.advert = workdir, advert
        self.tag = f"pkf{os.getpid() % 100000}"
        self.ns = {name: f"{self.tag}-{name}" for name in ADDRESSES}
        self.links = {name: f"{self.tag}{name[0]}" for name in ("a", "b")}
        self.procs: list[subprocess.Popen[bytes]] = []

    def ip(self, ns: str, *args: str) -> None:
        subprocess.run(["ip", "-n", self.ns[ns], *args], check=True, timeout=30)

    def start(self) -> None:
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        for name in self.ns:
            self.ip(name, "link", "set", "lo", "up")
        self.ip("client", "link", "add", "br0", "type", "bridge")
        self.ip("client", "addr", "add", f"{ADDRESSES['client']}/24", "dev", "br0")
        self.ip("client", "link", "set", "br0", "up")
        for name, link in self.links.items():
            self.ip("client", "link", "add", f"{link}c", "type", "veth", "peer", "name", link,
                    "netns", self.ns[name])  # fmt: skip
            self.ip("client", "link", "set", f"{link}c", "master", "br0", "up")
            self.ip(name, "addr", "add", f"{ADDRESSES[name]}/24", "dev", link)
            self.ip(name, "link", "set", link, "up")
            self.start_balancer(name, link)
        wait_for(lambda: self.holds("a"), 30, "a to hold the floating address")

    def spawn(self, ns: str, label: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{label}.log").open("ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[ns], *argv], stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def start_balancer(self, name: str, link: str) -> None:
        here = self.workdir / name
        here.mkdir(exist_ok=True)
        (here / "haproxy.cfg").write_text(HAPROXY)
        conf = KEEPALIVED.format(
            name=name, link=link, priority=PRIORITY[name], advert=self.advert, vip=VIP
        )
        (here / "keepalived.conf").write_text(conf)
        self.spawn(name, f"node-{name}", [sys.executable, str(WEBAPP), "--bind", "127.0.0.1",
                                           "--port", "3000", "--host", f"lb-{name}"])  # fmt: skip
        haproxy = shutil.which("haproxy") or "haproxy"
        self.spawn(name, f"haproxy-{name}", [haproxy, "-db", "-f", str(here / "haproxy.cfg")])
        self.spawn(name, f"keepalived-{name}", [
            "keepalived", "--dont-fork", "--log-console", "--vrrp",
            "-f", str(here / "keepalived.conf"),
            "-p", str(here / "keepalived.pid"), "-r", str(here / "vrrp.pid"),
        ])  # fmt: skip

    def holds(self, name: str) -> bool:
        """Whether load balancer `name` holds the floating address."""
        out = subprocess.run(
            ["ip", "-n", self.ns[name], "-o", "addr", "show", "dev", self.links[name]],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        return f" {VIP}/" in out

    def link(self, name: str, up: bool) -> None:
        """Cut (the node lost) or repair `name`'s link to the bridge."""
        self.ip("client", "link", "set", f"{self.links[name]}c", "up" if up else "down")

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, signal.SIGTERM, 5)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@contextlib.contextmanager
def lab(workdir: Path, advert: float) -> Iterator[Lab]:
    made = Lab(workdir, advert)
    try:
        made.start()
        yield made
    finally:
        made.close()


def failovers(
    advert: float, events: int, workdir: Path, dwell: float = 5.0
) -> dict[str, list[float] | int]:
    """`events` times: a's link cut (b takes over), then repaired (a takes it back), the
    client asking for `dwell` seconds after each."""
    gaps: dict[str, list[float] | int] = {"over": [], "back": [], "failed": 0, "sent": 0}
    with lab(workdir, advert) as made:
        seconds = events * 60 + 30  # a bound: the client is stopped after the last event
        out = workdir / "client.jsonl"
        with out.open("wb") as handle:
            client = subprocess.Popen(
                ["ip", "netns", "exec", made.ns["client"], sys.executable, "-c", CLIENT, VIP,
                 str(seconds)], stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip
        made.procs.append(client)
        marks: list[tuple[str, float]] = []
        time.sleep(1.0)  # the client's first requests: a at rest
        for _ in range(events):
            marks.append(("over", time.monotonic()))
            made.link("a", up=False)
            wait_for(lambda: made.holds("b"), 30, "b to take the address")
            time.sleep(dwell)  # the client keeps asking b
            marks.append(("back", time.monotonic()))
            made.link("a", up=True)
            wait_for(lambda: made.holds("a") and not made.holds("b"), 30, "a to take it back")
            time.sleep(dwell)
        stop_process(client, signal.SIGTERM, 5)
        text = out.read_text().splitlines()
        lines = [json.loads(x) for x in text if x.startswith("{") and x.endswith("}")]
    gaps["sent"] = len(lines)
    gaps["failed"] = sum(1 for x in lines if x["host"] is None)
    for kind, at in marks:
        expected = "lb-b" if kind == "over" else "lb-a"
        answered = [x["at"] for x in lines if x["at"] >= at and x["host"] == expected]
        gap = answered[0] - at if answered else float("nan")
        assert isinstance(gaps[kind], list)
        gaps[kind].append(gap)  # type: ignore[union-attr]
    return gaps


def table(results: dict[float, dict[str, list[float] | int]]) -> str:
    rows = []
    for advert, found in results.items():
        over, back = found["over"], found["back"]
        assert isinstance(over, list)
        assert isinstance(back, list)
        rows.append(
            [
                f"{advert:g} s",
                str(len(over)),
                f"{median(over):.2f} / {max(over):.2f}",
                f"{median(back):.2f} / {max(back):.2f}",
                f"{found['failed']} of {found['sent']:,}",
            ]
        )
    return markdown_table(
        [
            "advert_int",
            "failovers",
            "a lost -> b answers: s (p50 / max)",
            "a back -> a answers: s (p50 / max)",
            "requests failed after one retry",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/failover.py needs root (network namespaces, keepalived)")
    ensure_packages("haproxy", "keepalived")
    exit_cleanly_on_sigterm()
    events = 1 if args.smoke else args.events
    results = {}
    with tempfile.TemporaryDirectory(prefix="poller-bench-failover-") as tmp:
        for advert in (1.0, 0.2):
            workdir = Path(tmp) / f"advert-{advert:g}"
            workdir.mkdir()
            results[advert] = failovers(advert, events, workdir, 2.0 if args.smoke else 5.0)
    text = table(results)
    print(text)
    if args.smoke:
        return
    write_section(
        "failover",
        "## One address in front of two load balancers: keepalived\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.failover`. Three "
        "network namespaces of the benchmark's own (a client holding a bridge, two load "
        "balancers on it, each HAProxy in front of a demo node and keepalived 2.2 holding "
        f"{VIP} by VRRP, priority 150 and 100, preempting); a client asks the floating "
        "address every 20 ms with a 0.5 s timeout and one retry. The first load balancer's "
        "link cut (the node lost: the other takes the address over), then repaired (it takes "
        f"the address back), {events} times per setting, keepalived's default advert_int "
        "(1 s) and 0.2 s side by side in one run.\n\n" + text,
    )


if __name__ == "__main__":
    main()
