"""HAProxy versions besides the machine's (Debian 12's 2.6), for the runtime-API tests.

HAProxy 3.0 is Debian 13's: `prepare()` debootstraps a minimal trixie root with its
`haproxy` package (about 20 s; cached under /var/cache/poller-haproxy/3.0), outside the
private namespace, where the Debian mirror is. `tests/support/haproxy-in-root` runs that
binary as if it were installed here (a chroot in a mount namespace of its own, /tmp the
host's), so a master that re-executes itself on a reload stays in its root.

`make test` runs the runtime-API tests again against it (`POLLER_TEST_HAPROXY`, read by
`tests.support.requirements.haproxy_binary`). `python -m tests.support.haproxies` prepares.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.standins import _mirror

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "tests" / "support" / "haproxy-in-root"
VERSIONS = {"3.0": "trixie"}  # HAProxy's major version -> the Debian suite that ships it


def cache_root() -> Path:
    return Path(os.environ.get("POLLER_HAPROXY_CACHE", "/var/cache/poller-haproxy"))


def root_of(version: str) -> Path:
    return cache_root() / version


def ready(version: str) -> str | None:
    """None when `version` is prepared, else why not."""
    if not (root_of(version) / "done").exists():
        return (
            f"HAProxy {version} is not prepared in {root_of(version)}: run "
            "`python -m tests.support.haproxies` as root (it needs the Debian mirror); "
            "`make test` does it"
        )
    return None


def prepare(version: str) -> Path:
    """Debootstrap the root holding HAProxy `version`, unless it is there."""
    root = root_of(version)
    if ready(version) is None:
        return root
    if os.geteuid() != 0:
        raise PermissionError(f"preparing HAProxy {version} needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is needed (apt-get install debootstrap)")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=haproxy", VERSIONS[version], str(root),
         _mirror()],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    (root / "done").write_text(version_of(version) + "\n")
    return root


def environment(version: str) -> dict[str, str]:
    """What makes the tests run HAProxy `version` (the wrapper and its root)."""
    return {"POLLER_TEST_HAPROXY": str(WRAPPER), "POLLER_HAPROXY_ROOT": str(root_of(version))}


def version_of(version: str) -> str:
    """`haproxy -v`'s first line, from the prepared root."""
    run = subprocess.run(
        [str(WRAPPER), "-v"],
        env={**os.environ, "POLLER_HAPROXY_ROOT": str(root_of(version))},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return run.stdout.splitlines()[0]


if __name__ == "__main__":
    for wanted in VERSIONS:
        try:
            prepared = prepare(wanted)
        except PermissionError as exc:
            print(f"not prepared: {exc}", file=sys.stderr)
            continue
        print(f"HAProxy {wanted}: {(prepared / 'done').read_text().strip()} in {prepared}")
