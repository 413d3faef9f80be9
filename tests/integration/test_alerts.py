"""The alert rules shipped in deploy/prometheus, proven with Prometheus itself (Debian's
prometheus 2.42: `promtool` for the rules and their unit tests, and a real server on
loopback scraping a real `poller run`)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.labs import free_port, wait_for
from tests.support.loopback import Lab, serves
from tests.support.processes import ROOT, Processes
from tests.support.requirements import require_tool

pytestmark = pytest.mark.haproxy  # checked by tests/conftest.py

RULES = ROOT / "deploy" / "prometheus"
A, B, C = "127.0.3.2", "127.0.3.3", "127.0.3.4"


def tool(name: str) -> str:
    return require_tool(name, "apt-get install prometheus")


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "rules", "poller-rules.yml"],
        ["test", "rules", "poller-rules.test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
)
def test_promtool_accepts_the_rules_and_their_unit_tests(argv: list[str]) -> None:
    run = subprocess.run(
        [tool("promtool"), *argv], capture_output=True, text=True, timeout=60, cwd=RULES
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_every_alert_says_what_it_means_and_what_to_check() -> None:
    rules = yaml.safe_load((RULES / "poller-rules.yml").read_text())["groups"][0]["rules"]
    tested = (RULES / "poller-rules.test.yml").read_text()
    assert len(rules) == 7
    for rule in rules:
        assert rule["annotations"]["summary"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert f"alertname: {rule['alert']}" in tested, f"{rule['alert']} has no unit test"


class Prometheus:
    """A real Prometheus on loopback, scraping one poller every second."""

    def __init__(self, processes: Processes, workdir: Path, target: str) -> None:
        self.port = free_port()
        # The shipped rules with test-only short `for:` (a real minute is the shipped value).
        rules = re.sub(r"for: \d+m", "for: 2s", (RULES / "poller-rules.yml").read_text())
        (workdir / "rules.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": "poller", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = processes.start(
            [
                tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ]
        )
        wait_for(lambda: self.api("/-/ready", raw=True) is not None, 30, "Prometheus ready")

    def api(self, path: str, raw: bool = False, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
        except OSError:
            return None
        return body if raw else json.loads(body)["data"]

    def value(self, query: str) -> float | None:
        result = self.api("/api/v1/query", query=query)
        return float(result["result"][0]["value"][1]) if result and result["result"] else None

    def alert(self, name: str) -> str | None:
        """The state of alert `name`: None, "pending" or "firing"."""
        data = self.api("/api/v1/alerts") or {"alerts": []}
        states = [a["state"] for a in data["alerts"] if a["labels"]["alertname"] == name]
        return states[0] if states else None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    try:
        lab.start_haproxy()
        yield lab
    finally:
        lab.close()


def test_a_real_prometheus_sees_the_pool_and_the_sweeps_failing_alert(
    lab: Lab,
    processes: Processes,
    tmp_path: Path,
    broken_loopback_route: Callable[[bool], None],
) -> None:
    for address, host in ((A, "a"), (B, "b"), (C, "c")):
        lab.start_node(address, host)
    lab.start_poller()
    wait_for(lambda: serves(lab, A, B, C), 10, "three members")
    prometheus = Prometheus(processes, tmp_path, f"127.0.0.1:{lab.status_port}")
    wait_for(
        lambda: prometheus.value('poller_members{state="up"}') == 3, 30, "the pool in Prometheus"
    )
    assert prometheus.value("up") == 1
    assert prometheus.value("poller_healthy") == 1
    assert prometheus.alert("PollerSweepsFailing") is None

    broken_loopback_route(True)
    broken = time.monotonic()
    wait_for(lambda: prometheus.alert("PollerSweepsFailing") == "firing", 60, "the alert to fire")
    fired = time.monotonic() - broken
    # The pool is kept through the outage, and Prometheus says so too. Serving: a probe
    # in flight when the route went may have failed as the member's fault (falling).
    assert prometheus.value('sum(poller_members{state=~"up|falling"})') == 3
    assert serves(lab, A, B, C)

    broken_loopback_route(False)
    repaired = time.monotonic()
    wait_for(lambda: prometheus.alert("PollerSweepsFailing") is None, 60, "the alert to resolve")
    resolved = time.monotonic() - repaired
    print(f"sweeps failing: firing {fired:.1f} s after the break, resolved {resolved:.1f} s after")
    assert serves(lab, A, B, C)
