"""Shared pieces of the benchmarks: the private-namespace guard, timing a child process,
medians, and rewriting one marked section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
WEBAPP = ROOT / "compose" / "webapp" / "app.py"


def ensure_packages(*packages: str) -> None:
    """Install missing Debian packages (each named like its command) before the
    benchmark enters its private namespace, where no mirror can be reached."""
    if all(shutil.which(package) for package in packages):
        return
    subprocess.run([str(ROOT / "scripts" / "ensure-packages"), *packages], check=True)


def ensure_private_namespace() -> None:
    """Benchmarks send traffic only inside a namespace of their own: re-exec in one."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    interfaces = {line.split(":", 1)[0].strip() for line in lines}
    if interfaces == {"lo"}:
        return
    if os.environ.get("POLLER_BENCH_IN_NETNS") == "1":
        raise SystemExit("bench: still not in a private network namespace; refusing to run")
    env = dict(os.environ, POLLER_BENCH_IN_NETNS="1")
    script = ROOT / "scripts" / "in-private-netns"
    # The command line as given (`python -m bench.X ...`), so the module runs as a module.
    os.execve(str(script), [str(script), sys.executable, *sys.orig_argv[1:]], env)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what the benchmark started."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))


def prepare(*packages: str, root_for: str | None = None) -> None:
    """What a benchmark does before it measures: refuse to run without root when it needs
    it (`root_for` says why), install the Debian packages it runs, enter a private
    network namespace, and make SIGTERM unwind."""
    if root_for is not None and os.geteuid() != 0:
        raise SystemExit(f"bench/{Path(sys.argv[0]).name} needs root ({root_for})")
    ensure_packages(*packages)
    ensure_private_namespace()
    exit_cleanly_on_sigterm()


@dataclass(frozen=True)
class ChildRun:
    wall_seconds: float
    cpu_seconds: float
    max_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], timeout: float = 600.0) -> ChildRun:
    """Run a command; its wall time, CPU (user+sys) and peak RSS, exactly, via wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    outputs: dict[str, str] = {}
    readers = [
        threading.Thread(
            target=lambda n=name, s=stream: outputs.__setitem__(n, s.read()), daemon=True
        )
        for name, stream in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    # The readers drain both pipes, so a blocking wait4 cannot deadlock; a timer bounds it.
    killer = threading.Timer(timeout, os.kill, (proc.pid, signal.SIGKILL))
    killer.daemon = True  # a benchmark stopped early must not wait for it to fire
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    killer.cancel()
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024.0,
        proc.returncode,
        outputs.get("out", ""),
        outputs.get("err", ""),
    )


def process_usage(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, RSS MiB, peak RSS MiB) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
    return (
        cpu,
        int(rss.group(1)) / 1024 if rss else float("nan"),
        int(hwm.group(1)) / 1024 if hwm else float("nan"),
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between `<!-- bench:NAME -->` markers (append when absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display here); imported late, since only
    full runs draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    """Write a figure whole or not at all (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp)
    tmp.replace(path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
