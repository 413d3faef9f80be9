"""`poller scan` stays a cheap one-shot: the CLI does not import the daemon's machinery."""

from __future__ import annotations

import subprocess
import sys


def test_cli_import_leaves_out_scheduler_metrics_and_templates() -> None:
    code = (
        "import sys, poller.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'apscheduler', 'prometheus_client', 'jinja2'}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
