"""A smoke run of bench/engine.py's measurements, one round each, on the suite's engine:
compose, and the swarm stack beside HAProxy's DNS service discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.engine import compose_rounds, swarm_table, swarms, table
from tests.support.engine import Engine

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


def test_engine_benchmark_smoke(engine: Engine, tmp_path: Path) -> None:
    compose = compose_rounds(engine, 1, tmp_path)
    runs = swarms(engine, 1, tmp_path, probes_only=False)
    poller, peer = runs["poller"], runs["peer"]
    text = table(compose) + "\n" + swarm_table(runs)
    print(text)
    assert compose["failed"] == 0, text
    assert poller["failed"] == 0, text
    assert "docker kill" in text
    assert "scale 6 -> 2" in text
    assert peer["requests"] > 0, text  # the peer served: its replicas were found by DNS
