"""Benchmark the shipped containers on a real Docker engine (root): how fast HAProxy
follows `docker compose up --scale`, `docker kill` and `docker service scale`, and how
many requests fail meanwhile.

The engine runs in a network namespace of its own (tests/support/engine.py), with the
stand-in base images; wrk sends requests to HAProxy's published port the whole time.
Compose: scale 3 -> 6 -> 2 -> 3 per round, and `docker kill` of one web container.
Swarm (one node): compose/stack.yml as shipped, and beside it the peer a Swarm user would
pick instead, HAProxy's own DNS service discovery (`server-template` on
`tasks.<service>`, Docker's embedded DNS; the same template otherwise: checks, retries,
redispatch), with the same app: the deploy, then `docker service scale` 4 -> 6 -> 2 -> 4
per round. Each time is from the command's return to HAProxy serving exactly the
running containers.

    sudo python -m bench.engine             # 5 rounds; rewrites docs/BENCHMARKS.md
    sudo python -m bench.engine --smoke     # 1 round each, prints only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from bench.churn import percentile
from bench.common import (
    ensure_private_namespace,
    exit_cleanly_on_sigterm,
    machine_description,
    markdown_table,
    median,
    write_section,
)
from poller.config import load_settings
from poller.haproxy.rendering import context, load_template, render
from tests.support import standins
from tests.support.engine import (
    ComposeProject,
    Engine,
    Load,
    SwarmStack,
    join_swarm,
    problem,
    running,
    served,
    timed,
)
from tests.support.labs import wait_for
from tests.support.processes import ROOT

FRONTEND = "http://127.0.0.1:80/"
SWARM_STEPS = ((6, "4 -> 6"), (2, "6 -> 2"), (4, "2 -> 4"))
# The peer's resolution, as quick as HAProxy allows: Docker's DNS asked every second,
# an address gone from the answer dropped at once.
PEER_RESOLVERS = """resolvers docker
    nameserver dns 127.0.0.11:53
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold obsolete 0s

