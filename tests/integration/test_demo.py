"""The README's first command: the demo runs, shows the pool following the nodes, and
leaves nothing behind."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.loopback import connects
from tests.support.processes import ROOT


def test_demo_shows_the_pool_and_cleans_up() -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed; .ci/run installs it")
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.demo", "--seconds", "14"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "status page (open it): http://127.0.0.1:" in out
    assert "HAProxy:               http://127.0.0.1:" in out
    assert "its JSON, for a terminal: /pool, /events, /healthz and /metrics" in out
    assert "127.42.0.11 up (s1)" in out
    assert "127.42.0.33 up (s3)" in out  # joined at 6 s
    assert "HAProxy serves: 127.42.0.11, 127.42.0.22, 127.42.0.33" in out
    assert "a request got 200 from s" in out
    # The second service: found by the same sweep, served by its own backend at /api.
    assert "api: 127.42.0.77 up (api1)" in out
    assert "; /api: 127.42.0.77" in out
    assert "/api/orders got 200 from api1" in out
    assert "graceful stop: its port closes" not in out  # at 16 s: after this short run
    assert "a third node" in out  # each step says what it shows
    assert out.rstrip().endswith("demo: all demo processes stopped")
    for octet in (11, 22, 33, 44):
        assert not connects(f"127.42.0.{octet}", 3000)
    assert not connects("127.42.0.77", 3001)
