"""A smoke run of bench/engine.py's measurements, one round each, on the suite's engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.engine import compose_rounds, swarm_rounds, table
from tests.support.engine import Engine

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


def test_engine_benchmark_smoke(engine: Engine, tmp_path: Path) -> None:
    compose = compose_rounds(engine, 1, tmp_path)
    swarm = swarm_rounds(engine, 1, tmp_path)
    text = table(compose, swarm)
    assert compose["failed"] == 0, text
    assert swarm["failed"] == 0, text
    assert "docker kill" in text
