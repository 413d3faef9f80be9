"""Hostile and broken nodes against real `poller scan` / `poller run` processes on
loopback: each gets the right result class within the probe's deadline and bounded memory,
none slows the healthy nodes' probes, and nothing a node sends reaches HAProxy's config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.labs import wait_for
from tests.support.loopback import Lab, settled
from tests.support.processes import ROOT, Processes, haproxy_accepts

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

WEBAPP = ROOT / "compose" / "webapp" / "app.py"
ODD = ROOT / "tests" / "support" / "oddnodes.py"
SUBNET = "127.0.7.0/27"
TIMEOUT = 0.5
HEALTHY = {"127.0.7.2": "node-a", "127.0.7.3": "node-b"}
HOSTILE = {
    "127.0.7.5": ("drip", "timeout"),  # bytes trickled, each within the deadline
    "127.0.7.6": ("endless", "body_mismatch"),  # a body without end: max_body_bytes read
    "127.0.7.7": ("gzipbomb", "body_mismatch"),  # never inflated: raw bytes, no "hello"
    "127.0.7.8": ("redirect", "unexpected_status"),  # 302 elsewhere: never followed
    "127.0.7.9": ("garbage", "not_http"),
    "127.0.7.10": ("headers", "not_http"),  # 10,000 header lines: refused by the parser
    "127.0.7.11": ("mismatch", "body_mismatch"),  # 200, but not the expected body
    "127.0.7.12": ("evilid", "ok"),  # healthy; its identity is only data
    "127.0.7.13": ("hugeid", "ok"),  # healthy; a 4 MiB identity is not even read
    "127.0.7.14": ("tls", "not_http"),  # TLS where HTTP is expected
}


@pytest.fixture
def hostile(processes: Processes, tmp_path: Path) -> Path:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing (Debian's openssl package)")
    pem = tmp_path / "node.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=node",
         "-days", "1", "-keyout", str(pem), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pem.write_text(pem.read_text() + (tmp_path / "cert.pem").read_text())
    for address, name in HEALTHY.items():
        processes.python(WEBAPP, "--bind", address, "--host", name, ready_line="listening")
    specs = [f"{kind}@{address}:3000" for address, (kind, _) in HOSTILE.items()]
    processes.python(ODD, "--cert", str(pem), *specs, ready_line="ready")
    config = tmp_path / "poller.yaml"
    config.write_text(
        "probe:\n  identity: {json_field: host}\n  expect_body: hello\n"
        f"  timeout_seconds: {TIMEOUT}\n"
    )
    return config


# Runs one command and reports its peak RSS (KiB) as stderr's last line: a wrapper whose
# only child is the scan, so no other process of the suite is counted.
_PEAK = (
    "import resource, subprocess, sys; run = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(run.returncode)"
)


def scan_measured(*argv: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run `poller scan`; (the run, wall seconds, peak RSS MiB of the poller process)."""
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", _PEAK, sys.executable, "-m", "poller", "scan", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    wall = time.monotonic() - started
    stderr, _, peak = run.stderr.rstrip("\n").rpartition("\n")
    run.stderr = stderr
    return run, wall, int(peak) / 1024


def test_each_hostile_node_gets_its_class_within_the_deadline(hostile: Path) -> None:
    run, wall, peak = scan_measured(
        "--config", str(hostile), "--subnet", SUBNET, "--port", "3000", "--json"
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    by_address = {r["address"]: r for r in report["results"]}
    seen = {kind: by_address[address]["result"] for address, (kind, _) in HOSTILE.items()}
    assert seen == {kind: outcome for kind, outcome in HOSTILE.values()}
    for address, name in HEALTHY.items():
        assert by_address[address]["result"] == "ok"
        assert by_address[address]["identity"] == name
        # The hostile nodes beside them cost the healthy ones nothing noticeable.
        assert by_address[address]["latency_ms"] < TIMEOUT * 1000 / 2
    # One deadline bounds every probe: the whole sweep ends soon after it (plus start-up).
    assert wall < TIMEOUT + 1.5, wall
    assert peak < 120, f"peak RSS {peak:.0f} MiB"  # the bodies were not held in memory
    evil = by_address["127.0.7.12"]["identity"]
    assert evil.startswith('x"\n    server evil')  # kept verbatim as data, and bounded:
    assert len(by_address["127.0.7.13"]["identity"] or "") <= 256
    assert "\x1b" not in run.stdout


def test_the_table_escapes_what_nodes_send(hostile: Path) -> None:
    run, _, _ = scan_measured("--config", str(hostile), "--subnet", SUBNET, "--port", "3000")
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if line.startswith("127.0.7.12 "))
    assert "\\n" in line  # the newline is shown as an escape, not printed
    assert len(run.stdout.splitlines()) == len(HEALTHY) + len(HOSTILE) + 2


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab", subnet="127.0.7.8/29")
    try:
        lab.start_haproxy()
        yield lab
    finally:
        lab.close()


def test_an_evil_identity_never_reaches_the_config(lab: Lab, processes: Processes) -> None:
    """A node whose identity carries newlines, quotes and HAProxy keywords is served
    under a name derived from its address; the config holds nothing else of it."""
    processes.python(ODD, "evilid@127.0.7.12:3000", ready_line="ready")
    lab.start_node("127.0.7.10", "plain")
    lab.start_poller()
    wait_for(lambda: settled(lab, "127.0.7.10", "127.0.7.12"), 10, "both to join")
    text = lab.config_path.read_text()
    assert "server evil" not in text
    assert "10.9.9.9" not in text
    assert "server n_127_0_7_12_3000 127.0.7.12:3000" in text
    haproxy_accepts(lab.config_path)
    members = {m["address"]: m for m in lab.status("/pool")["members"]}
    assert members["127.0.7.12"]["identity"].startswith('x"\n    server evil')
    assert os.path.getsize(lab.config_path) < 10_000