"""
PEER_SLOTS = 16
RUNS = ("poller", "probes only", "peer")  # the swarm table's columns, in order
CONFIG_TARGET, RUN_DIR = "/usr/local/etc/haproxy/haproxy.cfg", "/var/run/haproxy"
MASTER = f"{RUN_DIR}/master.sock,mode,660"


def _follow(stack: ComposeProject | SwarmStack, n: int) -> float:
    def right() -> bool:
        running_now = stack.addresses()
        return len(running_now) == n and served(stack) == running_now

    return timed(right, 120, f"{n} containers served")


def compose_rounds(engine: Engine, rounds: int, workdir: Path) -> dict[str, object]:
    project = ComposeProject(engine, name="bench")
    project.compose("up", "-d", "--build", "--scale", "webapp=3", timeout=900)
    times: dict[str, list[float]] = {"up": [], "down": [], "kill": []}
    try:
        _follow(project, 3)
        with Load(engine, FRONTEND, workdir / "wrk-compose.txt") as load:
            wait_for(lambda: project.haproxy().connections() > 0, 10, "wrk to connect")
            for _ in range(rounds):
                for replicas, kind in ((6, "up"), (2, "down"), (3, "up")):
                    project.compose(
                        "up", "-d", "--no-deps", "--scale", f"webapp={replicas}", "webapp"
                    )
                    times[kind].append(_follow(project, replicas))
        requests, failed = load.result()
        for _ in range(rounds):
            victim = project.containers("webapp")[0]
            address = engine.docker(
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                victim,
            ).stdout.strip()
            engine.docker("kill", victim)
            times["kill"].append(
                timed(lambda a=address: a not in served(project), 10, "out of rotation")
            )
            project.compose("up", "-d", "--no-deps", "--scale", "webapp=3", "webapp")
            _follow(project, 3)
    finally:
        project.compose("down", "-v", "--timeout", "5")
    return {"times": times, "requests": requests, "failed": failed}


def peer_stack(engine: Engine, workdir: Path, name: str) -> SwarmStack:
    """compose/stack.yml's web service behind an HAProxy that finds its replicas itself,
    through Docker's DNS: poller's own template for the stack's settings (same checks,
    retries, redispatch), its backend filled by `server-template` instead of poller."""
    settings = load_settings(ROOT / "config" / "poller-swarm.yaml", environ={})
    variables = context(settings, [])
    text = render(load_template(None), variables).replace(
        "\ndefaults", "\n" + PEER_RESOLVERS + "defaults", 1
    )
    assert text.rstrip().splitlines()[-1].startswith("    "), "backend nodes must end the file"
    text = text.rstrip() + (
        f"\n    server-template web {PEER_SLOTS} tasks.{name}_webapp:3000 "
        f"{variables['server_options']} resolvers docker init-addr none\n"
    )
    directory = workdir / "peer"
    directory.mkdir(exist_ok=True)
    (directory / "haproxy.cfg").write_text(text)
    shipped = yaml.safe_load((ROOT / "compose" / "stack.yml").read_text())
    document = {
        "version": "3.8",
        "services": {
            "haproxy": {
                "image": "haproxy:2.6",
                "user": "root",  # the run volume is Docker's (root's): no poller image fills it
                "command": ["haproxy", "-S", MASTER, "-f", CONFIG_TARGET],
                "ports": [{"target": 80, "published": 80, "mode": "host"}],
                "configs": [{"source": "peer-haproxy", "target": CONFIG_TARGET}],
                "volumes": [{"type": "volume", "source": "haproxy-run", "target": RUN_DIR}],
                "networks": ["heig"],
                "deploy": shipped["services"]["haproxy"]["deploy"],
            },
            "webapp": shipped["services"]["webapp"],
        },
        "configs": {"peer-haproxy": {"file": str(directory / "haproxy.cfg")}},
        "networks": shipped["networks"],
        "volumes": {"haproxy-run": {}},
    }  # fmt: skip
    (directory / "stack.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    return SwarmStack(engine, name=name, file=directory / "stack.yml")


def _scale_watched(stack: SwarmStack, replicas: int) -> tuple[float, float | None]:
    """Scale, then watch until HAProxy serves exactly the running tasks. Returns (seconds
    until then, seconds until the last of the tasks that went was out of rotation: None
    when none went). What HAProxy serves is sampled all along, so the second time is
    known once the tasks that went are."""
    before, started = stack.addresses(), time.monotonic()
    stack.scale("webapp", replicas)
    samples: list[tuple[float, set[str]]] = []

    def right() -> bool:
        running_now, serving = stack.addresses(), served(stack)
        samples.append((time.monotonic() - started, serving))
        return len(running_now) == replicas and serving == running_now

    wait_for(right, 120, f"{replicas} replicas served")
    followed = time.monotonic() - started
    gone = before - stack.addresses()
    if not gone:
        return followed, None
    still = [at for at, serving in samples if serving & gone]
    return followed, max(still, default=0.0)


def swarm_rounds(
    engine: Engine, rounds: int, workdir: Path, stack: SwarmStack
) -> dict[str, object]:
    """The deploy, then SWARM_STEPS per round, under wrk load."""
    kinds = ["deploy", *(k for _, k in SWARM_STEPS), "out of rotation"]
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        started = time.monotonic()
        stack.deploy()
        _follow(stack, 4)
        times["deploy"].append(time.monotonic() - started)
        with Load(engine, FRONTEND, workdir / f"wrk-{stack.name}.txt") as load:
            wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
            for _ in range(rounds):
                for replicas, kind in SWARM_STEPS:
                    # Each step from rest: every replica healthy, so listed in Docker's
                    # DNS (a task is listed once its HEALTHCHECK passed, within 10 s).
                    wait_for(lambda: stack.healthy() == len(stack.addresses()), 60, "healthy")
                    followed, out = _scale_watched(stack, replicas)
                    times[kind].append(followed)
                    if out is not None:
                        times["out of rotation"].append(out)
        requests, failed = load.result()
    finally:
        stack.remove()
    return {"times": times, "requests": requests, "failed": failed}


def probes_only_stack(engine: Engine, workdir: Path, name: str) -> SwarmStack:
    """compose/stack.yml as shipped but for poller's settings: no `discovery.dns_names`,
    so a leaving replica is seen only when its probes fail (poller before DNS hints)."""
    settings = yaml.safe_load((ROOT / "config" / "poller-swarm.yaml").read_text())
    del settings["discovery"]["dns_names"]
    directory = workdir / "probes-only"
    directory.mkdir(exist_ok=True)
    (directory / "poller.yaml").write_text(yaml.safe_dump(settings))
    document = yaml.safe_load((ROOT / "compose" / "stack.yml").read_text())
    document["configs"]["poller-swarm"]["file"] = str(directory / "poller.yaml")
    (directory / "stack.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    return SwarmStack(engine, name=name, file=directory / "stack.yml")


def swarms(
    engine: Engine, rounds: int, workdir: Path, probes_only: bool = True
) -> dict[str, dict[str, object]]:
    """poller's stack as shipped, the same without DNS hints (unless `probes_only` is
    False: the suite's smoke run saves its minutes), and the DNS peer, one after the other
    on one swarm."""
    join_swarm(engine)
    try:
        ours = SwarmStack(engine, name="benchstack")
        ours.build_images()
        runs = {"poller": swarm_rounds(engine, rounds, workdir, ours)}
        if probes_only:
            stack = probes_only_stack(engine, workdir, "benchprobes")
            runs["probes only"] = swarm_rounds(engine, rounds, workdir, stack)
        runs["peer"] = swarm_rounds(
            engine, rounds, workdir, peer_stack(engine, workdir, "benchpeer")
        )
        return runs
    finally:
        engine.docker("swarm", "leave", "--force", check=False)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.2f} / {percentile(values, 95):.2f} / {max(values):.2f}"


def table(compose: dict[str, object]) -> str:
    rows = []
    times = compose["times"]
    assert isinstance(times, dict)
    for kind in ("up", "down", "kill"):
        event = {"up": "scale up", "down": "scale down", "kill": "docker kill"}[kind]
        rows.append([event, str(len(times[kind])), _cell(times[kind])])
    rows.append(
        [
            "requests failed while scaling (wrk)",
            "-",
            f"{compose['failed']} of {compose['requests']:,}",
        ]
    )
    return markdown_table(["event", "n", "followed in s (p50 / p95 / max)"], rows)


def swarm_table(runs: dict[str, dict[str, object]]) -> str:
    """poller's stack (with and without DNS hints) beside HAProxy's DNS discovery, and the
    ratio of the peer's median to poller's as shipped."""
    none: dict[str, list[float]] = {}
    ours, bare, theirs = (runs.get(k, {"times": none})["times"] for k in RUNS)
    assert isinstance(ours, dict)
    assert isinstance(bare, dict)
    assert isinstance(theirs, dict)
    rows = []
    for kind in ["deploy", *(kind for _, kind in SWARM_STEPS), "out of rotation"]:
        event = {
            "deploy": "served after deploy (4)",
            "out of rotation": "scale 6 -> 2: the 4 that went out of rotation",
        }.get(kind, f"scale {kind}")
        ratio = median(theirs[kind]) / median(ours[kind]) if ours[kind] and theirs[kind] else 0
        cells = [_cell(times.get(kind, [])) for times in (ours, bare, theirs)]
        rows.append([event, str(len(ours[kind])), *cells, f"{ratio:.1f}x"])
    failed = [f"{r['failed']} of {r['requests']:,}" if (r := runs.get(k)) else "-" for k in RUNS]
    rows.append(["requests failed (wrk)", "-", *failed, ""])
    return markdown_table(
        [
            "event",
            "n",
            "poller: s (p50 / p95 / max)",
            "poller, probes only (no dns_names)",
            "DNS peer",
            "peer / poller",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/engine.py needs root (a Docker engine in a namespace)")
    standins.prepare()  # outside the private namespace: it needs the mirror and PyPI
    ensure_private_namespace()
    exit_cleanly_on_sigterm()
    why = problem()
    if why is not None:
        raise SystemExit(f"bench/engine.py cannot run: {why}")
    rounds = 1 if args.smoke else args.rounds
    with (
        tempfile.TemporaryDirectory(prefix="poller-bench-engine-") as tmp,
        running("bench") as engine,
    ):
        compose = compose_rounds(engine, rounds, Path(tmp))
        runs = swarms(engine, rounds, Path(tmp))
    text, beside = table(compose), swarm_table(runs)
    print(text + "\n" + beside)
    if args.smoke:
        return
    write_section(
        "engine",
        "## The containers on a real Docker engine\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.engine`. Debian's "
        "docker.io 20.10 in a network namespace of its own, the stand-in base images "
        "(docs/CONTRIBUTING.md), the project's images built from its Dockerfiles. Each time "
        "runs from the command's return to HAProxy serving exactly the running containers "
        "(`show servers state` over the shared admin socket; for `docker kill`, to the killed "
        "one out of rotation); wrk (1 thread, 8 connections) sent GETs to HAProxy's published "
        "port meanwhile.\n\n"
        f"Compose (/24, discovery every 1 s): `up -d --no-deps --scale webapp=N webapp`, "
        f"3 -> 6 -> 2 -> 3, {rounds} rounds, then {rounds} `docker kill` of a web container.\n\n"
        + text
        + "\n\nSwarm (one node, the /16 overlay; full sweeps every 30 s, hot sweeps every "
        "second): compose/stack.yml as shipped (`discovery.dns_names: [tasks.webapp]`), "
        "the same without `dns_names` (poller sees a replica leave only when its probes "
        "fail), and in the same run the same web service behind HAProxy's own DNS service "
        "discovery, the peer a Swarm user would pick instead (`server-template web "
        f"{PEER_SLOTS} tasks.<service>:3000` with poller's server options, `resolvers` on "
        "Docker's DNS asked every second, `hold obsolete 0s`; the rest of the config is "
        "poller's template: the same checks, retries, redispatch). The deploy, then `docker "
        f"service scale` 4 -> 6 -> 2 -> 4, {rounds} rounds, each step from rest (every "
        "replica healthy: Swarm lists a task in its DNS once its HEALTHCHECK passed).\n\n" + beside,
    )


if __name__ == "__main__":
    main()
