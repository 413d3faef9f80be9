"""Benchmark the shipped containers on a real Docker engine (root): how fast HAProxy
follows `docker compose up --scale`, `docker kill` and `docker service scale`, and how
many requests fail meanwhile.

The engine runs in a network namespace of its own (tests/support/engine.py), with the
stand-in base images; wrk sends requests to HAProxy's published port the whole time.
Compose: scale 3 -> 6 -> 2 -> 3 per round, and `docker kill` of one web container.
Swarm (one node, compose/stack.yml): `docker service scale` 4 -> 8 -> 4 per round. Each
time is from the command's return to HAProxy serving exactly the running containers.

    sudo python -m bench.engine             # 5 rounds; rewrites docs/BENCHMARKS.md
    sudo python -m bench.engine --smoke     # 1 round each, prints only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.churn import percentile
from bench.common import (
    ensure_private_namespace,
    exit_cleanly_on_sigterm,
    machine_description,
    markdown_table,
    median,
    write_section,
)
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

FRONTEND = "http://127.0.0.1:80/"


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


def swarm_rounds(engine: Engine, rounds: int, workdir: Path) -> dict[str, object]:
    stack = SwarmStack(engine, name="benchstack")
    join_swarm(engine)
    times: dict[str, list[float]] = {"up": [], "down": []}
    try:
        stack.build_images()
        stack.deploy()
        _follow(stack, 4)
        with Load(engine, FRONTEND, workdir / "wrk-swarm.txt") as load:
            wait_for(lambda: stack.haproxy().connections() > 0, 10, "wrk to connect")
            for _ in range(rounds):
                for replicas, kind in ((8, "up"), (4, "down")):
                    started = time.monotonic()
                    stack.scale("webapp", replicas)
                    _follow(stack, replicas)
                    times[kind].append(time.monotonic() - started)
        requests, failed = load.result()
    finally:
        stack.remove()
        engine.docker("swarm", "leave", "--force", check=False)
    return {"times": times, "requests": requests, "failed": failed}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.2f} / {percentile(values, 95):.2f} / {max(values):.2f}"


def table(compose: dict[str, object], swarm: dict[str, object]) -> str:
    rows = []
    for name, result, kinds in (
        ("compose (/24, discovery every 1 s)", compose, ("up", "down", "kill")),
        ("swarm (/16 overlay, discovery every 30 s)", swarm, ("up", "down")),
    ):
        times = result["times"]
        assert isinstance(times, dict)
        for kind in kinds:
            rows.append(
                [
                    name,
                    {"up": "scale up", "down": "scale down", "kill": "docker kill"}[kind],
                    str(len(times[kind])),
                    _cell(times[kind]),
                ]
            )
        rows.append(
            [
                name,
                "requests failed while scaling (wrk)",
                "-",
                f"{result['failed']} of {result['requests']:,}",
            ]
        )
    return markdown_table(["stack", "event", "n", "followed in s (p50 / p95 / max)"], rows)


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
        swarm = swarm_rounds(engine, rounds, Path(tmp))
    text = table(compose, swarm)
    print(text)
    if args.smoke:
        return
    write_section(
        "engine",
        "## The containers on a real Docker engine\n\n"
        f"Machine: {machine_description()}. Command: `sudo python -m bench.engine`. Debian's "
        "docker.io 20.10 in a network namespace of its own, the stand-in base images "
        "(README), the project's images built from its Dockerfiles. Compose: "
        f"`up -d --no-deps --scale webapp=N webapp`, 3 -> 6 -> 2 -> 3, {rounds} rounds, then "
        f"{rounds} `docker kill` of a web container; swarm: `docker service scale` 4 -> 8 "
        f"-> 4, {rounds} rounds. Each time runs from the command's return to HAProxy serving "
        "exactly the running containers (`show servers state` over the shared admin socket; "
        "for `docker kill`, to the killed one out of rotation); wrk (1 thread, 8 "
        "connections) sent requests to HAProxy's published port during the scale rounds. "
        "Swarm joins wait for the next full sweep of the /16 (config/poller-swarm.yaml: "
        "every 30 s).\n\n" + text,
    )


if __name__ == "__main__":
    main()
