"""`poller render` and `poller scan --render` as users run them; HAProxy accepts the output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Processes
from tests.support.filesystems import fill
from tests.support.processes import ROOT, haproxy_accepts
from tests.support.processes import run_poller as poller

WEBAPP = ROOT / "compose" / "webapp" / "app.py"


def test_render_is_deterministic_and_valid(tmp_path: Path) -> None:
    first = poller("render", "--member", "10.0.0.9:3000", "--member", "10.0.0.10:3000")
    second = poller("render", "--member", "10.0.0.10:3000", "--member", "10.0.0.9:3000")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.index("n_10_0_0_9_3000") < first.stdout.index("n_10_0_0_10_3000")
    path = tmp_path / "haproxy.cfg"
    path.write_text(first.stdout)
    haproxy_accepts(path)


def test_render_output_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    run = poller("render", "--output", str(path))
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert "backend nodes" in path.read_text()
    assert "    server " not in path.read_text()  # an empty backend: HAProxy answers 503
    haproxy_accepts(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg"]


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("10.0.0.1", "expected IP:PORT"),
        ("10.0.0.300:80", "does not appear to be"),
        ("10.0.0.1:0", "port must be 1-65535"),
    ],
)
def test_bad_member_is_named(member: str, problem: str) -> None:
    run = poller("render", "--member", member)
    assert run.returncode == 3
    assert f"command line (--member '{member}')" in run.stderr
    assert problem in run.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing/haproxy.cfg", "missing: directory does not exist"),
        ("a-directory", "a-directory: is a directory, not a file"),
        ("a-file/haproxy.cfg", "a-file: not a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_an_io_error_naming_it(
    tmp_path: Path, target: str, message: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("")
    run = poller("render", "--output", str(tmp_path / target))
    assert run.returncode == 5  # an ordinary I/O failure, not a bug (1)
    assert run.stderr == f"poller: error: {tmp_path}/{message}\n"
    assert run.stdout == ""


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_an_output_on_a_full_or_read_only_file_system_names_it(
    small_config_dir: Path, fault: str
) -> None:
    if fault == "full":
        fill(small_config_dir)
        expected = "cannot write: No space left on device"
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_config_dir)], check=True)
        expected = "cannot write: Read-only file system"
    target = small_config_dir / "haproxy.cfg"
    run = poller("render", "--output", str(target))
    assert run.returncode == 5
    assert run.stderr == f"poller: error: {target}: {expected}\n"
    assert not target.exists()
    assert [p.name for p in small_config_dir.iterdir()] == (["filler"] if fault == "full" else [])


def test_scan_render_holds_exactly_the_healthy_nodes(processes: Processes, tmp_path: Path) -> None:
    processes.python(WEBAPP, "--bind", "127.0.4.2", ready_line="listening")
    processes.python(WEBAPP, "--bind", "127.0.4.3", "--status", "500", ready_line="listening")
    path = tmp_path / "haproxy.cfg"
    run = poller("scan", "--subnet", "127.0.4.0/29", "--render", "--output", str(path))
    assert run.returncode == 0, run.stderr
    text = path.read_text()
    assert "server n_127_0_4_2_3000 127.0.4.2:3000" in text
    assert "127.0.4.3" not in text
    assert "1 healthy" in run.stderr
    haproxy_accepts(path)
