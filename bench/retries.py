"""Benchmark `haproxy.retry_on` side by side: what a node that dies at once costs GETs and
POSTs with `off`, `idempotent` (the default) and `all`.

The loopback lab (a real HAProxy, the poller, three demo nodes), GETs and POSTs through
HAProxy at once (two wrk, 4 connections each; every POST counts an order on the node
that runs it). A node is killed with SIGKILL, as an app that exits at once on SIGTERM
does (the original lab's Express app), and started again at its address; again and
again, the same deaths for every setting, the settings taking turns round by round in
one run. What a client sees per setting: GETs and POSTs failed, and whether a POST whose
node died under it can run twice (`all` replays it on another node; HAProxy replays only
what it holds whole; the integration suite proves which setting does what:
tests/integration/test_faults.py). Runs in a private network namespace.

    python -m bench.retries          # 3 rounds of 6 deaths each; rewrites docs/BENCHMARKS.md
    python -m bench.retries --smoke  # 1 round of 2 deaths, prints only
"""

from __future__ import annotations

import argparse
import os
import signal
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
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.loopback import Lab

NODES = ("127.0.6.2", "127.0.6.3", "127.0.6.4")
SETTINGS = ("off", "idempotent", "all")
REPLAYS = {"off": "no", "idempotent": "no: it fails (5xx)", "all": "yes: run again elsewhere"}
LAB = {
    "discovery": {"subnets": ["127.0.6.0/28"], "interval_seconds": 0.5},
    "probe": {"timeout_seconds": 0.3, "identity": {"json_field": "host"}},
    "pool": {"interval_seconds": 0.5, "rise_interval_seconds": 0.1, "rise": 2, "fall": 2},
    "haproxy": {"drain_timeout_seconds": 2.0},
}
POST_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = \'{"order": 1}\'\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
)


def serves(lab: Lab, count: int) -> bool:
    return len(lab.haproxy.serving()) == count


def one_round(setting: str, deaths: int, slot: float, workdir: Path) -> dict[str, int]:
    """A fresh lab with `retry_on: setting`; `deaths` SIGKILLs under GET and POST load."""
    lab = Lab(workdir, subnet="127.0.6.0/28", settings={**LAB, "haproxy": {
        **LAB["haproxy"], "retry_on": setting}})  # fmt: skip
    try:
        for address in NODES:
            lab.start_node(address)
        lab.start_haproxy()
        lab.start_poller()
        wait_for(lambda: serves(lab, len(NODES)), 20, "the nodes served")
        url = f"http://127.0.0.1:{lab.frontend_port}"
        seconds = int(deaths * slot + 5)
        (workdir / "post.lua").write_text(POST_SCRIPT)
        loads = {
            "get": ["wrk", "-t1", "-c4", f"-d{seconds}s", "--timeout", "5s", f"{url}/"],
            "post": ["wrk", "-t1", "-c4", f"-d{seconds}s", "--timeout", "5s", "-s",
                     str(workdir / "post.lua"), f"{url}/orders"],
        }  # fmt: skip
        for name, argv in loads.items():
            lab.spawn(f"wrk-{name}", argv)
        wait_for(lambda: current_connections(lab.admin_socket) >= 8, 10, "wrk to connect")
        for death in range(deaths):
            started = time.monotonic()
            victim = NODES[death % len(NODES)]
            os.kill(lab.procs[f"node-{victim}"].pid, signal.SIGKILL)
            lab.stop_node(victim)  # reap it
            lab.start_node(victim)  # the same app again at its address (a restart)
            wait_for(lambda: serves(lab, len(NODES)), 15, f"{victim} served again")
            time.sleep(max(0.0, slot - (time.monotonic() - started)))
        counts: dict[str, int] = {}
        for name in loads:
            proc = lab.procs[f"wrk-{name}"]
            proc.wait(seconds + 30)
            requests, failed = wrk_failures(lab.log(f"wrk-{name}"))
            counts[f"{name}_requests"], counts[f"{name}_failed"] = requests, failed
        return counts
    finally:
        lab.close()


def run(rounds: int, deaths: int, slot: float) -> dict[str, dict[str, int]]:
    totals = {s: {"deaths": 0} for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="poller-bench-retries-") as tmp:
        for number in range(rounds):
            for setting in SETTINGS:  # turns: the machine's noise falls on each alike
                found = one_round(setting, deaths, slot, Path(tmp) / f"{setting}-{number}")
                totals[setting]["deaths"] += deaths
                for key, value in found.items():
                    totals[setting][key] = totals[setting].get(key, 0) + value
    return totals


def table(totals: dict[str, dict[str, int]]) -> str:
    rows = []
    for setting, t in totals.items():
        label = f"{setting} (default)" if setting == "idempotent" else setting
        rows.append(
            [
                label,
                str(t["deaths"]),
                f"{t['get_failed']} of {t['get_requests']:,}",
                f"{t['post_failed']} of {t['post_requests']:,}",
                REPLAYS[setting],
            ]
        )
    return markdown_table(
        [
            "retry_on",
            "deaths",
            "GETs failed",
            "POSTs failed",
            "a POST whose node died under it runs twice",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deaths", type=int, default=6)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    ensure_packages("haproxy", "wrk")
    ensure_private_namespace()
    rounds, deaths = (1, 2) if args.smoke else (args.rounds, args.deaths)
    text = table(run(rounds, deaths, slot=2.0))
    print(text)
    if args.smoke:
        return
    write_section(
        "retries",
        "## A node that dies at once: retry_on side by side\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.retries`. The "
        "loopback lab (a real HAProxy, the poller, three demo nodes); two wrk through "
        "HAProxy at once, GETs to `/` and POSTs to `/orders` (4 connections each); a node "
        "killed with SIGKILL (as an app that exits at once on SIGTERM) and started again "
        f"at its address every 2 s, {deaths} deaths per round, {rounds} rounds, the three "
        "settings taking turns in one run. A graceful stop (the reference app, "
        "docs/RELIABILITY.md) loses nothing with any setting; this is what each buys when "
        "the app does not stop gracefully.\n\n" + text,
    )


if __name__ == "__main__":
    main()
