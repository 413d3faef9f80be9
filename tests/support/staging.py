"""Running poller as another user (the image's unprivileged one, `nobody` in the tests),
whatever the mode of the checkout.

CI clones into a folder whose mode nobody controls: under a 0700 directory, `nobody`
cannot read the checkout, so neither the editable `poller` package nor the venv inside it
can be imported ("No module named poller"). So the tests stage what such a run needs in a
world-readable directory of their own: the `poller` package and the files of its runtime
dependencies (requirements.lock), and run the base interpreter with only that on its path.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.support.processes import ROOT

READABLE_DIR = 0o755
READABLE_FILE = 0o644


def runtime_requirements() -> list[str]:
    """The distributions the poller image installs (requirements.lock)."""
    names = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split("==", 1)[0].strip())
    return names


def stage(into: Path) -> tuple[str, dict[str, str]]:
    """Copy poller and its runtime dependencies under `into` (world-readable); the
    interpreter and environment that run them as any user."""
    site = into / "site"
    site.mkdir(parents=True)
    shutil.copytree(ROOT / "poller", site / "poller", ignore=shutil.ignore_patterns("__pycache__"))
    for name in runtime_requirements():
        distribution = metadata.distribution(name)
        for file in distribution.files or ():
            source = Path(str(distribution.locate_file(file)))
            if file.parts[0] == ".." or not source.is_file() or "__pycache__" in file.parts:
                continue  # scripts outside site-packages, and caches: not needed
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for path in [into, *into.rglob("*")]:
        path.chmod(READABLE_DIR if path.is_dir() else READABLE_FILE)
    python = getattr(sys, "_base_executable", sys.executable)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return python, env


def problem_running_as(user: str, python: str, env: dict[str, str], where: Path) -> str | None:
    """Why `user` cannot run the staged poller here, or None when it can."""
    for parent in [where, *where.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return f"{parent} is not searchable by other users: stage somewhere else"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv (util-linux) is missing"
    probe = subprocess.run(
        [
            setpriv,
            f"--reuid={user}",
            f"--regid={user}",
            "--clear-groups",
            python,
            "-c",
            "import poller.cli",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=where,
    )
    if probe.returncode != 0:
        return f"{python} cannot import the staged poller as {user}: {probe.stderr.strip()}"
    return None
