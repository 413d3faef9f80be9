"""`poller scan` as a user runs it: a real process sweeping real servers on 127.0.0.0/8."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.processes import ROOT, Processes
from tests.support.processes import run_poller as poller

WEBAPP = ROOT / "compose" / "webapp" / "app.py"
ODD = ROOT / "tests" / "support" / "oddnodes.py"
SUBNET = "127.0.1.0/27"
HEALTHY = {"127.0.1.2": "node-a", "127.0.1.3": "node-b", "127.0.1.4": "node-c"}
ODD_NODES = {
    "127.0.1.5": ("silent", "timeout"),
    "127.0.1.6": ("banner", "not_http"),
    "127.0.1.7": ("status500", "unexpected_status"),
    "127.0.1.8": ("redirect", "unexpected_status"),
    # A multi-megabyte body is read only up to max_body_bytes: the status decides.
    "127.0.1.9": ("bigbody", "ok"),
    # Headers at once, then a byte every 100 ms: the deadline ends it.
    "127.0.1.10": ("drip", "timeout"),
    "127.0.1.11": ("reset", "reset"),
}
TIMEOUT = 0.5


@pytest.fixture
def lab(processes: Processes, tmp_path: Path) -> Path:
    for address, name in HEALTHY.items():
        processes.python(WEBAPP, "--bind", address, "--host", name, ready_line="listening")
    specs = [f"{kind}@{address}:3000" for address, (kind, _) in ODD_NODES.items()]
    processes.python(ODD, *specs, ready_line="ready")
    config = tmp_path / "poller.yaml"
    config.write_text("probe:\n  identity:\n    json_field: host\n")
    return config


def test_scan_json_reports_exactly_the_healthy_nodes(lab: Path) -> None:
    started = time.monotonic()
    run = poller(
        "scan",
        "--config",
        str(lab),
        "--subnet",
        SUBNET,
        "--port",
        "3000",
        "--timeout",
        str(TIMEOUT),
        "--json",
    )
    wall = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    by_address = {r["address"]: r for r in report["results"]}

    healthy = {r["address"] for r in report["results"] if r["healthy"]}
    assert healthy == set(HEALTHY) | {"127.0.1.9"}
    for address, name in HEALTHY.items():
        assert by_address[address]["identity"] == name
        assert by_address[address]["status"] == 200
        assert by_address[address]["result"] == "ok"
    for address, (kind, outcome) in ODD_NODES.items():
        assert by_address[address]["result"] == outcome, (kind, by_address[address])
    assert by_address["127.0.1.7"]["status"] == 500
    assert by_address["127.0.1.8"]["status"] == 302
    # Everything else in the /27 is refused and only counted.
    assert report["targets"] == 30
    assert report["outcomes"]["refused"] == 30 - len(HEALTHY) - len(ODD_NODES)
    assert set(by_address) == set(HEALTHY) | set(ODD_NODES)
    # The silent and dripping nodes end at the deadline without stalling the sweep.
    assert by_address["127.0.1.10"]["latency_ms"] < (TIMEOUT + 0.2) * 1000
    assert report["duration_seconds"] < TIMEOUT + 0.4
    assert wall < TIMEOUT + 5.0
    assert by_address["127.0.1.5"]["latency_ms"] < (TIMEOUT + 0.2) * 1000


def test_scan_table_is_sorted_with_a_summary(lab: Path) -> None:
    run = poller("scan", "--config", str(lab), "--subnet", SUBNET, "--timeout", "0.3")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "PORT", "RESULT", "STATUS", "LATENCY_MS", "IDENTITY"]
    rows = [line.split() for line in lines[1:-1]]
    assert [row[0] for row in rows] == sorted(
        (row[0] for row in rows), key=lambda a: int(a.rsplit(".", 1)[1])
    )
    assert rows[0][:4] == ["127.0.1.2", "3000", "ok", "200"]
    assert rows[0][5] == "node-a"
    assert lines[-1].startswith("30 targets (127.0.1.0/27 x port 3000, connect) in ")
    assert "10 answered, 4 healthy" in lines[-1]


def test_scan_all_lists_every_target(lab: Path) -> None:
    run = poller("scan", "--subnet", "127.0.1.0/29", "--all", "--json", "--timeout", "0.3")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [r["address"] for r in results] == [f"127.0.1.{i}" for i in range(1, 7)]
    assert results[0]["result"] == "refused"


def test_scan_that_finds_nobody_exits_zero() -> None:
    run = poller("scan", "--subnet", "127.0.2.0/28", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["results"] == []
    assert report["healthy"] == 0
    assert report["outcomes"] == {"refused": 14}


def test_env_overrides_reach_the_scan(lab: Path) -> None:
    import os

    env = dict(os.environ, POLLER_DISCOVERY__SUBNETS="127.0.1.0/29", POLLER_PROBE__PATH="/healthz")
    run = poller("scan", "--json", env=env)
    assert run.returncode == 0, run.stderr
    healthy = {r["address"] for r in json.loads(run.stdout)["results"] if r["healthy"]}
    assert healthy == {"127.0.1.2", "127.0.1.3", "127.0.1.4"}


def test_two_services_on_one_port_are_told_apart_by_their_probe(
    processes: Processes, tmp_path: Path
) -> None:
    """Same port, different expected bodies: each node joins the service whose probe it
    passes, and `scan` says so in its SERVICE column and JSON field."""
    processes.python(WEBAPP, "--bind", "127.0.1.20", "--host", "w1", "--tag", "web",
                     ready_line="listening")  # fmt: skip
    processes.python(WEBAPP, "--bind", "127.0.1.21", "--host", "a1", "--tag", "api",
                     ready_line="listening")  # fmt: skip
    config = tmp_path / "poller.yaml"
    config.write_text(
        "probe:\n  identity: {json_field: host}\n"
        "services:\n"
        "  - name: web\n    ports: [3000]\n    route: {default: true}\n"
        '    probe: {expect_body: \'"tag": "web"\'}\n'
        "  - name: api\n    ports: [3000]\n"
        '    probe: {expect_body: \'"tag": "api"\'}\n'
        "    route: {path_prefix: /api}\n"
    )
    run = poller("scan", "--config", str(config), "--subnet", "127.0.1.16/28", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ports"] == [3000]
    assert report["targets"] == 14  # one sweep: each address:port once, for both
    healthy = {(r["service"], r["address"]) for r in report["results"] if r["healthy"]}
    assert healthy == {("web", "127.0.1.20"), ("api", "127.0.1.21")}
    refused = {(r["service"], r["address"], r["result"]) for r in report["results"]}
    assert ("api", "127.0.1.20", "body_mismatch") in refused

    table = poller("scan", "--config", str(config), "--subnet", "127.0.1.16/28")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["SERVICE", "ADDRESS", "PORT"]
    assert any(row.split()[:4] == ["web", "127.0.1.20", "3000", "ok"] for row in rows)
    assert any(row.split()[:4] == ["api", "127.0.1.21", "3000", "ok"] for row in rows)
