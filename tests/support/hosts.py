"""Two Docker hosts on one machine, forming one swarm.

Two engines (tests/support/engine.py), each in a network namespace of its own with a
host name of its own, joined by a veth pair (10.99.0.1/24 and 10.99.0.2/24, no default
route anywhere): `lb` is the manager, labelled lb=true (HAProxy and the poller run
there), `other` a worker. The link can be cut and repaired (a partition), and a daemon
stopped and started again (a node lost and back). Everything is stopped by PID and every
namespace deleted afterwards, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.engine import Engine, SwarmStack

LB_ADDRESS, OTHER_ADDRESS = "10.99.0.1", "10.99.0.2"


@dataclass
class TwoHosts:
    lb: Engine
    other: Engine
    lb_link: str
    other_link: str

    def link(self, up: bool) -> None:
        """Cut (down) or repair (up) the link between the two hosts."""
        state = "up" if up else "down"
        for engine, name in ((self.lb, self.lb_link), (self.other, self.other_link)):
            engine.ns_run("ip", "link", "set", name, state).check_returncode()

    def node_of(self, engine: Engine) -> str:
        return engine.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def tasks(self, stack: SwarmStack, service: str = "webapp") -> dict[str, int]:
        """Running tasks of `service` per node host name, as the manager sees them."""
        out = self.lb.docker(
            "service",
            "ps",
            f"{stack.name}_{service}",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ).stdout
        counts: dict[str, int] = {}
        for line in out.splitlines():
            node, _, state = line.partition(" ")
            if state.startswith("Running"):
                counts[node] = counts.get(node, 0) + 1
        return counts

    def copy_image(self, image: str) -> None:
        """`docker save` on lb, `docker load` on other: no registry needed."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=self.lb.env)
        assert save.stdout is not None
        load = subprocess.run(
            ["docker", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=300,
            env=self.other.env,
        )
        save.stdout.close()
        save.wait(60)
        if save.returncode or load.returncode:
            raise RuntimeError(f"moving {image} failed: {load.stderr.decode()}")


@contextlib.contextmanager
def two_hosts() -> Iterator[TwoHosts]:
    lb = Engine("lb", hostname="lb1")
    other = Engine("w2", hostname="node2")
    tag = f"pe{os.getpid() % 100000}"
    try:
        lb.start()
        lb.import_standins()
        other.start()
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                f"{tag}l",
                "netns",
                lb.ns,
                "type",
                "veth",
                "peer",
                "name",
                f"{tag}o",
                "netns",
                other.ns,
            ],
            check=True,
            timeout=30,
        )
        hosts = TwoHosts(lb, other, f"{tag}l", f"{tag}o")
        for engine, name, address in (
            (lb, f"{tag}l", LB_ADDRESS),
            (other, f"{tag}o", OTHER_ADDRESS),
        ):
            engine.ns_run("ip", "addr", "add", f"{address}/24", "dev", name).check_returncode()
            engine.ns_run("ip", "link", "set", name, "up").check_returncode()
        lb.docker("swarm", "init", "--advertise-addr", LB_ADDRESS)
        token = lb.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        other.docker(
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            OTHER_ADDRESS,
            f"{LB_ADDRESS}:2377",
        )
        lb.docker("node", "update", "--label-add", "lb=true", hosts.node_of(lb))
        yield hosts
    finally:
        other.close()
        lb.close()
