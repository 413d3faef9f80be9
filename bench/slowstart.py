"""Benchmark a new member's share of requests over its first seconds, with and without
HAProxy's slow start (`haproxy.slowstart_seconds`).

A real HAProxy, the poller and demo nodes on 127.0.0.0/8 (no root needed): three nodes
serve under wrk (1 thread, 8 connections, keep-alive), a fourth starts, poller adds it at
runtime, and HAProxy's cumulative session counters (`show stat`, stot) are sampled every
0.25 s from the moment it is added. The table gives the new node's share of the requests
in each second after it joined; with four equal nodes its fair share is 25 %. Side by
side in one run, alternating: slow start off (the default) and on.

    python -m bench.slowstart            # 3 rounds each; its docs/BENCHMARKS.md section and
                                         # docs/slowstart-ramp.png
    python -m bench.slowstart --smoke    # 1 round each, 3 s, prints only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import (
    machine_description,
    markdown_table,
    median,
    prepare,
    pyplot,
    save_figure,
    write_section,
)
from tests.support.labs import current_connections, wait_for, wrk_failures
from tests.support.loopback import Lab
from tests.support.processes import ROOT

NODES = ["127.0.3.2", "127.0.3.3", "127.0.3.4"]
JOINER = "127.0.3.5"
SLOWSTART = 5.0
SECONDS = 8  # buckets after the join
SAMPLE = 0.25
PLOT = ROOT / "docs" / "slowstart-ramp.png"


def totals(lab: Lab) -> dict[str, int]:
    """Cumulative sessions (stot) per server address of backend `nodes`."""
    out = lab.admin("show stat nodes 4 -1")
    header = out.splitlines()[0].lstrip("# ").split(",")
    found = {}
    for line in out.splitlines()[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname", "").startswith("n_"):
            address = row["svname"][2:].rsplit("_", 1)[0].replace("_", ".")
            found[address] = int(row["stot"] or 0)
    return found


def one_round(workdir: Path, slowstart: float | None, seconds: int) -> tuple[list[float], int, int]:
    """The joiner's share per second after it was added; (shares, requests, failed)."""
    haproxy = {"slowstart_seconds": slowstart} if slowstart else {}
    lab = Lab(workdir, settings={"haproxy": haproxy})
    try:
        lab.start_haproxy()
        for index, address in enumerate(NODES):
            lab.start_node(address, f"n{index}")
        lab.start_poller()
        wait_for(lambda: lab.addresses() == set(NODES), 15, "three nodes served")
        url = f"http://127.0.0.1:{lab.frontend_port}/"
        wrk = lab.spawn("wrk", ["wrk", "-t1", "-c8", f"-d{seconds + 4}s", url])
        wait_for(lambda: current_connections(lab.admin_socket) > 0, 10, "wrk to connect")
        time.sleep(1.0)  # steady load before the join
        lab.start_node(JOINER, "joiner")
        wait_for(lambda: JOINER in lab.addresses(), 15, "the joiner added")
        samples = [(time.monotonic(), totals(lab))]
        end = samples[0][0] + seconds
        while time.monotonic() < end:
            time.sleep(SAMPLE)
            samples.append((time.monotonic(), totals(lab)))
        shares = []
        for second in range(seconds):
            first = next(s for t, s in samples if t >= samples[0][0] + second)
            last = next((s for t, s in samples if t >= samples[0][0] + second + 1), samples[-1][1])
            total = sum(last.values()) - sum(first.values())
            new = last.get(JOINER, 0) - first.get(JOINER, 0)
            shares.append(100.0 * new / total if total else 0.0)
        wrk.wait(seconds + 30)
        requests, failed = wrk_failures(lab.log("wrk"))
        return shares, requests, failed
    finally:
        lab.close()


def plot(shares: dict[str, list[float]]) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for (name, values), marker in zip(shares.items(), ("o", "s"), strict=False):
        axis.step(range(1, len(values) + 1), values, where="pre", marker=marker, label=name)
    axis.axhline(25, color="grey", linestyle=":", label="fair share of four nodes")
    axis.set_xlabel("second after the new node was added")
    axis.set_ylabel("its share of the requests, % (median)")
    axis.set_ylim(0, 35)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="lower right")
    figure.suptitle("A joining node's share under wrk: HAProxy slow start off and on")
    figure.tight_layout()
    save_figure(figure, PLOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    prepare("haproxy", "wrk")
    rounds = 1 if args.smoke else args.rounds
    seconds = 3 if args.smoke else SECONDS
    cases = {"off (default)": None, f"slowstart_seconds: {SLOWSTART:g}": SLOWSTART}
    results: dict[str, list[tuple[list[float], int, int]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="poller-slowstart-") as tmp:
        for index in range(rounds):
            for name, value in cases.items():  # alternating: noise hits both alike
                results[name].append(one_round(Path(tmp) / f"r{index}-{value}", value, seconds))
    rows = []
    medians: dict[str, list[float]] = {}
    for name, runs in results.items():
        shares = [median([run[0][s] for run in runs]) for s in range(seconds)]
        medians[name] = shares
        requests = sum(run[1] for run in runs)
        failed = sum(run[2] for run in runs)
        rows.append([name, *(f"{share:.0f}" for share in shares), f"{failed} of {requests:,}"])
    table = markdown_table(
        ["slow start", *(f"{s}-{s + 1} s %" for s in range(seconds)), "failed requests"], rows
    )
    print(table)
    for name, runs in results.items():
        for _, requests, failed in runs:
            if failed or not requests:
                raise SystemExit(f"{name}: {failed} of {requests} requests failed")
    if args.smoke:
        return
    plot(medians)
    write_section(
        "slowstart",
        "## A new member's first seconds: slow start\n\n"
        f"Machine: {machine_description()}. Command: `python -m bench.slowstart`. A real "
        "HAProxy, the poller and demo nodes on loopback; three nodes serve under wrk (1 "
        "thread, 8 keep-alive connections), a fourth joins and poller adds it at runtime. "
        "The new node's share of the requests in each second after it was added (from "
        f"HAProxy's stot counters, sampled every {SAMPLE:g} s; median of {rounds} rounds, "
        "the two settings alternating). Its fair share among four is 25 %.\n\n"
        + table
        + "\n\nWithout slow start the new node takes its full share in its first second; "
        f"with `slowstart_seconds: {SLOWSTART:g}` HAProxy ramps its weight up over "
        f"{SLOWSTART:g} s. No request failed in either case.\n\n"
        "![A joining node's share, slow start off and on](slowstart-ramp.png)",
    )


if __name__ == "__main__":
    main()
