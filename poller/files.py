"""Writing files so that a reader never sees half of one, and a crash never leaves one.

A temp file in the same directory, fsync, rename over the target, fsync the directory.
Where the target is a single-file bind mount (a container's `-v file:file`), rename fails
with EBUSY: then the bytes are written in place, which is the best such a mount allows.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from poller.errors import InstallError


def writable(path: Path) -> None:
    """Raise InstallError saying, in a user's words, why `path` cannot be written to."""
    directory = path.parent
    if not directory.exists():
        raise InstallError(f"{directory}: directory does not exist")
    if not directory.is_dir():
        raise InstallError(f"{directory}: not a directory")
    if path.is_dir():
        raise InstallError(f"{path}: is a directory, not a file")


def _failed(path: Path, exc: OSError) -> InstallError:
    return InstallError(f"{path}: cannot write: {exc.strerror or exc}")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically, or raise InstallError naming the path."""
    writable(path)
    directory = path.parent
    try:
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _failed(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staged, mode)
        try:
            os.replace(staged, path)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            _write_in_place(path, data)
        _fsync_directory(directory)
    except OSError as exc:
        raise _failed(path, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def stage(path: Path, data: bytes) -> Path:
    """A staged copy beside `path` (same directory, so relative includes resolve the same)."""
    writable(path)
    try:
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".staged", dir=path.parent)
    except OSError as exc:
        raise _failed(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        os.unlink(staged)  # a full disk must not also fill up with half-written copies
        raise _failed(path, exc) from exc
    return Path(staged)


def remove_stale(path: Path) -> list[str]:
    """Delete the staged copies of `path` a killed writer left behind (our own names
    only); returns their names. Only call it where no other writer of `path` runs."""
    removed: list[str] = []
    try:
        leftovers = list(path.parent.glob(f".{path.name}.*"))
    except OSError:
        return removed
    for leftover in leftovers:
        if leftover.suffix in (".tmp", ".staged"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed.append(leftover.name)
    return removed


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
